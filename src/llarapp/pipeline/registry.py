"""MLflow model registry for LLaRA++: log the run, register versions, move aliases.

Aliases (never the deprecated stages):

- ``challenger`` -- the newest version that passed the gate;
- ``champion`` -- the version being served; moved by :func:`register_model` when the gate
  passed and no canary is live, otherwise by the canary rollout when it promotes;
- ``canary`` -- set by the canary rollout while a canary is live; its presence is what "a live
  canary" means here.

A registered version's source is the run's ``model`` artifact folder: MODEL_DIR as trained
(``model.json``, ``arrays.npz``, ``als/``, the projector, ``ranker/`` -- the Hugging Face model)
plus ``onnx/`` (the exported files and ``manifest.json``). ``models:/llarapp@champion`` downloads
it (:func:`mlflow.artifacts.download_artifacts`).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_NAME = "llarapp"
CHALLENGER, CHAMPION, CANARY = "challenger", "champion", "canary"
_BAD_NAME = re.compile(r"[^\w.\- /:]")


def registry_client(tracking_uri: str | None):
    """``(MlflowClient, tracking URI)`` of ``tracking_uri`` (:func:`configure_mlflow`'s rules)."""
    from mlflow import MlflowClient

    from llarapp.training.llara import configure_mlflow

    uri = configure_mlflow(tracking_uri or None)
    return MlflowClient(uri), uri


def alias_version(client, model_name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None (also when the model is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def aliases(tracking_uri: str | None, model_name: str = MODEL_NAME) -> dict[str, str]:
    """``{alias: version}`` of a registered model (empty when it is not registered)."""
    from mlflow.exceptions import MlflowException

    client, _ = registry_client(tracking_uri)
    try:
        return {k: str(v) for k, v in client.get_registered_model(model_name).aliases.items()}
    except MlflowException:
        return {}


def score_champion(
    tracking_uri: str | None,
    model_name: str,
    data_dir: Path | str,
    split_dir: Path | str,
    metric: str = "ndcg",
    candidate: Path | str | None = None,
) -> tuple[str, float] | None:
    """Score the current ``champion`` on this run's test cases.

    With ``candidate`` (the run's split-run MODEL_DIR, what ``evaluate`` scored) and a llara++
    champion, the champion is scored on the candidate's stage
    (:func:`llarapp.training.llara.on_stage`): its ranker over the same training fold's
    features and retrieval. A retrain's fresh data holds the playlists the champion was fitted
    on, test playlists included, so the champion as served would be scored on cases it has
    seen; on the candidate's stage the two rankers meet on equal terms.

    Returns:
        ``(version, overall metric)``, or None when there is no champion.

    Raises:
        RuntimeError: The champion exists but cannot be downloaded or loaded; the message names
            the version and its source.
    """
    import mlflow

    from llarapp.data.dataset import artist_lookup, load_cases
    from llarapp.evaluation.evaluate import evaluate
    from llarapp.models.base import Recommender

    client, _ = registry_client(tracking_uri)
    version = alias_version(client, model_name, CHAMPION)
    if version is None:
        return None
    source = client.get_model_version(model_name, version).source
    with tempfile.TemporaryDirectory(prefix="llarapp-champion-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                f"models:/{model_name}/{version}", dst_path=tmp
            )
            model = Recommender.load(path)
            if candidate is not None and model.name == "llara++":
                from llarapp.training.llara import on_stage

                model = on_stage(model, Recommender.load(candidate))
        except Exception as exc:
            raise RuntimeError(
                f"champion {model_name} v{version} ({source}) cannot be loaded for the gate: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        cases = load_cases(data_dir, split_dir, "test")
        result = evaluate(model, cases, artist_of=artist_lookup(data_dir), progress=False)
    score = float(result["overall"][metric])
    log.info("champion %s v%s: test %s %.4f", model_name, version, metric, score)
    return version, score


def _metric_name(name: str) -> str:
    return _BAD_NAME.sub("_", name.replace("@", "_at_"))


def _training_run_id(client, model_dir: Path) -> str | None:
    from mlflow.exceptions import MlflowException

    report = model_dir / "train_report.json"
    if not report.is_file():
        return None
    history = json.loads(report.read_text()).get("history") or [{}]
    run_id = history[-1].get("mlflow_run_id")
    if not run_id:
        return None
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("training run %s is not in this tracking store; logging a new run", run_id)
        return None
    return run_id


def register_model(
    model_dir: Path | str,
    *,
    evaluation: dict,
    gate: dict,
    tracking_uri: str | None = None,
    model_name: str = MODEL_NAME,
    params: dict[str, Any] | None = None,
    promote: bool = True,
) -> dict:
    """Log an exported model to MLflow, register a version, set ``challenger`` (and ``champion``).

    The training run (``train_report.json`` names it) is reopened when the tracking store has
    it, so one run holds training curves, test metrics and the model; otherwise a new run is
    made. Logged: ``params`` (as ``pipeline.*``), the test metrics (``test_*``, per category,
    baselines), tags ``gate.*``, artifacts ``model/`` (MODEL_DIR with ``ranker/`` and
    ``onnx/manifest.json``) and ``evaluation/evaluation.json``.

    Args:
        model_dir: The exported MODEL_DIR (with ``onnx/manifest.json``).
        evaluation: ``evaluation.json`` of the evaluate stage.
        gate: The gate decision (:meth:`GateDecision.to_dict`); it must have passed.
        tracking_uri: MLflow tracking URI (``$MLFLOW_TRACKING_URI`` / SQLite when empty).
        model_name: Registered model name.
        params: Pipeline parameters to log.
        promote: Move ``champion`` when no canary is live.

    Returns:
        ``{"model_name", "version", "run_id", "model_uri", "source", "aliases", "promoted",
        "live_canary", "tracking_uri"}``.

    Raises:
        ValueError: The gate did not pass, or ``model_dir`` has no ``onnx/manifest.json``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from llarapp.pipeline.stages import kfp_metrics

    model_dir = Path(model_dir)
    if not gate.get("passed"):
        raise ValueError(f"refusing to register a model that failed the gate: {gate.get('reason')}")
    if not (model_dir / "onnx" / "manifest.json").is_file():
        raise ValueError(f"{model_dir} has no onnx/manifest.json: run the export stage first")
    client, uri = registry_client(tracking_uri)
    run_id = _training_run_id(client, model_dir)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "llara++ pipeline") as run:
        run_id = run.info.run_id
        if params:
            mlflow.log_params({f"pipeline.{k}": str(v)[:6000] for k, v in params.items()})
        metrics = {_metric_name(k): v for k, v in kfp_metrics(evaluation).items()}
        mlflow.log_metrics(metrics)
        mlflow.set_tags({f"gate.{k}": str(v) for k, v in gate.items()})
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        mlflow.log_dict(evaluation, "evaluation/evaluation.json")
        source = mlflow.get_artifact_uri("model")
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(
            model_name, description="LLaRA++ playlist continuation (MODEL_DIR + onnx/)"
        )
    mv = client.create_model_version(
        model_name,
        source=source,
        run_id=run_id,
        tags={"gate": gate.get("reason", ""), "metric": str(gate.get("metric"))},
        description=gate.get("reason", ""),
    )
    version = str(mv.version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    canary = alias_version(client, model_name, CANARY)
    promoted = promote and canary is None
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    log.info(
        "registered %s v%s (challenger%s)%s",
        model_name,
        version,
        ", champion" if promoted else "",
        f"; canary v{canary} is live, champion unchanged" if canary else "",
    )
    return {
        "model_name": model_name,
        "version": version,
        "run_id": run_id,
        "model_uri": f"models:/{model_name}/{version}",
        "source": source,
        "aliases": aliases(uri, model_name),
        "promoted": promoted,
        "live_canary": canary,
        "tracking_uri": uri,
    }
