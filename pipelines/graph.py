"""The stage graph the pipelines share: ingest -> ... -> evaluate -> gate -> If(passed) ->
export -> register -> deploy, with retries, resource requests and caching set per stage; the
continuous pipeline runs it inside its own condition, as its retraining sub-graph."""

from collections.abc import Callable
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Markdown, Model

from components.behavior_features.component import behavior_features
from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.export_onnx.component import export_onnx
from components.gate.component import gate
from components.ingest.component import ingest
from components.register_model.component import register_model
from components.split.component import split
from components.text_features.component import text_features
from components.train_ranker.component import train_ranker

# (cpu request, memory request) per stage; the two-core laptop and a cluster node alike
RESOURCES = {
    "ingest": ("1", "2G"),
    "split": ("1", "2G"),
    "text-features": ("2", "4G"),
    "behavior-features": ("2", "4G"),
    "train-ranker": ("2", "8G"),
    "evaluate": ("2", "6G"),
    "gate": ("2", "6G"),
    "export-onnx": ("2", "6G"),
    "register-model": ("500m", "1G"),
    "deploy": ("500m", "1G"),
    "check-drift": ("2", "4G"),
    "export-feedback": ("500m", "1G"),
    "decide-retrain": ("500m", "1G"),
    "start-canary": ("500m", "1G"),
}


class PipelineOutputs(NamedTuple):
    evaluation: Dataset
    table: Markdown
    model: Model
    gate_passed: bool
    decision: Artifact


IO_RETRY = {"num_retries": 2, "backoff_duration": "15s", "backoff_factor": 2.0}


def setup(task: dsl.PipelineTask, name: str, *, io: bool = False, cache: bool = True):
    """Name the task, request its :data:`RESOURCES`, set its caching, and retry it when ``io``
    (:data:`IO_RETRY`: it talks to storage, the registry or a server)."""
    cpu, memory = RESOURCES[name]
    task.set_display_name(name).set_cpu_request(cpu).set_memory_request(memory)
    task.set_caching_options(cache)
    if io:
        task.set_retry(**IO_RETRY)
    return task


def training_graph(
    *,
    data_uri: str,
    max_playlists: int,
    split_seed: int,
    valid_frac: float,
    test_frac: float,
    als_config: dict,
    tune_max_cases: int,
    train_config: dict,
    baselines: list,
    base_model: str = "",
    gate_metric: str,
    margin_over_baselines: float,
    margin_over_champion: float,
    export_format: str,
    export_options: dict,
    tracking_uri: str,
    model_name: str,
    serving_target: str,
    feedback_uri: str = "",
    live_data: bool = False,
    promote: bool = True,
    after_deploy: Callable[[dsl.PipelineTask], object] | None = None,
) -> dict[str, dsl.PipelineTask]:
    """Add the stages to the pipeline being defined (call inside a ``@dsl.pipeline``).

    Args:
        feedback_uri: Exported feedback the ingest stage adds to the data (empty: none).
        live_data: ``data_uri`` and the feedback are folders that grow between runs (the
            continuous pipeline): ingest is not cached.
        promote: Register the passing model as ``champion`` too when no canary is live;
            False: ``challenger`` only (deploy then writes ``challenger.json``).
        after_deploy: Adds more stages after deploy, in the gate-passed branch; called with the
            deploy task.

    Returns:
        The tasks whose outputs the pipeline returns: ``train``, ``evaluate``, ``gate``.
    """
    data = setup(
        ingest(data_uri=data_uri, max_playlists=max_playlists, feedback_uri=feedback_uri),
        "ingest",
        io=True,
        cache=not live_data,
    )
    splits = setup(
        split(
            data=data.outputs["data"], seed=split_seed, valid_frac=valid_frac, test_frac=test_frac
        ),
        "split",
    )
    text = setup(text_features(data=data.outputs["data"]), "text-features")
    behavior = setup(
        behavior_features(
            data=data.outputs["data"],
            splits=splits.outputs["splits"],
            als_config=als_config,
            tune_max_cases=tune_max_cases,
        ),
        "behavior-features",
    )
    train = setup(
        train_ranker(
            data=data.outputs["data"],
            splits=splits.outputs["splits"],
            text=text.outputs["text"],
            train_config=train_config,
            tracking_uri=tracking_uri,
            base_model=base_model,
        ),
        "train-ranker",
    )
    scored = setup(
        evaluate(
            data=data.outputs["data"],
            splits=splits.outputs["splits"],
            text=text.outputs["text"],
            behavior=behavior.outputs["behavior"],
            model=train.outputs["split_model"],  # the served model has seen the test fold
            baselines=baselines,
            tune_max_cases=tune_max_cases,
        ),
        "evaluate",
    )
    verdict = setup(
        gate(
            data=data.outputs["data"],
            splits=splits.outputs["splits"],
            text=text.outputs["text"],
            evaluation=scored.outputs["evaluation"],
            model=train.outputs["split_model"],
            tracking_uri=tracking_uri,
            model_name=model_name,
            metric=gate_metric,
            margin_over_baselines=margin_over_baselines,
            margin_over_champion=margin_over_champion,
        ),
        "gate",
        io=True,
        cache=False,  # reads the registry: the champion changes between runs
    )
    with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        exported = setup(
            export_onnx(
                model=train.outputs["model"],
                data=data.outputs["data"],
                splits=splits.outputs["splits"],
                export_format=export_format,
                export_options=export_options,
            ),
            "export-onnx",
        )
        registered = setup(
            register_model(
                exported=exported.outputs["exported"],
                evaluation=scored.outputs["evaluation"],
                decision=verdict.outputs["decision"],
                tracking_uri=tracking_uri,
                model_name=model_name,
                data_uri=data_uri,
                train_config=train_config,
                promote=promote,
            ),
            "register-model",
            io=True,
            cache=False,  # writes the registry
        )
        deployed = setup(
            deploy(
                exported=exported.outputs["exported"],
                registration=registered.outputs["registration"],
                decision=verdict.outputs["decision"],
                serving_target=serving_target,
            ),
            "deploy",
            io=True,
            cache=False,  # writes the serving pointer
        )
        if after_deploy is not None:
            after_deploy(deployed)
    return {"train": train, "evaluate": scored, "gate": verdict}


def pipeline_outputs(tasks: dict[str, dsl.PipelineTask], outputs_type: type):
    """The pipeline's outputs: what the local runner's summary reads."""
    return outputs_type(
        evaluation=tasks["evaluate"].outputs["evaluation"],
        table=tasks["evaluate"].outputs["table"],
        model=tasks["train"].outputs["model"],
        gate_passed=tasks["gate"].outputs["Output"],
        decision=tasks["gate"].outputs["decision"],
    )
