"""The summary printed after a local pipeline run (``llarapp pipeline run --local``,
``make demo``): stage times, the per-category table, the gate, where the model and the MLflow
run are, and how to open the MLflow UI -- or, when a stage failed, which one and why."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llarapp.pipeline.status import read_status

STAGES = (
    "ingest",
    "split",
    "text_features",
    "behavior_features",
    "train_ranker",
    "evaluate",
    "gate",
    "export_onnx",
    "register_model",
    "deploy",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_table(entries: list[dict], gate_passed: bool | None) -> str:
    """One line per stage: seconds, ``cached`` (ran in an earlier run) or ``skipped``."""
    done = {e["stage"]: e for e in entries}
    failed = next((e["stage"] for e in entries if e["status"] == "failed"), None)
    lines = ["| stage | status | seconds |", "|---|---|---|"]
    for stage in STAGES:
        e = done.get(stage)
        if e is not None:
            lines.append(f"| {stage} | {e['status']} | {e['seconds']:.1f} |")
        elif failed or (gate_passed is False and STAGES.index(stage) > STAGES.index("gate")):
            lines.append(f"| {stage} | not run | |")
        else:
            lines.append(f"| {stage} | cached | 0 |")
    return "\n".join(lines)


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this run's store."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000   # then open http://127.0.0.1:5000"


def format_summary(result: dict, *, tracking_uri: str, serving_target: str = "") -> str:
    """Text summary of a :func:`pipelines.runner.run_local` result."""
    entries = read_status(result["status_file"])
    outputs = result.get("outputs", {})
    run_dir = Path(result.get("run_dir") or ".")
    lines = [
        f"pipeline {result['pipeline']}: {'finished' if result['ok'] else 'FAILED'} in "
        f"{result['seconds']:.0f} s; task outputs under {run_dir}"
    ]
    if not result["ok"]:
        failed = next((e for e in entries if e["status"] == "failed"), None)
        if failed:
            lines.append(f"stage {failed['stage']} failed: {failed['error']}: {failed['message']}")
        else:
            lines.append(
                "a stage failed without recording why (killed?): " + _ANSI.sub("", result["error"])
            )
        kept = sorted(p.name for p in run_dir.iterdir() if p.is_dir()) if run_dir.is_dir() else []
        lines.append(f"outputs of the stages that ran are kept: {', '.join(kept) or 'none'}")
        lines.append("a rerun with the same inputs reuses the finished stages (local cache)")
        lines += ["", stage_table(entries, None)]
        return "\n".join(lines)

    decision = _read_json(Path(outputs["decision"])) if outputs.get("decision") else None
    passed = bool(outputs.get("gate_passed"))
    lines += ["", stage_table(entries, passed), ""]
    table = Path(outputs["table"]) if outputs.get("table") else None
    if table and table.is_file():
        lines += ["test cases: overall, then per challenge category", "", table.read_text(), ""]
    if decision:
        lines.append(f"gate: {decision['reason']}")
    lines.append(f"trained model (MODEL_DIR): {outputs.get('model', '?')}")
    registration = _read_json(run_dir / "register-model" / "registration")
    deployment = _read_json(run_dir / "deploy" / "deployment")
    if registration:
        aliases = ", ".join(f"{k}=v{v}" for k, v in sorted(registration["aliases"].items()))
        lines.append(
            f"registered: {registration['model_name']} v{registration['version']} "
            f"(aliases: {aliases}); MLflow run {registration['run_id']}"
        )
        lines.append(f"model files in MLflow: {registration['source']}")
    elif passed:
        lines.append("registered: no (see the register-model stage)")
    else:
        lines.append("registered: no -- the gate did not pass; the champion is unchanged")
    if deployment:
        lines.append(
            f"serving pointer: {deployment['written_to'] or '(none written)'} -> "
            f"{deployment['model_name']} v{deployment['version']} ({deployment['alias']}), "
            f"model at {deployment['storage_uri']}"
        )
    lines.append(f"MLflow: {mlflow_ui_command(tracking_uri)}")
    return "\n".join(lines)
