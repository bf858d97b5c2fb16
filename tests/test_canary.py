"""Canary serving: the split (share, stickiness, run-time changes shared by workers) and
`llarapp serve --challenger` on the tiny model against a copy whose ranker weights are
shuffled (a different model, a different model_version)."""

from __future__ import annotations

import http.client
import json
import math
import shutil
import sqlite3
import time

import pytest

from llarapp.cli import main
from llarapp.serving.canary import CanarySplit, CanaryWindow, check_percent
from llarapp.serving.client import post_json, start_server, stop_server, wait_ready
from llarapp.serving.store import read_feedback


def within_binomial(hits: int, n: int, percent: float, sigmas: float = 4.0) -> bool:
    p = percent / 100
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-12


# ---------------------------------------------------------------------------- the split
@pytest.mark.parametrize("percent", [0, 2.5, 10, 50, 100])
def test_share_over_distinct_playlists_is_the_percent(tmp_path, percent):
    split = CanarySplit(tmp_path / "canary.json", percent)
    n = 20_000
    hits = sum(split.to_challenger(f"playlist-{i}") for i in range(n))
    assert within_binomial(hits, n, percent), hits
    anonymous = sum(split.to_challenger(None) for _ in range(n))  # random, same share
    assert within_binomial(anonymous, n, percent), anonymous


def test_sticky_per_playlist_and_growing_keeps_the_challengers(tmp_path):
    split = CanarySplit(tmp_path / "canary.json", 10)
    ids = [f"p{i}" for i in range(2000)]
    first = {p: split.to_challenger(p) for p in ids}
    assert all(split.to_challenger(p) == first[p] for p in ids for _ in range(3))
    split.set(30)
    grown = {p: split.to_challenger(p) for p in ids}
    assert all(grown[p] for p in ids if first[p])  # no playlist goes back to the champion
    split.set(0)
    assert not any(split.to_challenger(p) for p in ids)


def test_a_change_reaches_every_process_sharing_the_state_file(tmp_path):
    state = tmp_path / "canary.json"
    a, b = CanarySplit(state, 10, "models/v2"), CanarySplit(state, None)  # two workers
    assert (b.percent, b.challenger) == (10, "models/v2")
    a.set(100)
    assert b.percent == 100 and all(b.to_challenger(f"p{i}") for i in range(100))
    b.set(0)
    assert a.percent == 0
    assert json.loads(state.read_text()) == {"percent": 0.0, "challenger": "models/v2"}
    b.start(5, "models/v3")
    assert (a.percent, a.challenger) == (5, "models/v3")


def test_bad_percents_and_states_are_clear_errors(tmp_path):
    for bad in (-1, 100.5, float("nan"), True, "10", None):
        with pytest.raises(ValueError, match="expected"):
            check_percent(bad)
    with pytest.raises(FileNotFoundError, match="no canary state"):
        CanarySplit(tmp_path / "missing.json", None)
    split = CanarySplit(tmp_path / "canary.json", 25)
    with pytest.raises(ValueError, match="0 <= p <= 100"):
        split.set(101)
    assert split.percent == 25  # a refused value changes nothing
    (tmp_path / "canary.json").write_text('{"percent": "lots"}')  # a hand edit gone wrong
    assert split.percent == 25  # logged; the last good percent keeps serving


def test_the_window_holds_both_versions_since_their_pair_began_to_split():
    window = CanaryWindow()
    assert window.summary(None) == {"since": None, "versions": {}}
    for ms in (10, 20, 30):  # the champion alone with an earlier challenger: another window
        window.record(("1", "0"), "1", 200, ms / 1000)
    for ms in range(1, 101):
        window.record(("1", "2"), "1", 200, ms / 1000)
    window.record(("1", "2"), "2", 200, 0.5)
    window.record(("1", "2"), "2", 503, 9.0)  # an error: counted, not timed
    window.record(("1", "2"), "2", 422, 0.001)  # a bad request: counted, not timed
    window.record(("1", "2"), "3", 200, 0.1)  # routed before a change: neither's
    summary = window.summary(("1", "2"))
    assert summary["since"] is not None and summary["since"] <= time.time()
    assert summary["versions"]["1"] == {
        "requests": 100, "errors": 0, "p50_ms": pytest.approx(50.5), "p99_ms": pytest.approx(99.01),
    }  # fmt: skip
    assert summary["versions"]["2"] == {
        "requests": 3, "errors": 1, "p50_ms": pytest.approx(500.0), "p99_ms": pytest.approx(500.0),
    }  # fmt: skip
    assert window.summary(("1", "3")) == {"since": None, "versions": {}}


