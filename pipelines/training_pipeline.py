"""The LLaRA++ training pipeline (KFP v2). Run this file to compile it beside itself.

    python -m pipelines.training_pipeline            # -> pipelines/training_pipeline.yaml
    llarapp pipeline run --local --data runs/synth   # run it on this machine (kfp.local)
    llarapp pipeline submit --host URL --data s3://bucket/mpd

Graph: ingest -> split -> {text_features, behavior_features} -> train_ranker -> evaluate -> gate
-> If(gate passed): export_onnx -> register_model -> deploy. Parameters: the data URI and every
hyperparameter (``train_config``: LlaraTrainConfig fields; ``als_config``: ALSConfig fields or
empty to tune), the gate's metric and margins, the MLflow tracking URI and model name, and
where deploy points the model server.
"""

from pathlib import Path

from kfp import compiler, dsl

from pipelines.graph import PipelineOutputs, pipeline_outputs, training_graph

BASELINES = ["most_popular", "item_knn", "als", "title_knn"]


@dsl.pipeline(
    name="llarapp-training",
    description="LLaRA++: ingest MPD slices, train, evaluate against baselines, gate, "
    "export to ONNX, register in MLflow, deploy.",
)
def training_pipeline(
    data_uri: str,
    max_playlists: int = 0,
    split_seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    als_config: dict = {},  # noqa: B006 (KFP literal default)
    tune_max_cases: int = 400,
    train_config: dict = {},  # noqa: B006
    baselines: list = BASELINES,
    gate_metric: str = "ndcg",
    margin_over_baselines: float = 0.0,
    margin_over_champion: float = 0.0,
    export_format: str = "onnx",
    export_options: dict = {},  # noqa: B006
    tracking_uri: str = "",
    model_name: str = "llarapp",
    serving_target: str = "",
) -> PipelineOutputs:
    return pipeline_outputs(training_graph(**locals()), PipelineOutputs)


PACKAGE = Path(__file__).with_suffix(".yaml")

if __name__ == "__main__":
    compiler.Compiler().compile(training_pipeline, str(PACKAGE))
    print(f"wrote {PACKAGE}")
