"""The pipelines: golden YAML, the graph's settings, and the training pipeline run under
``kfp.local`` (twice: the second run reuses cached stages and must not displace the champion),
plus a run that fails part-way."""

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


@pytest.mark.parametrize("name", sorted(runner.PIPELINES))
def test_graph_gate_retries_resources_caching(name: str) -> None:
    spec = _spec(name)
    root = spec["root"]
    params = root["inputDefinitions"]["parameters"]
    assert {"data_uri", "train_config", "margin_over_champion", "tracking_uri"} <= set(params)
    tasks = root["dag"]["tasks"]
    cond = tasks["condition-1"]
    assert "gate" in cond["dependentTasks"]
    assert "pipelinechannel--gate-Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"export-onnx", "register-model", "deploy"}
    every = {**tasks, **inner}
    for io_stage in ("ingest", "gate", "register-model", "deploy"):
        assert every[io_stage]["retryPolicy"]["maxRetryCount"] == 2
    for side_effect in ("gate", "register-model", "deploy"):
        assert not every[side_effect]["cachingOptions"].get("enableCache", False)
    for cached in ("ingest", "split", "text-features", "train-ranker", "evaluate"):
        assert every[cached]["cachingOptions"]["enableCache"] is True
    executors = spec["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == IMAGE
        assert container["resources"]["cpuRequest"] > 0
        assert container["resources"]["memoryRequest"] > 0


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
