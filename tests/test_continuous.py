"""The continuous pipeline end to end under ``kfp.local``: a champion in an MLflow registry and
serving (``llarapp serve``), an event store with drifted traffic and feedback -> drift -> the
champion fine-tuned on fresh data and the feedback -> registered as ``challenger`` only ->
``challenger.json`` -> its canary started on the server; and, on clean traffic with too little
feedback, no retraining (its steps called directly: a second local run would cost another
minute).

The event stores are written with :class:`llarapp.serving.store.EventStore`, as the server
writes them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kfp import dsl
from tiny_model import TINY

from components.check_drift.component import check_drift
from components.decide_retrain.component import decide_retrain
from pipelines import runner

WINDOW = 40  # the test's window: the tiny champion's reference holds this many requests or more
# a name no other test registers: downloads of models:/NAME/VERSION are cached by name and
# version in $LLARAPP_CACHE, whichever registry they came from
MODEL = "llarapp-loop"
CHAMPION = f"models:/{MODEL}@champion"


def _out(cls, path: Path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.fixture(scope="module")
def champion(tiny, tmp_path_factory):
    """``(tracking_uri, clean requests, track URIs, registered)``: the tiny model, with a
    reference profile, registered as v1 with alias ``champion``; ``registered``: its exported
    folder, evaluation and gate decision (to register it elsewhere)."""
    from llarapp.config import SplitConfig
    from llarapp.data.dataset import load_cases
    from llarapp.data.split import split
    from llarapp.monitoring import Catalogue, write_reference
    from llarapp.pipeline.gate import GateConfig, decide
    from llarapp.pipeline.registry import register_model
    from llarapp.pipeline.stages import evaluate_models, export_model_dir
    from llarapp.serving.request import request_body

    data, _, model_dir, model = tiny
    w = tmp_path_factory.mktemp("champion")
    # a reference of at least 32 requests (the drift check's title clusters): larger held-out
    # folds than the tiny model's own split
    split(data, w / "split", SplitConfig(seed=1, valid_frac=0.3, test_frac=0.4))
    shutil.copytree(model_dir, w / "model")
    reference = write_reference(w / "model", data, w / "split", model.encoder.encode)
    assert len(reference) >= WINDOW
    evaluation = evaluate_models(
        data, w / "split", w / "model", None, w / "evaluation", baselines=["most_popular"]
    )
    gate = decide(evaluation, GateConfig(margin_over_baselines=-1.0)).to_dict()
    export_model_dir(w / "model", w / "exported", export_format="none")
    tracking = f"sqlite:///{w / 'mlflow.db'}"
    registered = register_model(
        w / "exported", evaluation=evaluation, gate=gate, tracking_uri=tracking, model_name=MODEL
    )
    assert registered["version"] == "1" and registered["promoted"]
    cases = [*load_cases(data, w / "split", "valid"), *load_cases(data, w / "split", "test")]
    bodies = [request_body(ec.case, 500) for ec in cases]
    clean = _clean(bodies, Catalogue.of_training_fold(data, w / "split").popularity)
    named = zip(model.names.uris.tolist(), model.names.track_name.tolist(), strict=True)
    registered = {"model_dir": w / "exported", "evaluation": evaluation, "gate": gate}
    return tracking, clean, sorted(uri for uri, name in named if name), registered


@contextmanager
def _serving(model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``llarapp serve`` on ``model_dir`` alone (no challenger yet); yields its URL. Torch
    ranker: these exports are ``export_format="none"`` (a manifest without an ONNX ranker)."""
    from llarapp.serving.client import start_server, stop_server, wait_ready

    proc, url = start_server(
        str(model_dir), None, "--events", str(tmp_path / "server-events.db"),
        "--ranker-backend", "torch", log_file=tmp_path / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        yield url
    finally:
        stop_server(proc)


def _log(events: Path, requests: list[dict], feedback: list[tuple[str, str, bool]]) -> None:
    """Write requests and feedback into an event store as ``llarapp serve`` does: each request
    logged and remembered (its context), each feedback ``(request_id, track_uri, liked)``."""
    from llarapp.serving.request import FeedbackEvent
    from llarapp.serving.store import EventStore

    store = EventStore(events, sample_rate=1.0)
    try:
        for i, r in enumerate(requests):
            rid, context = f"req-{i}", {"playlist_id": f"pl-{i}", "model_version": "llarapp/1"}
            store.remember(rid, {**context, "title": r["title"], "seed_uris": r["seed_uris"]})
            store.maybe_log_request({"request_id": rid, **context, "k": 500, **r})
        store.close()  # flushes the request log and contexts first
        store = EventStore(events, sample_rate=1.0)
        for rid, uri, liked in feedback:
            store.record_feedback(FeedbackEvent(track_uri=uri, liked=liked, request_id=rid))
    finally:
        store.close()


def _clean(bodies: list[dict], known: dict[str, float]) -> list[dict]:
    """The reference's own requests as new listeners send them (what the reference profiles):
    a seed only the held-out playlists hold is one the catalogue does not know."""
    rows = []
    for b in bodies:
        uris = [t["track_uri"] for t in b["tracks"] if t["track_uri"] in known]
        rows.append({"title": b.get("name"), "n_seeds": len(b["tracks"]), "n_known": len(uris),
                     "n_unknown": len(b["tracks"]) - len(uris), "seed_uris": uris})  # fmt: skip
    return rows


def _drifted(n: int) -> list[dict]:
    """Requests of another world: unknown seeds only, titles the training data never had."""
    rows = []
    for i in range(n):
        uris = [f"spotify:track:new-release-{i}-{j}" for j in range(5)]
        rows.append({"title": f"Ĝis la revido, kanto {i}", "n_seeds": 5, "n_known": 0,
                     "n_unknown": 5, "seed_uris": uris})  # fmt: skip
    return rows


@pytest.mark.integration
@pytest.mark.slow
def test_drift_and_feedback_retrain_the_champion_into_a_challenger(champion, tiny, tmp_path):
    from llarapp.pipeline.registry import aliases, registry_client
    from llarapp.pipeline.stages import RETRAIN_MARK
    from llarapp.pipeline.status import read_status
    from llarapp.serving.client import get

    tracking, _, uris, registered = champion
    events = tmp_path / "events.db"
    feedback = [(f"req-{i}", uris[(3 * i + j) % len(uris)], j != 2)
                for i in range(4) for j in range(3)]  # fmt: skip
    _log(events, _drifted(WINDOW), feedback)
    mpd = tiny[0].parent / "mpd"  # the fresh data: the tiny set's slices
    args = {
        "data_uri": str(mpd),
        "request_log": str(events),
        "events": str(events),
        "champion": CHAMPION,
        "model_name": MODEL,
        "feedback_out": str(tmp_path / "feedback"),
        "window": WINDOW,
        "min_feedback": 10,
        "split_seed": 1,
        "train_config": {**TINY.to_dict(), "epochs": 1, "lora_r": 4},
        "als_config": {"factors": 8, "iterations": 5},
        "tune_max_cases": 40,
        "baselines": ["most_popular"],
        "margin_over_baselines": -1.0,  # wiring, not quality: the tiny models need not win
        "margin_over_champion": -1.0,
        "export_format": "none",  # the ONNX export runs in test_pipeline (35 s here)
        "tracking_uri": tracking,
        "serving_target": str(tmp_path / "serving"),
    }
    with _serving(registered["model_dir"], tmp_path) as url:  # the canary step hands it v2
        result = runner.run_local("continuous", {**args, "server_url": url}, tmp_path / "work")
        state = json.loads(get(url, "/v1/canary")[1])
    assert result["ok"], result["error"]
    outputs = result["outputs"]
    assert outputs["drift"] is True and outputs["retrain"] is True
    decision = Path(outputs["retrain_decision"]).read_text()
    assert "retrain: drift in" in decision and "12 feedback event(s)" in decision
    scores = json.loads(Path(outputs["drift_scores"]).read_text())
    assert scores["drift"] == 1.0 and scores["drifted_unknown_share"] == 1.0
    assert "<html" in Path(outputs["drift_report"]).read_text().lower()
    batch = json.loads((Path(outputs["feedback_batch"]) / "batch.json").read_text())
    assert batch["events"] == 12 and batch["negatives"] == 4

    ran = [e["stage"] for e in read_status(result["status_file"])]
    assert set(ran[:3]) == {"check_drift", "export_feedback", "decide_retrain"}
    assert ran[-4:] == ["export_onnx", "register_model", "deploy", "start_canary"]
    run_dir = Path(result["run_dir"])
    ingested = json.loads((run_dir / "ingest" / "data" / "ingest_report.json").read_text())
    assert ingested["feedback_batches"] == 1 and ingested["negatives"] == 4

    # challenger only: the champion stays, the new version is in its canary
    assert aliases(tracking, MODEL) == {"champion": "1", "challenger": "2", "canary": "2"}
    client, _ = registry_client(tracking)
    run = client.get_run(client.get_model_version(MODEL, "2").run_id)
    assert run.data.tags["llarapp.mode"] == "lora"  # the champion's ranker, fine-tuned
    pointer = json.loads((tmp_path / "serving" / "challenger.json").read_text())
    assert pointer["version"] == "2" and pointer["alias"] == "challenger"
    assert not (tmp_path / "serving" / "current.json").exists()
    (canary,) = run_dir.glob("start-canary*/canary")
    started = json.loads(canary.read_text())
    assert started["mode"] == "server" and started["started"] is True
    assert started["percent"] == 10.0 and started["challenger"] == pointer["storage_uri"]
    assert state["percent"] == 10.0 and state["challenger"] not in (None, state["champion"])
    mark = json.loads((tmp_path / "feedback" / RETRAIN_MARK).read_text())
    assert mark["last_id"] == 12


@pytest.mark.integration
def test_clean_traffic_and_little_feedback_do_not_retrain(champion, tmp_path):
    from llarapp.pipeline.stages import RETRAIN_MARK, export_feedback_batch

    tracking, clean, uris, _ = champion
    events = tmp_path / "events.db"
    _log(events, clean, [("req-0", uris[0], True), ("req-1", uris[1], False)])
    report, scores = _out(dsl.HTML, tmp_path / "report"), _out(dsl.Metrics, tmp_path / "scores")
    drift = check_drift.python_func(
        champion=CHAMPION,
        request_log=str(events),
        window=len(clean),
        tracking_uri=tracking,
        report=report,
        scores=scores,
    )
    assert drift.drift is False and drift.requests == len(clean), drift.reason
    assert scores.metadata["checked"] == 1.0 and scores.metadata["drift"] == 0.0
    assert "<html" in Path(report.path).read_text().lower()
    unchecked = check_drift.python_func(
        champion=CHAMPION,
        request_log=str(events),
        window=len(clean) + 1,
        tracking_uri=tracking,
        report=_out(dsl.HTML, tmp_path / "report2"),
        scores=_out(dsl.Metrics, tmp_path / "scores2"),
    )
    assert unchecked.drift is False and unchecked.requests == 0
    assert unchecked.reason.startswith(f"not checked: {len(clean)} request(s) logged")
    exported = export_feedback_batch(
        events, tmp_path / "feedback", CHAMPION, tmp_path / "batch",
        tracking_uri=tracking,
    )  # fmt: skip
    assert exported["events"] == 2 and exported["feedback_uri"] == str(tmp_path / "feedback")
    decision = _out(dsl.Markdown, tmp_path / "decision")
    retrain = decide_retrain.python_func(
        drift=drift.drift,
        drift_reason=drift.reason,
        new_feedback=exported["events"],
        feedback_out=str(tmp_path / "feedback"),
        min_feedback=10,
        decision=decision,
        summary=_out(dsl.Metrics, tmp_path / "summary"),
    )
    assert retrain is False
    assert "no retraining: no drift" in Path(decision.path).read_text()
    assert (
        "2 feedback event(s) await a retraining (< min_feedback 10)"
        in Path(decision.path).read_text()
    )
    assert not (tmp_path / "feedback" / RETRAIN_MARK).exists()  # the count goes on


def test_drift_check_and_decision_refuse_bad_input(tmp_path) -> None:
    from llarapp.pipeline.stages import decide_retrain as decide
    from llarapp.pipeline.stages import drift_check
    from llarapp.serving.store import EventStore

    with pytest.raises(FileNotFoundError, match="request log of `llarapp serve`"):
        drift_check(str(tmp_path), tmp_path / "missing.db", tmp_path / "out")
    EventStore(tmp_path / "events.db").close()
    with pytest.raises(ValueError, match="window=0: expected at least 1"):
        drift_check(str(tmp_path), tmp_path / "events.db", tmp_path / "out", window=0)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no reference profile"):
        drift_check(str(tmp_path / "model"), tmp_path / "events.db", tmp_path / "out")
    with pytest.raises(ValueError, match="min_feedback=0"):
        decide(True, "drift", tmp_path / "feedback", 0)
    # drift alone retrains; with no batch exported there is nothing to mark
    result = decide(True, "drift in title_cluster", tmp_path / "feedback", 5)
    assert result["retrain"] and result["pending_feedback"] == 0 and result["marked"] == 0


def test_start_canary_without_a_server_hands_the_cluster_its_request(tmp_path) -> None:
    from components.start_canary.component import start_canary
    from llarapp.pipeline.canary import start_canary as start
    from llarapp.pipeline.deploy import pointer

    registration = {"model_name": "llarapp", "version": "2", "promoted": False,
                    "model_uri": "models:/llarapp/2", "tracking_uri": "sqlite:///x.db"}  # fmt: skip
    challenger = pointer(tmp_path / "exported", registration)
    (tmp_path / "deployment").write_text(json.dumps(challenger))
    canary = _out(dsl.Artifact, tmp_path / "canary")
    started = start_canary.python_func(
        deployment=_out(dsl.Artifact, tmp_path / "deployment"),
        server_url="",
        canary_percent=10.0,
        canary=canary,
    )
    request = json.loads(Path(canary.path).read_text())
    assert started is False and request["mode"] == "cluster"
    assert request["challenger"] == str((tmp_path / "exported").resolve())
    assert request["percent"] == 10.0 and request["version"] == "2"
    assert "cluster controller" in request["note"] and request["canary_alias"] is None

    with pytest.raises(ValueError, match="canary_percent=150"):
        start(challenger, "", 150)
    champion = {**challenger, "alias": "champion"}
    with pytest.raises(ValueError, match="expected the pointer of a deployed challenger"):
        start(champion, "", 10)
    with pytest.raises(ValueError, match="expected http://HOST:PORT"):
        start(challenger, "https://example.org", 10)


@pytest.mark.integration
@pytest.mark.slow
def test_start_canary_posts_the_challenger_to_a_running_server(champion, tiny, tmp_path):
    """A server started with the champion alone takes the deployed challenger from the canary
    step's POST; the registry's ``canary`` alias then names it."""
    from llarapp.pipeline.canary import start_canary as start
    from llarapp.pipeline.deploy import deploy
    from llarapp.pipeline.loop import broken_copy
    from llarapp.pipeline.registry import aliases, register_model
    from llarapp.pipeline.stages import export_model_dir
    from llarapp.serving.client import get

    *_, registered = champion
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a registry of its own
    register_model(**registered, tracking_uri=tracking)
    broken_copy(tiny[2], tmp_path / "challenger")
    export_model_dir(tmp_path / "challenger", tmp_path / "exported", export_format="none")
    v2 = register_model(
        tmp_path / "exported",
        evaluation=registered["evaluation"],
        gate=registered["gate"],
        tracking_uri=tracking,
        promote=False,
    )
    pointer = deploy(tmp_path / "exported", v2, str(tmp_path / "serving"), registered["gate"])
    assert pointer["alias"] == "challenger"
    with _serving(registered["model_dir"], tmp_path) as url:
        result = start(pointer, url, 25)
        state = json.loads(get(url, "/v1/canary")[1])
    assert result["started"] is True and result["mode"] == "server"
    assert result["server"]["percent"] == 25.0 and state["percent"] == 25.0
    assert state["challenger"] == result["server"]["challenger"] != state["champion"]
    assert aliases(tracking) == {"champion": "1", "challenger": "2", "canary": "2"}
    with pytest.raises(RuntimeError, match="no server answers"):
        start(pointer, url, 25)  # the server is gone
