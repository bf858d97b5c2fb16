"""The pipelines: golden YAML, the graph's settings (the continuous pipeline's own structure
too), and the training pipeline run under ``kfp.local`` (twice: the second run reuses cached
stages and must not displace the champion), plus a run that fails part-way. The continuous
pipeline's local run: test_continuous.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_model import TINY

from components.image import IMAGE
from pipelines import runner

QUICK_EXPORT = {
    "encoder": False,
    "max_valid_cases": 20,
    "latency_runs": 3,
    "warmup_runs": 1,
    "throughput_batch": 4,
    "throughput_runs": 1,
    "max_calibration_cases": 16,
    "calibration_playlists": 8,
}


@pytest.mark.parametrize("name", sorted(runner.PIPELINES))
def test_golden_yaml(name: str, tmp_path: Path) -> None:
    fresh = runner.compile_pipeline(name, tmp_path / f"{name}.yaml")
    committed = runner.package_path(name)
    assert fresh.read_text() == committed.read_text(), (
        f"{committed.name} is stale: run `llarapp pipeline compile` and commit the YAML"
    )


def _spec(name: str) -> dict:
    return yaml.safe_load(runner.package_path(name).read_text())


def _dag(spec: dict, holding: str) -> tuple[str, dict]:
    """The (name, tasks) of the DAG -- the root or a condition's component -- holding task
    ``holding``."""
    dags = {"root": spec["root"]["dag"]["tasks"]}
    for name, comp in spec["components"].items():
        if "dag" in comp:
            dags[name] = comp["dag"]["tasks"]
    (found,) = [(name, tasks) for name, tasks in dags.items() if holding in tasks]
    return found


@pytest.mark.parametrize("name", sorted(runner.PIPELINES))
def test_graph_gate_retries_resources_caching(name: str) -> None:
    """The training graph's settings, wherever it sits (the continuous pipeline runs it inside
    its retrain condition)."""
    spec = _spec(name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_uri", "train_config", "margin_over_champion", "tracking_uri"} <= set(params)
    _, tasks = _dag(spec, "gate")
    (cond,) = [t for t in tasks.values() if "gate" in t.get("dependentTasks", [])
               and "triggerPolicy" in t]  # fmt: skip
    assert "pipelinechannel--gate-Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    continuous = name == "continuous"
    stages = {"export-onnx", "register-model", "deploy"} | (
        {"start-canary"} if continuous else set()
    )
    assert set(inner) == stages
    every = {**tasks, **inner}
    for io_stage in ("ingest", "gate", "register-model", "deploy"):
        assert every[io_stage]["retryPolicy"]["maxRetryCount"] == 2
    for side_effect in ("gate", "register-model", "deploy"):
        assert not every[side_effect]["cachingOptions"].get("enableCache", False)
    # the continuous pipeline's data and feedback grow between runs: ingest is not cached
    assert every["ingest"]["cachingOptions"].get("enableCache", False) is not continuous
    for cached in ("split", "text-features", "train-ranker", "evaluate"):
        assert every[cached]["cachingOptions"]["enableCache"] is True
    promote = every["register-model"]["inputs"]["parameters"]["promote"]
    assert promote == {"runtimeValue": {"constant": not continuous}}
    executors = spec["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == IMAGE
        assert container["resources"]["cpuRequest"] > 0
        assert container["resources"]["memoryRequest"] > 0


def test_continuous_pipeline_checks_first_and_retrains_the_champion_only_if_called_for() -> None:
    from llarapp.monitoring import DEFAULT_WINDOW

    spec = _spec("continuous")
    assert spec["pipelineInfo"]["name"] == "llarapp-continuous"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_uri", "champion", "request_log", "events", "feedback_out", "window",
            "min_feedback", "server_url", "canary_percent", "train_config", "tracking_uri",
            "model_name", "serving_target", "margin_over_baselines",
            "margin_over_champion"} <= set(params)  # fmt: skip
    assert params["champion"]["defaultValue"] == "models:/llarapp@champion"
    assert params["window"]["defaultValue"] == DEFAULT_WINDOW
    assert params["canary_percent"]["defaultValue"] == 10.0
    assert params["train_config"]["defaultValue"] == {"epochs": 3}  # LoRA: lora_r defaults to 8
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"check-drift", "export-feedback", "decide-retrain", "condition-1"}
    assert set(root["decide-retrain"]["dependentTasks"]) == {"check-drift", "export-feedback"}
    # live state: never cached
    for live in ("check-drift", "export-feedback", "decide-retrain"):
        assert not root[live]["cachingOptions"].get("enableCache", False)
    retrain = root["condition-1"]
    assert retrain["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--decide-retrain-Output'] == true"
    )
    name, sub = _dag(spec, "train-ranker")
    assert name == retrain["componentRef"]["name"]
    base = sub["train-ranker"]["inputs"]["parameters"]["base_model"]
    assert base == {"componentInputParameter": "pipelinechannel--champion"}
    feedback = sub["ingest"]["inputs"]["parameters"]["feedback_uri"]
    assert feedback == {"componentInputParameter": "pipelinechannel--export-feedback-feedback_uri"}
    _, gated = _dag(spec, "start-canary")
    assert not gated["start-canary"]["cachingOptions"].get("enableCache", False)
    assert gated["start-canary"]["inputs"]["artifacts"]["deployment"]["taskOutputArtifact"] == {
        "outputArtifactKey": "deployment",
        "producerTask": "deploy",
    }
    outputs = spec["root"]["outputDefinitions"]
    assert set(outputs["parameters"]) == {"drift", "retrain"}
    assert set(outputs["artifacts"]) == {
        "drift_report", "drift_scores", "feedback_batch", "retrain_decision",
    }  # fmt: skip
    assert outputs["artifacts"]["drift_report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["artifacts"]["drift_scores"]["artifactType"]["schemaTitle"] == "system.Metrics"


def _arguments(tmp: Path, data: Path, **extra) -> dict:
    from llarapp.pipeline.stages import export_available

    return {
        "data_uri": str(data),
        "split_seed": 1,
        "train_config": TINY.to_dict(),
        "als_config": {"factors": 8, "iterations": 5},
        "tune_max_cases": 40,
        "margin_over_baselines": -1.0,  # the tiny model need not beat the baselines here
        "export_format": "onnx" if export_available() else "none",
        "export_options": QUICK_EXPORT,
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "serving_target": str(tmp / "serving"),
        **extra,
    }


@pytest.mark.integration
@pytest.mark.slow
def test_local_pipeline_registers_deploys_then_reuses_cache(tmp_path: Path) -> None:
    from llarapp.data.synth import generate
    from llarapp.pipeline.registry import aliases
    from llarapp.pipeline.status import read_status
    from llarapp.pipeline.summary import STAGES, format_summary

    generate(60, tmp_path / "mpd", seed=5)
    args = _arguments(tmp_path, tmp_path / "mpd")

    first = runner.run_local("training", args, tmp_path / "work")
    assert first["ok"], first["error"]
    assert first["outputs"]["gate_passed"] is True
    ran = [e["stage"] for e in read_status(first["status_file"])]
    assert sorted(ran) == sorted(STAGES)
    assert aliases(args["tracking_uri"]) == {"challenger": "1", "champion": "1"}
    pointer = json.loads((tmp_path / "serving" / "current.json").read_text())
    assert pointer["version"] == "1"
    assert (Path(pointer["storage_uri"]) / "onnx" / "manifest.json").is_file()
    # the evaluate step's KFP UI artifacts: Metrics, Markdown, and HTML opening with the chart
    evaluate = Path(first["outputs"]["evaluation"]).parent
    assert json.loads((evaluate / "metrics").read_text())["test_ndcg"] > 0
    assert "ndcg per category" in (evaluate / "table").read_text()
    assert '<img alt="NDCG and R-precision' in (evaluate / "table_html").read_text()
    summary = format_summary(first, tracking_uri=args["tracking_uri"])
    assert "ndcg per category" in summary and "llarapp v1" in summary and "mlflow ui" in summary

    second = runner.run_local("training", args, tmp_path / "work")
    assert second["ok"], second["error"]
    # cached: only the gate (it reads the registry) ran; the same model only ties the champion
    assert [e["stage"] for e in read_status(second["status_file"])] == ["gate"]
    assert second["outputs"]["gate_passed"] is False
    decision = json.loads(Path(second["outputs"]["decision"]).read_text())
    assert "does not beat champion v1" in decision["reason"]
    assert aliases(args["tracking_uri"]) == {"challenger": "1", "champion": "1"}
    assert "champion is unchanged" in format_summary(second, tracking_uri=args["tracking_uri"])


@pytest.mark.integration
def test_failed_stage_keeps_earlier_outputs_and_says_why(tmp_path: Path) -> None:
    from llarapp.data.synth import generate
    from llarapp.pipeline.summary import format_summary

    generate(6, tmp_path / "mpd", seed=5)  # a split needs at least 10 playlists
    args = _arguments(tmp_path, tmp_path / "mpd")
    result = runner.run_local("training", args, tmp_path / "work", cache=False)
    assert not result["ok"] and "split" in result["error"]
    run_dir = Path(result["run_dir"])
    assert (run_dir / "ingest" / "data" / "playlists.parquet").is_file()
    summary = format_summary(result, tracking_uri=args["tracking_uri"])
    assert "stage split failed: ValueError" in summary and "at least 10" in summary
    assert not (tmp_path / "serving" / "current.json").exists()
