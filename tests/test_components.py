"""The KFP components: thin (only kfp at the top), one image, and every ``python_func`` run on
a tiny synthetic set, each stage's outputs feeding the next as in the pipeline."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest
from kfp import dsl
from tiny_model import TINY

import components
from components.behavior_features.component import behavior_features
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.export_onnx.component import export_onnx
from components.gate.component import gate
from components.image import IMAGE
from components.ingest.component import ingest
from components.register_model.component import register_model
from components.split.component import split
from components.text_features.component import text_features
from components.train_ranker.component import train_ranker
from llarapp.pipeline.summary import STAGES

CONTINUOUS = ("check_drift", "export_feedback", "decide_retrain", "start_canary")
COMPONENTS = [Path(components.__file__).parent / s / "component.py" for s in (*STAGES, *CONTINUOUS)]


# ----------------------------------------------------------------------------- static


@pytest.mark.parametrize("path", COMPONENTS, ids=(*STAGES, *CONTINUOUS))
def test_component_imports_only_kfp_at_top(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        allowed = ("kfp", "typing", "components.image")
        assert all(n in allowed or n.startswith("kfp.") for n in names), (
            f"{path}: top-level import of {names}; import the library inside the function"
        )


@pytest.mark.parametrize("path", COMPONENTS, ids=(*STAGES, *CONTINUOUS))
def test_component_one_image_no_installs_and_a_data_contract(path: Path) -> None:
    stage = path.parent.name
    comp = getattr(importlib.import_module(f"components.{stage}.component"), stage)
    container = comp.component_spec.implementation.container
    assert container.image == IMAGE  # named once, in components/image.py
    assert "llarapp-python" not in path.read_text()
    command = " ".join(container.command)
    assert "pip install" not in command  # the image has everything
    doc = comp.python_func.__doc__
    assert "Files in" in doc and "Files out" in doc and "Library:" in doc


def test_check_drift_shows_the_report_and_the_scores() -> None:
    from components.check_drift.component import check_drift

    outputs = check_drift.component_spec.outputs
    assert outputs["report"].type.startswith("system.HTML")
    assert outputs["scores"].type.startswith("system.Metrics")
    assert outputs["drift"].type == "Boolean"


def test_evaluate_shows_metrics_markdown_and_html() -> None:
    outputs = evaluate.component_spec.outputs
    assert outputs["metrics"].type.startswith("system.Metrics")
    assert outputs["table"].type.startswith("system.Markdown")
    assert outputs["table_html"].type.startswith("system.HTML")


# ----------------------------------------------------------------------------- python_func chain


def _out(cls, path: Path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Every component's python_func in pipeline order on 60 synthetic playlists."""
    from llarapp.data.synth import generate

    w = tmp_path_factory.mktemp("components")
    generate(60, w / "mpd", seed=5)
    tracking = f"sqlite:///{w / 'mlflow.db'}"
    a: dict = {"w": w, "tracking": tracking}
    a["data"] = _out(dsl.Dataset, w / "data")
    ingest.python_func(data_uri=str(w / "mpd"), max_playlists=0, data=a["data"])
    a["splits"] = _out(dsl.Dataset, w / "splits")
    split.python_func(data=a["data"], seed=1, valid_frac=0.1, test_frac=0.2, splits=a["splits"])
    a["text"] = _out(dsl.Dataset, w / "text")
    text_features.python_func(data=a["data"], text=a["text"])
    a["behavior"] = _out(dsl.Model, w / "behavior")
    behavior_features.python_func(
        data=a["data"],
        splits=a["splits"],
        als_config={"factors": 8.0, "iterations": 5.0},  # floats, as KFP passes a dict's ints
        tune_max_cases=40,
        behavior=a["behavior"],
    )
    a["model"] = _out(dsl.Model, w / "model")
    a["split_model"] = _out(dsl.Model, w / "split_model")
    a["train_metrics"] = _out(dsl.Metrics, w / "train_metrics")
    train_ranker.python_func(
        data=a["data"],
        splits=a["splits"],
        text=a["text"],
        train_config=json.loads(json.dumps(TINY.to_dict())),
        tracking_uri=tracking,
        base_model="",
        model=a["model"],
        split_model=a["split_model"],
        train_metrics=a["train_metrics"],
    )
    for name, cls in (
        ("evaluation", dsl.Dataset),
        ("metrics", dsl.Metrics),
        ("table", dsl.Markdown),
        ("table_html", dsl.HTML),
    ):
        a[name] = _out(cls, w / name)
    evaluate.python_func(
        data=a["data"],
        splits=a["splits"],
        text=a["text"],
        behavior=a["behavior"],
        model=a["split_model"],  # as the pipeline wires it
        baselines=["most_popular", "item_knn", "als", "title_knn"],
        tune_max_cases=40,
        evaluation=a["evaluation"],
        metrics=a["metrics"],
        table=a["table"],
        table_html=a["table_html"],
    )
    a["decision"] = _out(dsl.Artifact, w / "decision")
    a["passed"] = gate.python_func(
        data=a["data"],
        splits=a["splits"],
        text=a["text"],
        evaluation=a["evaluation"],
        model=a["split_model"],
        tracking_uri=tracking,
        model_name="llarapp",
        metric="ndcg",
        margin_over_baselines=-1.0,  # the tiny model need not beat the baselines here
        margin_over_champion=0.0,
        decision=a["decision"],
    )
    a["exported"] = _out(dsl.Model, w / "exported")
    export_onnx.python_func(
        model=a["model"],
        data=a["data"],
        splits=a["splits"],
        export_format="none",  # the ONNX path runs in the pipeline test
        export_options={},
        exported=a["exported"],
    )
    a["registration"] = _out(dsl.Artifact, w / "registration")
    a["registered"] = register_model.python_func(
        exported=a["exported"],
        evaluation=a["evaluation"],
        decision=a["decision"],
        tracking_uri=tracking,
        model_name="llarapp",
        data_uri=str(w / "mpd"),
        train_config=TINY.to_dict(),
        registration=a["registration"],
    )
    a["deployment"] = _out(dsl.Artifact, w / "deployment")
    deploy.python_func(
        exported=a["exported"],
        registration=a["registration"],
        decision=a["decision"],
        serving_target=str(w / "serving"),
        deployment=a["deployment"],
    )
    return a


