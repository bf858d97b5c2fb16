"""MLflow registry: the run, the registered version, the aliases; the gate keeps a worse model
from becoming champion; a live canary keeps the champion where it is."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from llarapp.pipeline.gate import GateConfig, decide
from llarapp.pipeline.registry import (
    CANARY,
    aliases,
    register_model,
    score_champion,
)

pytestmark = pytest.mark.integration


def _evaluation(ndcg: float, baselines: dict[str, float] | None = None) -> dict:
    def result(x: float) -> dict:
        overall = {"ndcg": x, "r_precision": x / 2, "clicks": 3.0, "recall@500": 0.5, "cases": 9}
        return {"overall": overall, "categories": {"title_only": {"ndcg": x}}}

    models = {"llara++": result(ndcg)}
    models.update({n: result(v) for n, v in (baselines or {"item_knn": 0.1}).items()})
    return {"candidate": "llara++", "models": models}


# ----------------------------------------------------------------------------- gate rule


def test_gate_rule_needs_strictly_better_than_baselines_and_champion() -> None:
    config = GateConfig(margin_over_baselines=0.01, margin_over_champion=0.0)
    ok = decide(_evaluation(0.30, {"als": 0.25, "item_knn": 0.28}), config)
    assert ok.passed and ok.best_baseline == "item_knn" and "no champion yet" in ok.reason
    close = decide(_evaluation(0.285, {"item_knn": 0.28}), config)
    assert not close.passed and "does not beat best baseline item_knn" in close.reason
    tie = decide(_evaluation(0.30), config, champion=("4", 0.30))
    assert not tie.passed and "does not beat champion v4" in tie.reason
    tolerant = decide(_evaluation(0.2), GateConfig(margin_over_baselines=-0.5))
    assert tolerant.passed


def test_gate_config_and_evaluation_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="margin_over_champion"):
        GateConfig(margin_over_champion=float("nan"))
    with pytest.raises(ValueError, match="gate metric 'mrr'"):
        decide(_evaluation(0.3), GateConfig(metric="mrr"))
    with pytest.raises(ValueError, match="no results for the candidate"):
        decide({"candidate": "llara++", "models": {}}, GateConfig())


# ----------------------------------------------------------------------------- registry


@pytest.fixture
def exported(tiny, tmp_path) -> Path:
    """A copy of the tiny model with an ``onnx/manifest.json`` (the export stage's output)."""
    _, _, model_dir, _ = tiny
    out = tmp_path / "exported"
    shutil.copytree(model_dir, out)
    (out / "onnx").mkdir()
    (out / "onnx" / "manifest.json").write_text(json.dumps({"chosen": "pytorch_fp32"}))
    return out


def test_register_logs_run_registers_version_and_sets_aliases(tiny, exported, tmp_path) -> None:
    from mlflow import MlflowClient

    data_dir, split_dir, _, _ = tiny
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluation = _evaluation(0.3)
    gate = decide(evaluation, GateConfig()).to_dict()
    first = register_model(
        exported,
        evaluation=evaluation,
        gate=gate,
        tracking_uri=uri,
        params={"data_uri": "s3://data/mpd"},
    )
    assert first["version"] == "1" and first["promoted"] and first["live_canary"] is None
    assert aliases(uri) == {"challenger": "1", "champion": "1"}

    client = MlflowClient(uri)
    run = client.get_run(first["run_id"])
    assert run.data.params["pipeline.data_uri"] == "s3://data/mpd"
    assert run.data.metrics["test_ndcg"] == pytest.approx(0.3)
    assert "test_recall_at_500" in run.data.metrics
    assert run.data.tags["gate.passed"] == "True"
    files = {f.path for f in client.list_artifacts(first["run_id"], "model")}
    assert {"model/ranker", "model/onnx", "model/model.json"} <= files
    onnx = {f.path for f in client.list_artifacts(first["run_id"], "model/onnx")}
    assert "model/onnx/manifest.json" in onnx
    assert client.get_model_version("llarapp", "1").run_id == first["run_id"]

    # the champion downloads and scores on the test cases
    version, score = score_champion(uri, "llarapp", data_dir, split_dir)
    assert version == "1" and 0 <= score <= 1

    # with a live canary, a passing version is only the challenger
    client.set_registered_model_alias("llarapp", CANARY, "1")
    second = register_model(exported, evaluation=evaluation, gate=gate, tracking_uri=uri)
    assert second["version"] == "2" and not second["promoted"] and second["live_canary"] == "1"
    assert aliases(uri) == {"challenger": "2", "champion": "1", "canary": "1"}


def test_worse_model_is_not_registered_as_champion(tiny, exported, tmp_path) -> None:
    """The champion is scored on the same test cases; a candidate below it fails the gate,
    and registering it is refused, so the champion stays."""
    data_dir, split_dir, _, _ = tiny
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluation = _evaluation(0.3, {"item_knn": 0.0})
    register_model(
        exported,
        evaluation=evaluation,
        gate=decide(evaluation, GateConfig()).to_dict(),
        tracking_uri=uri,
    )
    champion = score_champion(uri, "llarapp", data_dir, split_dir)
    worse = copy.deepcopy(evaluation)
    worse["models"]["llara++"]["overall"]["ndcg"] = champion[1] - 0.01
    verdict = decide(worse, GateConfig(), champion).to_dict()
    assert not verdict["passed"] and "does not beat champion v1" in verdict["reason"]
    with pytest.raises(ValueError, match="failed the gate"):
        register_model(exported, evaluation=worse, gate=verdict, tracking_uri=uri)
    assert aliases(uri) == {"challenger": "1", "champion": "1"}


def test_register_refuses_a_model_without_export(tiny, tmp_path) -> None:
    _, _, model_dir, _ = tiny
    evaluation = _evaluation(0.3)
    with pytest.raises(ValueError, match=r"onnx/manifest\.json"):
        register_model(
            model_dir,
            evaluation=evaluation,
            gate=decide(evaluation, GateConfig()).to_dict(),
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )


def test_deploy_pointer_is_written_atomically_for_the_server(exported, tmp_path) -> None:
    from llarapp.pipeline.deploy import deploy, read_pointer

    registration = {
        "model_name": "llarapp",
        "version": "3",
        "promoted": True,
        "model_uri": "models:/llarapp/3",
        "run_id": "r",
        "tracking_uri": "sqlite:///x.db",
    }
    result = deploy(exported, registration, str(tmp_path / "serving"), gate={"metric": "ndcg"})
    pointer = read_pointer(tmp_path / "serving")
    assert pointer == {k: v for k, v in result.items() if k != "written_to"}
    assert pointer["alias"] == "champion" and pointer["storage_uri"] == str(exported.resolve())
    assert [p.name for p in (tmp_path / "serving").iterdir()] == ["current.json"]
    held = deploy(exported, {**registration, "promoted": False}, str(tmp_path / "serving"))
    assert Path(held["written_to"]).name == "challenger.json"
    assert read_pointer(tmp_path / "serving")["version"] == "3"
