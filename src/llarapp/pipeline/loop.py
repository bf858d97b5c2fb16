"""``llarapp loop``: the closed loop on one machine, played through end to end.

A trained champion serves on loopback, and simulated listeners use it:

1. **clean**: a window of undrifted requests (held-out playlists as ``/v1/recommend`` bodies);
   the continuous pipeline runs and must neither alarm nor retrain;
2. **drifted**: a window of drifted requests (a wave of new releases and titles in other
   languages, :mod:`llarapp.benchmark.drift`) from listeners who like the tracks they are
   shown that belong to their playlist and dislike the first ones that do not; the continuous
   pipeline alarms, exports the feedback, fine-tunes the champion on fresh data + feedback
   (LoRA), gates, registers the new model as ``challenger`` and starts its canary;
3. **canary**: traffic goes on with feedback, the challenger answering its share; the rollout
   controller (:func:`llarapp.pipeline.rollout.decide`) watches every round until it decides,
   and :func:`~llarapp.pipeline.rollout.act` promotes;
4. the server restarts on the promoted champion; a deliberately broken challenger (the new
   champion with its ranker weights shuffled) is put on canary, and the controller rolls it
   back while the champion keeps serving.

The champion comes from the training pipeline (the same ``train_llara`` as ``llarapp train``)
on 70 % of the playlists (split by pid); the other 30 % are the listeners. Everything stays
under ``work``: the MLflow registry (SQLite), the deploy pointers, the event store, the audit
log and every pipeline run. The pipelines run through ``run_pipeline`` (the CLI passes
``pipelines.runner.run_local``: the library never imports kfp).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llarapp.benchmark.drift import language, new_releases
from llarapp.config import SplitConfig
from llarapp.data.dataset import EvalCase, load_cases
from llarapp.data.ingest import ingest, iter_sources
from llarapp.data.split import FOLDS_FILE, split
from llarapp.data.synth import generate
from llarapp.monitoring import DEFAULT_WINDOW
from llarapp.pipeline.deploy import CHALLENGER_POINTER, read_pointer, write_pointer
from llarapp.pipeline.registry import MODEL_NAME
from llarapp.pipeline.rollout import WAIT, RolloutRules, act, decide, live_stats
from llarapp.pipeline.status import read_status
from llarapp.serving.client import get, post_json, start_server, stop_server, wait_ready
from llarapp.serving.request import request_body

log = logging.getLogger(__name__)

RunPipeline = Callable[[str, dict[str, Any]], dict[str, Any]]
TRAFFIC_SHARE = 0.3  # of the playlists: the listeners (never trained on by the champion)
SHOWN = 10  # the tracks a listener looks at
DISLIKES = 2  # the first shown tracks outside the playlist a listener dislikes
K = 50


@dataclass
class LoopConfig:
    """What the loop plays; the defaults are the documented run."""

    playlists: int = 2000  # synthetic playlists when no data is given
    seed: int = 0
    window: int = DEFAULT_WINDOW  # requests per drift window (the pipeline's check reads them)
    canary_percent: float = 10.0
    round_requests: int = 200  # requests between two decisions of the controller
    max_canary_requests: int = 20_000  # per canary; no decision by then fails the loop
    min_feedback: int = 10**9  # the pipeline's feedback trigger: drift alone starts a retrain
    rules: RolloutRules = field(
        default_factory=lambda: RolloutRules(min_requests=100, min_feedback=50)
    )
    pipeline: dict[str, Any] = field(default_factory=dict)  # both pipelines' parameters
    training: dict[str, Any] = field(default_factory=dict)  # the training pipeline's only
    continuous: dict[str, Any] = field(  # the continuous pipeline's only
        default_factory=lambda: {"margin_over_champion": -0.01}
    )


class LoopError(RuntimeError):
    """A step of the loop did not do what it must; the message says which and why."""


def run_loop(
    out: Path | str,
    run_pipeline: RunPipeline,
    *,
    work: Path | str,
    data: str | None = None,
    config: LoopConfig | None = None,
) -> dict[str, Any]:
    """Play the loop (module docstring); write the result to ``out`` and return it.

    Returns:
        ``{"clean": {"drift": false, ...}, "drifted": {"drift": true, ...}, "retrain":
        {"seconds", "gate", "version"}, "canary": {"percent", "requests",
        "challenger_share"}, "promote": {"decision", "champion"}, "bad_challenger":
        {"decision", "champion"}, "alarm_to_promoted_s", "config", "seconds"}``.

    Raises:
        LoopError: a step failed (the clean window alarmed, the drifted one did not, the gate
            refused the retrain, the controller decided otherwise than expected...).
    """
    config = config or LoopConfig()
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("mlflow.db", "serving", "feedback", "broken-challenger", "server.log"):
        path = work / stale  # a loop starts from no registry, no pointers, no events
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    serving, events = work / "serving", work / "serving" / "events.db"
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    rng = np.random.default_rng(config.seed)

    t = time.perf_counter()
    source = data or _synthetic(work / f"synth-{config.playlists}-{config.seed}", config)
    base, traffic = _listeners(source, work, config.seed)
    seconds["data"] = time.perf_counter() - t
    shared = {"tracking_uri": tracking, "model_name": MODEL_NAME, "serving_target": str(serving)}
    shared |= {"data_uri": str(base), **config.pipeline}

    t = time.perf_counter()
    trained = _pipeline(run_pipeline, "training", {**shared, **config.training})
    if not trained["outputs"].get("gate_passed"):
        raise LoopError(f"the champion did not pass the training pipeline's gate: {trained}")
    champion = _pointer(serving, "current.json")
    seconds["champion"] = time.perf_counter() - t

    continuous = {
        **shared,
        **config.continuous,
        "request_log": str(events),
        "events": str(events),
        "feedback_out": str(work / "feedback"),
        "window": config.window,
        "min_feedback": config.min_feedback,
        "canary_percent": config.canary_percent,
    }
    result: dict[str, Any] = {}
    with _Server(champion["storage_uri"], events, work / "server.log") as server:
        continuous["server_url"] = server.url
        # 1. clean traffic: no alarm, no retrain
        t = time.perf_counter()
        clean = _draw(traffic, config.window, rng)
        sent = _replay(server.url, [request_body(ec.case, K) for ec in clean])
        run = _pipeline(run_pipeline, "continuous", continuous)
        result["clean"] = {"requests": sent["requests"], **_drift(run)}
        if result["clean"]["drift"] or run["outputs"].get("retrain"):
            raise LoopError(f"undrifted traffic raised an alarm: {result['clean']}")
        seconds["clean"] = time.perf_counter() - t

        # 2. drifted traffic with feedback: alarm -> retrain -> challenger -> canary
        t = time.perf_counter()
        drifted = _draw(traffic, config.window, rng)
        bodies = language(new_releases([request_body(ec.case, K) for ec in drifted], rng), rng)
        sent = _replay(server.url, bodies, drifted, prefix="drift")
        run = _pipeline(run_pipeline, "continuous", continuous)
        alarm = _alarm_at(run)
        result["drifted"] = {**sent, **_drift(run), "retrain": bool(run["outputs"].get("retrain"))}
        if not result["drifted"]["drift"]:
            raise LoopError(f"drifted traffic raised no alarm: {result['drifted']}")
        challenger = read_pointer(serving, CHALLENGER_POINTER)
        if challenger is None or challenger.get("alias") != "challenger":
            raise LoopError(
                f"the retrain left no live challenger ({serving}/{CHALLENGER_POINTER}: "
                f"{challenger}); the gate said: {_gate(run)}"
            )
        result["retrain"] = {
            "seconds": round(run["seconds"], 1),
            "gate": _gate(run),
            "version": str(challenger["version"]),
        }
        seconds["drifted + retrain"] = time.perf_counter() - t

        # 3. the canary: traffic with feedback until the controller decides -> promote
        t = time.perf_counter()
        state = server.canary()
        if state["percent"] != config.canary_percent or state["challenger"] is None:
            raise LoopError(f"the pipeline started no {config.canary_percent}% canary: {state}")
        watched = _watch(server, traffic, rng, config, "canary")
        decision = watched.pop("decision")
        record = act(
            decision,
            audit_log=serving / "rollout.jsonl",
            server=server.url,
            target=serving,
            tracking_uri=tracking,
        )
        if decision.action != "promote":
            raise LoopError(f"the retrained challenger was not promoted: {decision.reason}")
        promoted_at = time.time()
        result["canary"] = {"percent": state["percent"], **watched}
        result["promote"] = {
            "decision": decision.action,
            "champion": state["challenger"],
            "registered_version": str(challenger["version"]),
            "reason": decision.reason,
            "moved": record["moved"],
        }
        result["alarm_to_promoted_s"] = round(promoted_at - alarm, 1)
        seconds["canary"] = time.perf_counter() - t

    # 4. the promoted champion serves; a broken challenger is rolled back
    t = time.perf_counter()
    champion = _pointer(serving, "current.json")
    with _Server(champion["storage_uri"], events, work / "server.log") as server:
        version = server.canary()["champion"]
        if version != result["promote"]["champion"]:
            raise LoopError(f"after the promotion {version} serves, not the challenger")
        broken = broken_copy(Path(champion["storage_uri"]), work / "broken-challenger")
        write_pointer(serving, CHALLENGER_POINTER, {
            "model_name": MODEL_NAME, "version": "broken", "alias": "challenger",
            "storage_uri": str(broken), "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })  # fmt: skip
        status, state = post_json(
            server.url, "/v1/canary", {"percent": config.canary_percent, "challenger": str(broken)}
        )
        if status != 200:
            raise LoopError(f"the broken challenger's canary did not start: {status} {state}")
        watched = _watch(server, traffic, rng, config, "broken")
        decision = watched.pop("decision")
        act(decision, audit_log=serving / "rollout.jsonl", server=server.url, target=serving)
        after = server.canary()
        still = _replay(server.url, [request_body(ec.case, K) for ec in _draw(traffic, 20, rng)])
        result["bad_challenger"] = {
            "decision": decision.action,
            "champion": after["champion"],
            "challenger": state["challenger"],
            "reason": decision.reason,
            **watched,
            "served_after": still["versions"],
        }
        if decision.action != "rollback" or set(still["versions"]) != {version}:
            raise LoopError(
                f"the broken challenger was not rolled back: {result['bad_challenger']}"
            )
    seconds["bad challenger"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    result |= {
        "config": asdict(config),
        "data": {"source": str(source), "base": str(base), "listeners": len(traffic)},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str))
    return result


def broken_copy(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` whose ranker ranks upside down (its feature blends and
    interaction gate negated, the rest of its weights shuffled): another model version that
    serves without errors and recommends the worst of its candidates first, as a bad
    challenger would."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    shutil.rmtree(out / "onnx", ignore_errors=True)  # else the server ranks with the export
    weights = out / "ranker" / "model.safetensors"
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for name, value in load_file(weights).items():
        if name.startswith(("feature_head.", "feature_context", "interaction")):
            tensors[name] = -value
        else:
            order = torch.randperm(value.numel(), generator=gen)
            tensors[name] = value.flatten()[order].reshape(value.shape).contiguous()
    save_file(tensors, weights)
    return out


# ---------------------------------------------------------------------------- the steps
class _Server:
    """``llarapp serve`` on a free loopback port with every request logged."""

    def __init__(self, model: str, events: Path, log_file: Path) -> None:
        self.events = events
        self.proc, self.url = start_server(
            model, None, "--events", str(events), "--sample-rate", "1.0", log_file=log_file
        )

    def __enter__(self) -> _Server:
        try:
            wait_ready(self.url, self.proc)
        except BaseException:
            stop_server(self.proc)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self.proc)

    def canary(self) -> dict[str, Any]:
        status, body = get(self.url, "/v1/canary")
        if status != 200:
            raise LoopError(f"GET {self.url}/v1/canary answered {status}: {body[:300]}")
        return json.loads(body)


def _synthetic(folder: Path, config: LoopConfig) -> str:
    if not list(folder.glob("mpd.slice.*.json")):
        generate(config.playlists, folder, seed=config.seed)
    return str(folder)


def _listeners(source: str, work: Path, seed: int) -> tuple[Path, list[EvalCase]]:
    """(MPD slices of the champion's playlists, the listeners' cases): playlists split by the
    loop's split, the test fold being the listeners (their cases: RecSys Challenge categories,
    hidden tracks to like)."""
    ingest(source, work / "data")
    valid = 0.1
    split(
        work / "data", work / "split", SplitConfig(seed, valid_frac=valid, test_frac=TRAFFIC_SHARE)
    )
    import pyarrow.parquet as pq

    folds = pq.read_table(work / "split" / FOLDS_FILE).to_pandas()
    listeners = set(folds.loc[folds["fold"] == "test", "pid"].tolist())
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    for name in iter_sources(source):
        doc = json.loads(Path(name).read_text(encoding="utf-8"))
        doc["playlists"] = [p for p in doc["playlists"] if p.get("pid") not in listeners]
        (base / Path(name).name).write_text(json.dumps(doc), encoding="utf-8")
    return base, load_cases(work / "data", work / "split", "test")


def _draw(pool: list[EvalCase], size: int, rng: np.random.Generator) -> list[EvalCase]:
    """``size`` listeners, none twice (a window of repeats is not a sample of traffic)."""
    if size > len(pool):
        raise LoopError(
            f"a window of {size} requests from {len(pool)} listeners: give more playlists "
            f"(--playlists, --data) or a smaller --window"
        )
    return [pool[i] for i in rng.choice(len(pool), size, replace=False)]


def _replay(
    url: str, bodies: list[dict], cases: list[EvalCase] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """Send ``bodies``; with ``cases``, each as playlist ``{prefix}-{i}`` whose listener votes:
    likes the shown tracks of the case's hidden ones, dislikes the first :data:`DISLIKES`
    shown tracks that are not."""
    versions, likes, dislikes, errors = [], 0, 0, 0
    for i, body in enumerate(bodies):
        if cases is not None:
            body = {**body, "playlist_id": f"{prefix}-{i}"}
        status, answer = post_json(url, "/v1/recommend", body)
        if status != 200:
            errors += 1
            continue
        versions.append(answer["model_version"])
        if cases is None:
            continue
        hidden = set(cases[i].hidden)
        shown = [t["track_uri"] for t in answer["recommended_tracks"][:SHOWN]]
        votes = [(u, True) for u in shown if u in hidden]
        votes += [(u, False) for u in [u for u in shown if u not in hidden][:DISLIKES]]
        for uri, liked in votes:
            vote = {"request_id": answer["request_id"], "track_uri": uri, "liked": liked}
            if post_json(url, "/v1/feedback", vote)[0] != 200:
                raise LoopError(f"feedback refused: {vote}")
        likes += sum(liked for _, liked in votes)
        dislikes += sum(not liked for _, liked in votes)
    return {"requests": len(bodies), "errors": errors, "likes": likes, "dislikes": dislikes,
            "versions": versions}  # fmt: skip


def _watch(server: _Server, traffic, rng, config: LoopConfig, prefix: str) -> dict[str, Any]:
    """Drifted traffic with feedback, :attr:`LoopConfig.round_requests` at a time, until the
    controller's decision is not a wait."""
    versions: list[str] = []
    challenger = server.canary()["challenger"]
    n = 0
    while True:
        cases = _draw(traffic, min(config.round_requests, len(traffic)), rng)
        bodies = language(new_releases([request_body(ec.case, K) for ec in cases], rng), rng)
        sent = _replay(server.url, bodies, cases, prefix=f"{prefix}-{n}")
        versions += sent.pop("versions")
        n += len(bodies)
        decision = decide(*live_stats(server.url, server.events), config.rules)
        log.info("%s after %d requests: %s (%s)", prefix, n, decision.action, decision.reason)
        if decision.action != WAIT:
            break
        if n >= config.max_canary_requests:
            raise LoopError(f"{prefix}: no decision after {n} requests: {decision.reason}")
    return {
        "requests": n,
        "challenger_share": round(float(np.mean([v == challenger for v in versions])), 4),
        "decision": decision,
    }


