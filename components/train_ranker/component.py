"""Train ranker: LLaRA++ (projector, two-stage retriever, curriculum-trained HF ranker)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ranker(
    data: Input[Dataset],
    splits: Input[Dataset],
    text: Input[Dataset],
    train_config: dict,
    tracking_uri: str,
    base_model: str,
    model: Output[Model],
    split_model: Output[Model],
    train_metrics: Output[Metrics],
) -> None:
    """Train LLaRA++ on the split (ranker on training-fold cases, early stopping on validation
    NDCG), then refit its features, ALS, co-occurrence, title index and artist statistics on
    every playlist: ``model`` is what is exported and served.

    Library: :func:`llarapp.training.llara.train_llara` (via
    :func:`llarapp.pipeline.stages.train_ranker`). ``train_config``: fields of
    :class:`~llarapp.training.llara.LlaraTrainConfig` (empty: the defaults). ``tracking_uri``:
    MLflow (empty: ``$MLFLOW_TRACKING_URI``, else SQLite under ``runs/``). ``base_model``:
    empty trains a new ranker; a model URI (``models:/llarapp@champion``, resolved in this
    component against that registry) fine-tunes its ranker with LoRA (the retraining path).

    Files in: ``data``, ``splits``, ``text`` (its cache shard warms the embedding cache).

    Files out (``model``, MODEL_DIR, fitted on every playlist; ``split_model``, the same
    ranker over the training fold's fit: the one evaluate scores on the test fold):
    ``model.json``, ``arrays.npz`` (catalogue, text float16,
    behavior float32, title and playlist vectors), ``als/``, ``track_projector.safetensors``,
    ``ranker/`` (Hugging Face ``save_pretrained``),
    ``train_report.json``; an MLflow run (params, per-epoch metrics, the ranker).
    ``train_metrics``: best validation NDCG, case counts (also as JSON at its path).
    """
    import json
    from pathlib import Path

    from llarapp.pipeline.stages import train_ranker as train
    from llarapp.pipeline.status import run_stage

    with run_stage("train_ranker"):
        report = train(
            data.path,
            splits.path,
            text.path,
            model.path,
            train_config,
            tracking_uri,
            split_run_dir=split_model.path,
            base_model=base_model,
        )
    model.metadata["mlflow_run_id"] = report["mlflow_run_id"]
    model.metadata["framework"] = "llarapp+transformers"
    if report["base_model"]:
        model.metadata["base_model"] = report["base_model"]["uri"]
        model.metadata["base_model_version"] = report["base_model"]["version"]
    train_metrics.log_metric("best_valid_ndcg", report["best_valid_ndcg"])
    train_metrics.log_metric("train_cases", report["train_cases"])
    train_metrics.log_metric("valid_cases", report["valid_cases"])
    train_metrics.log_metric("playlists_served", report["playlists"]["served"])
    train_metrics.log_metric("playlists_split_run", report["playlists"]["split_run"])
    # a file at the path too: kfp.local's cache treats an output without one as missing
    Path(train_metrics.path).write_text(json.dumps(train_metrics.metadata, indent=2))
