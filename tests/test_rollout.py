"""The canary rollout's rules: a broken or disliked challenger goes back, a good one is promoted,
and nothing is decided from a small sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llarapp.pipeline.rollout import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    RolloutRules,
    VersionStats,
    decide,
    worse_test,
)

CHAMPION = VersionStats("3", requests=2000, errors=4, p99_ms=30.0, likes=300, dislikes=200)


def _challenger(**kw) -> VersionStats:
    base = {"requests": 400, "errors": 1, "p99_ms": 32.0, "likes": 60, "dislikes": 40}
    return VersionStats("4", **(base | kw))


def test_a_challenger_as_good_as_the_champion_is_promoted_with_its_evidence() -> None:
    d = decide(CHAMPION, _challenger())
    assert d.action == PROMOTE and "not worse" in d.reason
    record = d.to_dict()
    assert record["challenger"]["like_rate"] == pytest.approx(0.6)
    assert record["tests"]["likes"]["p"] > 0.05 and record["rules"]["alpha"] == 0.05


def test_too_few_requests_or_feedback_waits() -> None:
    assert decide(CHAMPION, _challenger(requests=50, errors=0)).action == WAIT
    waiting = decide(CHAMPION, _challenger(likes=10, dislikes=5))
    assert waiting.action == WAIT and "feedback 500 / 15" in waiting.reason


def test_errors_roll_back_at_once_even_from_a_small_sample() -> None:
    d = decide(CHAMPION, _challenger(requests=60, errors=20, likes=0, dislikes=0))
    assert d.action == ROLLBACK and "error rate" in d.reason


def test_slow_or_disliked_challengers_roll_back() -> None:
    slow = decide(CHAMPION, _challenger(p99_ms=90.0))
    assert slow.action == ROLLBACK and "p99" in slow.reason
    disliked = decide(CHAMPION, _challenger(likes=30, dislikes=70))
    assert disliked.action == ROLLBACK and "like-rate 30.0%" in disliked.reason


def test_a_stalled_tail_alone_does_not_roll_back_but_a_slow_median_does() -> None:
    champion = VersionStats("3", requests=2000, errors=4, p99_ms=30.0, likes=300, dislikes=200,
                            p50_ms=10.0)  # fmt: skip
    stalled = decide(champion, _challenger(p99_ms=90.0, p50_ms=11.0))  # a few stalled requests
    assert stalled.action == PROMOTE
    slow = decide(champion, _challenger(p99_ms=90.0, p50_ms=25.0))
    assert slow.action == ROLLBACK and "median 2.50x" in slow.reason


def test_the_like_rate_test_holds_its_false_alarm_rate() -> None:
    """Challengers exactly as liked as the champion are rolled back about alpha of the time."""
    rng = np.random.default_rng(0)
    rollbacks = 0
    for _ in range(2000):
        a, b = rng.binomial(500, 0.6), rng.binomial(200, 0.6)
        rollbacks += worse_test(a, 500, b, 200)["p"] < 0.05
    assert rollbacks / 2000 == pytest.approx(0.05, abs=0.015)


def test_worse_test_edges_and_bad_inputs_are_clear() -> None:
    assert worse_test(0, 0, 5, 10)["p"] == 1.0
    assert worse_test(10, 10, 0, 10)["p"] < 1e-3  # everything to nothing: clearly worse
    assert worse_test(10, 10, 10, 10)["z"] == 0.0 and not math.isnan(
        worse_test(10, 10, 10, 10)["p"]
    )
    with pytest.raises(ValueError, match="expected errors <= requests"):
        VersionStats("1", requests=1, errors=2, p99_ms=1.0, likes=0, dislikes=0)
    with pytest.raises(
        ValueError, match=r"RolloutRules\.alpha=1\.5 is invalid: expected 0 < x < 1"
    ):
        RolloutRules(alpha=1.5)


@pytest.mark.integration
def test_act_moves_aliases_and_pointers_and_records_every_decision(tmp_path) -> None:
    import json

    from llarapp.pipeline.deploy import CHALLENGER_POINTER, POINTER, read_pointer, write_pointer
    from llarapp.pipeline.registry import aliases, registry_client
    from llarapp.pipeline.rollout import act

    uri, target, audit = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "serving", tmp_path / "a"
    client, _ = registry_client(uri)
    client.create_registered_model("llarapp")
    for v in (1, 2, 3):
        client.create_model_version("llarapp", source=str(tmp_path / f"model{v}"))
    client.set_registered_model_alias("llarapp", "champion", "1")
    client.set_registered_model_alias("llarapp", "canary", "2")
    write_pointer(target, POINTER, {"version": "1", "alias": "champion"})
    write_pointer(target, CHALLENGER_POINTER, {"version": "2", "alias": "challenger"})
    champion = VersionStats("sha1-a", requests=2000, errors=2, p99_ms=30.0, likes=300, dislikes=200)
    moves = {"audit_log": audit, "target": target, "tracking_uri": uri}

    # a disliked challenger goes back; the champion and what it serves never move
    bad = VersionStats("sha1-b", requests=400, errors=0, p99_ms=30.0, likes=20, dislikes=80)
    record = act(decide(champion, bad), **moves)
    assert record["action"] == ROLLBACK and aliases(uri) == {"champion": "1"}
    assert read_pointer(target) == {"version": "1", "alias": "champion"}
    assert read_pointer(target, CHALLENGER_POINTER)["alias"] == "rolled_back"
    assert client.get_model_version("llarapp", "2").tags["llarapp.rollout.action"] == ROLLBACK

    # a good one is promoted, but only while its pointer is the live challenger
    good = VersionStats("sha1-c", requests=400, errors=0, p99_ms=31.0, likes=62, dislikes=38)
    with pytest.raises(ValueError, match=r"challenger\.json is not a live challenger"):
        act(decide(champion, good), **moves)
    assert aliases(uri) == {"champion": "1"}  # nothing moved
    write_pointer(target, CHALLENGER_POINTER, {"version": "3", "alias": "challenger"})
    client.set_registered_model_alias("llarapp", "canary", "3")
    record = act(decide(champion, good), **moves)
    assert record["action"] == PROMOTE and aliases(uri) == {"champion": "3"}
    assert read_pointer(target)["version"] == "3" and read_pointer(target)["alias"] == "champion"
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["action"] for x in lines] == [ROLLBACK, PROMOTE]
    assert lines[1]["tests"]["likes"]["p"] > 0.05 and lines[1]["moved"]["registered_version"] == "3"
    with pytest.raises(ValueError, match="needs target"):
        act(decide(champion, good), audit_log=audit, tracking_uri=uri)


@pytest.mark.slow
@pytest.mark.integration
def test_llarapp_rollout_rolls_a_disliked_challenger_back_on_a_live_server(tiny, tmp_path) -> None:
    """Simulated users like the champion's answers and dislike the challenger's; the controller
    reads the live server, rolls back, and the challenger answers nothing after."""
    import json
    import shutil

    from llarapp.cli import main
    from llarapp.pipeline.loop import broken_copy
    from llarapp.serving.client import get, post_json, start_server, stop_server, wait_ready

    champion = shutil.copytree(tiny[2], tmp_path / "champion")
    challenger = broken_copy(tiny[2], tmp_path / "challenger")
    events = tmp_path / "events.db"
    proc, url = start_server(
        str(champion), None, "--events", str(events), "--challenger", str(challenger),
        "--canary-percent", "30", log_file=tmp_path / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        versions = json.loads(get(url, "/v1/canary")[1])
        for i in range(300):
            status, out = post_json(
                url, "/v1/recommend", {"name": "chill", "playlist_id": f"p{i}", "k": 5}
            )
            assert status == 200, out
            liked = out["model_version"] == versions["champion"] or i % 4 == 0
            body = {
                "request_id": out["request_id"],
                "track_uri": out["recommended_tracks"][0]["track_uri"],
                "liked": liked,
            }
            assert post_json(url, "/v1/feedback", body)[0] == 200
        flags = ["--server", url, "--events", str(events), "--audit", str(tmp_path / "audit.jsonl")]
        assert main(["rollout", *flags, "--min-requests", "50", "--min-feedback", "30"]) == 0
        record = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
        assert record["action"] == ROLLBACK and record["moved"]["traffic_percent"] == 0
        assert record["challenger"]["version"] == versions["challenger"]
        assert record["challenger"]["like_rate"] < 0.4 < record["champion"]["like_rate"]
        assert json.loads(get(url, "/v1/canary")[1])["percent"] == 0
        for i in range(300, 340):  # the challenger answers nothing after the rollback
            out = post_json(
                url, "/v1/recommend", {"name": "chill", "playlist_id": f"p{i}", "k": 5}
            )[1]
            assert out["model_version"] == versions["champion"]
    finally:
        stop_server(proc)