def test_cli_refuses_bad_canary_flags(tmp_path, capsys):
    model = tmp_path / "m"
    model.mkdir()
    cases = [
        (["--challenger", str(tmp_path / "nope")], "no such model folder"),
        (["--challenger", str(model), "--canary-percent", "150"], "expected 0 <= p <= 100"),
        (["--canary-percent", "5"], "expected --challenger DIR too"),
    ]
    for flags, says in cases:
        assert main(["serve", "--model", str(model), *flags]) == 2
        assert says in capsys.readouterr().err


# ---------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def canary(tiny, tmp_path_factory):
    """(url, work dir, champion version, challenger version) of a server at 50 %."""
    from llarapp.pipeline.loop import broken_copy
    from llarapp.serving.model_uri import content_version

    work = tmp_path_factory.mktemp("canary")
    champion = shutil.copytree(tiny[2], work / "champion")
    challenger = broken_copy(tiny[2], work / "challenger")
    versions = content_version(champion), content_version(challenger)
    assert versions[0] != versions[1]
    proc, url = start_server(
        str(champion), None, "--events", str(work / "events.db"), "--sample-rate", "1.0",
        "--challenger", str(challenger), "--canary-percent", "50", log_file=work / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        yield url, work, *versions
    finally:
        stop_server(proc)


def get(url: str, path: str) -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def served_by(url: str, ids, k: int = 5) -> list[str]:
    versions = []
    for pid in ids:
        status, out = post_json(url, "/v1/recommend", {"name": "road trip", "playlist_id": pid,
                                                       "k": k})  # fmt: skip
        assert status == 200, out
        versions.append(out["model_version"])
    return versions


@pytest.mark.slow
@pytest.mark.integration
def test_split_stickiness_and_labels(canary):
    url, work, champion, challenger = canary
    state = json.loads(get(url, "/v1/canary")[1])
    assert {k: state[k] for k in ("champion", "challenger", "percent")} == {
        "champion": champion, "challenger": challenger, "percent": 50.0,
    }  # fmt: skip
    before = {v: state["window"]["versions"].get(v, {}).get("requests", 0)
              for v in (champion, challenger)}  # fmt: skip
    ids = [f"split-{i}" for i in range(200)]
    versions = served_by(url, ids)
    window = json.loads(get(url, "/v1/canary")[1])["window"]
    for version in (champion, challenger):  # what `llarapp rollout` compares
        answers = window["versions"][version]
        assert answers["requests"] - before[version] == versions.count(version)
        assert answers["errors"] == 0 and 0 < answers["p50_ms"] <= answers["p99_ms"]
    assert set(versions) == {champion, challenger}
    assert within_binomial(versions.count(challenger), len(ids), 50)
    assert served_by(url, ids[:20] * 2) == versions[:20] * 2  # sticky
    # feedback: by request (the request's version) and by playlist only (its sticky version)
    _, out = post_json(url, "/v1/recommend", {"name": "x", "playlist_id": ids[0], "k": 3})
    rid, uri = out["request_id"], out["recommended_tracks"][0]["track_uri"]
    _, ack1 = post_json(url, "/v1/feedback", {"request_id": rid, "track_uri": uri, "liked": True})
    _, ack2 = post_json(url, "/v1/feedback", {"playlist_id": ids[1], "track_uri": uri,
                                              "liked": False})  # fmt: skip
    rows = {r["id"]: r["model_version"] for r in read_feedback(work / "events.db")}
    assert (rows[ack1["id"]], rows[ack2["id"]]) == (versions[0], versions[1])
    metrics = get(url, "/metrics")[1]
    for version in (champion, challenger):
        assert f'llarapp_recommend_total{{code="200",model_version="{version}"}}' in metrics
        assert f'llarapp_recommend_seconds_count{{model_version="{version}"}}' in metrics
    assert f'llarapp_feedback_total{{liked="true",model_version="{versions[0]}"}}' in metrics
    deadline = time.monotonic() + 30  # the request log is written in the background
    logged: dict[str, str] = {}
    while time.monotonic() < deadline and set(ids) - set(logged):
        with sqlite3.connect(work / "events.db") as conn:
            logged = dict(conn.execute("SELECT playlist_id, model_version FROM requests"))
        time.sleep(0.1)
    assert [logged[p] for p in ids] == versions


@pytest.mark.slow
@pytest.mark.integration
def test_rollback_and_promote_at_run_time(canary):
    url, _, champion, challenger = canary

    def challenger_answers() -> float:
        metrics = get(url, "/metrics")[1]
        key = f'llarapp_recommend_total{{code="200",model_version="{challenger}"}} '
        return float(metrics.split(key)[1].split()[0])

    status, state = post_json(url, "/v1/canary", {"percent": 0})
    assert status == 200 and state["percent"] == 0
    before = challenger_answers()
    assert set(served_by(url, [f"rollback-{i}" for i in range(60)])) == {champion}
    assert challenger_answers() == before  # nothing reached the challenger
    status, state = post_json(url, "/v1/canary", {"percent": 100})
    assert status == 200 and state["percent"] == 100
    assert set(served_by(url, [f"promote-{i}" for i in range(30)])) == {challenger}
    post_json(url, "/v1/canary", {"percent": 50})


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"percent": 150}', 422),
        (b'{"percent": -1}', 422),
        (b'{"percent": "10"}', 422),
        (b'{"percent": 10, "now": true}', 422),
        (b"[10]", 422),
        (b"{not json", 400),
    ],
)
def test_bad_canary_requests_are_4xx_and_change_nothing(canary, body, status):
    url = canary[0]
    got, out = post_json(url, "/v1/canary", body)
    assert got == status and out["error"], out
    assert json.loads(get(url, "/v1/canary")[1])["percent"] == 50.0
    assert post_json(url, "/v1/recommend", {"name": "still serving"})[0] == 200