@pytest.mark.integration
def test_ingest_and_split_write_their_tables(chain) -> None:
    data, splits = Path(chain["data"].path), Path(chain["splits"].path)
    for name in ("playlists.parquet", "tracks.parquet", "interactions.parquet"):
        assert (data / name).is_file()
    assert (data / "ingest_report.json").is_file()
    assert chain["data"].metadata["playlists_ok"] == 60
    assert {p.name for p in splits.iterdir()} >= {"folds.parquet", "cases.parquet", "split.json"}
    assert chain["splits"].metadata["train_playlists"] > 0


@pytest.mark.integration
def test_text_features_write_vectors_and_a_cache_shard(chain) -> None:
    import numpy as np

    from llarapp.text import TextEncoder

    text = Path(chain["text"].path)
    with np.load(text / "tracks.npz", allow_pickle=False) as z:
        n_tracks, dim = z["vectors"].shape
    assert dim == 384
    (shard,) = (text / "cache").glob("emb-features-*.npz")
    with np.load(shard, allow_pickle=False) as z:
        keys = set(z["keys"].tolist())
    assert len(keys) >= n_tracks
    assert TextEncoder(None).key("never embedded text") not in keys


@pytest.mark.integration
def test_behavior_features_use_the_given_config(chain) -> None:
    behavior = Path(chain["behavior"].path)
    config = json.loads((behavior / "als_config.json").read_text())
    assert config["factors"] == 8 and isinstance(config["factors"], int)
    assert (behavior / "als" / "model.json").is_file()
    assert json.loads((behavior / "tuning.json").read_text()) == []


@pytest.mark.integration
def test_train_ranker_writes_model_dir_and_metrics(chain) -> None:
    model = Path(chain["model"].path)
    for name in ("model.json", "arrays.npz", "train_report.json", "ranker/config.json"):
        assert (model / name).is_file(), name
    assert chain["model"].metadata["mlflow_run_id"]
    metrics = chain["train_metrics"].metadata
    assert 0 <= metrics["best_valid_ndcg"] <= 1
    # served: every playlist; the split run (what evaluate scores): the training fold only
    assert metrics["playlists_served"] == 60 > metrics["playlists_split_run"]
    assert (Path(chain["split_model"].path) / "model.json").is_file()
    assert (model / "reference" / "window.parquet").is_file()  # what `llarapp monitor` reads