def _pipeline(run_pipeline: RunPipeline, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    run = run_pipeline(name, arguments)
    if not run.get("ok"):
        raise LoopError(
            f"the {name} pipeline failed: {run.get('error')} ({run.get('status_file')})"
        )
    return run


def _alarm_at(run: dict[str, Any]) -> float:
    """When the run's drift check finished (its status line), else when the run ended."""
    for entry in read_status(run.get("status_file", "")):
        if entry.get("stage") == "check_drift" and "ended_at" in entry:
            return float(entry["ended_at"])
    return time.time()


def _drift(run: dict[str, Any]) -> dict[str, Any]:
    """The continuous run's drift verdict and scores (its check_drift outputs)."""
    outputs = run["outputs"]
    scores = outputs.get("drift_scores")
    detail = {}
    if scores and Path(scores).is_file():
        detail = json.loads(Path(scores).read_text())
    return {"drift": bool(outputs.get("drift")), "retrain": bool(outputs.get("retrain")),
            "scores": detail}  # fmt: skip


def _gate(run: dict[str, Any]) -> dict[str, Any]:
    """The retrain's gate decision (the run's gate task output), or {} when it did not run."""
    for path in Path(run["run_dir"]).glob("**/gate/decision"):
        return json.loads(path.read_text())
    return {}


def _pointer(serving: Path, name: str) -> dict[str, Any]:
    pointer = read_pointer(serving, name)
    if pointer is None:
        raise LoopError(f"{serving}/{name}: no deploy pointer; the pipeline deployed nothing")
    return pointer