@pytest.mark.slow
@pytest.mark.integration
def test_a_post_to_one_worker_moves_every_worker(canary, tmp_path):
    """--workers 2: the POST reaches one process; the next requests of both follow it."""
    work, champion, challenger = canary[1], canary[2], canary[3]
    log = tmp_path / "server.log"
    proc, url = start_server(
        str(work / "champion"), None, "--events", str(tmp_path / "events.db"), "--workers", "2",
        "--challenger", str(work / "challenger"), "--canary-percent", "0", log_file=log,
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        ids = [f"workers-{i}" for i in range(20)]  # a new connection each: both workers answer
        assert set(served_by(url, ids)) == {champion}
        assert post_json(url, "/v1/canary", {"percent": 100})[0] == 200
        assert set(served_by(url, ids)) == {challenger}
    finally:
        stop_server(proc)
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    workers = {e["pid"] for e in lines if e.get("event") == "serving"}
    after = [e for e in lines if e.get("event") == "recommend"][len(ids) :]
    assert len(workers) == 2 and {e["pid"] for e in after} == workers
    assert {e["model_version"] for e in after} == {challenger}


@pytest.mark.slow
@pytest.mark.integration
def test_a_challenger_posted_at_run_time_is_loaded_by_every_worker(canary, tmp_path):
    """A server started with one model takes a challenger by POST (what the continuous
    pipeline's canary step sends); the other worker loads it from the state file."""
    work, champion, challenger = canary[1], canary[2], canary[3]
    proc, url = start_server(
        str(work / "champion"), None, "--events", str(tmp_path / "events.db"), "--workers", "2",
        log_file=tmp_path / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        assert post_json(url, "/v1/canary", {"percent": 100})[0] == 409  # nothing to split with
        for body, status in [
            ({"percent": 10, "challenger": str(tmp_path / "nowhere")}, 422),
            ({"percent": 10, "challenger": str(work / "champion")}, 422),  # the champion again
            ({"percent": 10, "challenger": 7}, 422),
            ({"percent": 101, "challenger": str(work / "challenger")}, 422),
        ]:
            got, out = post_json(url, "/v1/canary", body)
            assert got == status and out["error"], (body, out)
        assert json.loads(get(url, "/v1/canary")[1])["challenger"] is None
        ids = [f"runtime-{i}" for i in range(20)]
        assert set(served_by(url, ids)) == {champion}
        body = {"percent": 100, "challenger": str(work / "challenger")}
        status, state = post_json(url, "/v1/canary", body)
        assert status == 200 and state == {"champion": champion, "challenger": challenger,
                                           "percent": 100.0,
                                           "window": {"since": None, "versions": {}}}  # fmt: skip
        deadline = time.monotonic() + 120  # the other worker loads it in the background
        while set(served_by(url, ids)) != {challenger}:
            assert time.monotonic() < deadline, "a worker never loaded the challenger"
    finally:
        stop_server(proc)