@pytest.mark.integration
def test_evaluate_tables_per_category(chain) -> None:
    from llarapp.data.split import CATEGORY_NAMES

    result = json.loads((Path(chain["evaluation"].path) / "evaluation.json").read_text())
    assert set(result["models"]) == {"llara++", "most_popular", "item_knn", "als", "title_knn"}
    table = Path(chain["table"].path).read_text()
    assert "ndcg per category" in table
    assert any(c in table for c in CATEGORY_NAMES)
    page = Path(chain["table_html"].path).read_text()
    assert "<table>" in page and '<img alt="NDCG and R-precision' in page  # the chart, inline
    assert (Path(chain["evaluation"].path) / "chart.png").read_bytes()[:4] == b"\x89PNG"
    metrics = chain["metrics"].metadata
    assert 0 <= metrics["test_ndcg"] <= 1 and "baseline_item_knn_ndcg" in metrics


@pytest.mark.integration
def test_gate_export_register_deploy(chain) -> None:
    assert chain["passed"] is True
    decision = json.loads(Path(chain["decision"].path).read_text())
    assert decision["champion_version"] is None and decision["reason"].startswith("PASSED")
    exported = Path(chain["exported"].path)
    assert (exported / "onnx" / "manifest.json").is_file() and (exported / "ranker").is_dir()
    assert chain["registered"].version == "1" and chain["registered"].promoted is True
    registration = json.loads(Path(chain["registration"].path).read_text())
    assert registration["aliases"] == {"challenger": "1", "champion": "1"}
    pointer = json.loads((chain["w"] / "serving" / "current.json").read_text())
    assert pointer["version"] == "1" and pointer["alias"] == "champion"
    assert Path(pointer["storage_uri"]) == exported.resolve()


@pytest.mark.integration
def test_train_ranker_fine_tunes_the_registered_champion(chain, tmp_path) -> None:
    """The retraining path: the champion resolved from the registry inside the component, its
    ranker fine-tuned with LoRA (merged: a plain ranker again)."""
    from llarapp.models.base import Recommender

    model, split_model = _out(dsl.Model, tmp_path / "model"), _out(dsl.Model, tmp_path / "split")
    train_ranker.python_func(
        data=chain["data"],
        splits=chain["splits"],
        text=chain["text"],
        train_config={**json.loads(json.dumps(TINY.to_dict())), "epochs": 1.0},
        tracking_uri=chain["tracking"],
        base_model="models:/llarapp@champion",
        model=model,
        split_model=split_model,
        train_metrics=_out(dsl.Metrics, tmp_path / "metrics"),
    )
    assert model.metadata["base_model_version"] == "llarapp/1"  # the champion chain registered
    report = json.loads((tmp_path / "model" / "train_report.json").read_text())
    assert report["history"][-1]["mlflow_run_id"]
    tuned = Recommender.load(tmp_path / "model")
    assert not any("lora" in k for k in tuned.ranker.state_dict())
    with pytest.raises(Exception, match=r"nobody"):
        train_ranker.python_func(
            data=chain["data"], splits=chain["splits"], text=chain["text"],
            train_config={}, tracking_uri=chain["tracking"],
            base_model="models:/llarapp@nobody", model=_out(dsl.Model, tmp_path / "m2"),
            split_model=_out(dsl.Model, tmp_path / "s2"),
            train_metrics=_out(dsl.Metrics, tmp_path / "t2"),
        )  # fmt: skip


@pytest.mark.integration
def test_gate_refuses_a_model_that_only_ties_the_champion(chain, tmp_path) -> None:
    decision = _out(dsl.Artifact, tmp_path / "decision")
    passed = gate.python_func(
        data=chain["data"],
        splits=chain["splits"],
        text=chain["text"],
        evaluation=chain["evaluation"],  # the champion's own evaluation: a tie
        model=chain["split_model"],
        tracking_uri=chain["tracking"],
        model_name="llarapp",
        metric="ndcg",
        margin_over_baselines=-1.0,
        margin_over_champion=0.0,
        decision=decision,
    )
    verdict = json.loads(Path(decision.path).read_text())
    assert passed is False
    assert verdict["champion_version"] == "1" and "does not beat champion v1" in verdict["reason"]


def test_a_failing_stage_names_itself_and_the_cause(tmp_path, monkeypatch) -> None:
    from llarapp.pipeline.status import STATUS_VAR, StageError, read_status

    monkeypatch.setenv(STATUS_VAR, str(tmp_path / "status.jsonl"))
    with pytest.raises(StageError, match="stage 'ingest' failed: NoSourceFilesError"):
        ingest.python_func(
            data_uri=str(tmp_path / "missing"),
            max_playlists=0,
            data=_out(dsl.Dataset, tmp_path / "data"),
        )
    (entry,) = read_status(tmp_path / "status.jsonl")
    assert entry["stage"] == "ingest" and entry["status"] == "failed"
    assert "missing" in entry["message"]
