"""The LLaRA++ continuous pipeline (KFP v2): the recurring run that closes the loop. Run this
file to compile it beside itself.

    python -m pipelines.continuous_pipeline   # -> pipelines/continuous_pipeline.yaml

Graph: {check_drift (the champion's latest ``window`` requests against its reference profile),
export_feedback (the feedback since the last export, exactly once)} -> decide_retrain (drift,
or at least ``min_feedback`` feedback events awaiting a retraining) -> ``dsl.If(retrain)``: the
retraining sub-graph of :func:`pipelines.graph.training_graph` -- ingest (fresh data + every
exported feedback batch) -> ... -> train (LoRA fine-tune of the ``champion``'s ranker, the
alias resolved inside the train component) -> evaluate -> gate (against the champion, on the
fresh test cases) -> ``dsl.If(passed)``: export -> register (``challenger`` only) -> deploy
(``challenger.json``) -> start_canary (``POST {server_url}/v1/canary``, or the request for a
cluster controller when ``server_url`` is empty).
"""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from components.check_drift.component import check_drift
from components.decide_retrain.component import decide_retrain
from components.export_feedback.component import export_feedback
from components.start_canary.component import start_canary
from llarapp.pipeline.canary import DEFAULT_PERCENT
from pipelines.graph import setup, training_graph
from pipelines.training_pipeline import BASELINES


class ContinuousOutputs(NamedTuple):
    drift: bool
    drift_report: HTML
    drift_scores: Metrics
    feedback_batch: Dataset
    retrain: bool
    retrain_decision: Markdown


@dsl.pipeline(
    name="llarapp-continuous",
    description="LLaRA++ closed loop: check drift and feedback volume; when they call for it, "
    "fine-tune the champion on fresh data and feedback, gate it, register it as challenger "
    "and start its canary.",
)
def continuous_pipeline(
    data_uri: str,
    request_log: str,
    events: str,
    feedback_out: str,
    champion: str = "models:/llarapp@champion",
    # llarapp.monitoring.DEFAULT_WINDOW (a test holds them equal; importing it here would load
    # Evidently whenever the pipelines are compiled)
    window: int = 500,
    min_feedback: int = 200,
    server_url: str = "",
    canary_percent: float = DEFAULT_PERCENT,
    max_playlists: int = 0,
    split_seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.2,
    als_config: dict = {},  # noqa: B006 (KFP literal default)
    tune_max_cases: int = 400,
    train_config: dict = {"epochs": 3},  # noqa: B006 (one key: a compiled dict keeps no order)
    baselines: list = BASELINES,
    gate_metric: str = "ndcg",
    margin_over_baselines: float = 0.0,
    margin_over_champion: float = 0.002,
    export_format: str = "onnx",
    export_options: dict = {},  # noqa: B006
    tracking_uri: str = "",
    model_name: str = "llarapp",
    serving_target: str = "",
) -> ContinuousOutputs:
    drift = setup(
        check_drift(
            champion=champion, request_log=request_log, window=window, tracking_uri=tracking_uri
        ),
        "check-drift",
        io=True,
        cache=False,  # the request log grows between runs
    )
    feedback = setup(
        export_feedback(
            events=events, feedback_out=feedback_out, champion=champion, tracking_uri=tracking_uri
        ),
        "export-feedback",
        io=True,  # a retry is safe: the export is exactly once
        cache=False,  # every run exports what is new
    )
    decision = setup(
        decide_retrain(
            drift=drift.outputs["drift"],
            drift_reason=drift.outputs["reason"],
            new_feedback=feedback.outputs["events"],
            feedback_out=feedback_out,
            min_feedback=min_feedback,
        ),
        "decide-retrain",
        cache=False,  # reads and moves the retraining mark
    )

    def canary(deployed: dsl.PipelineTask) -> None:
        setup(
            start_canary(
                deployment=deployed.outputs["deployment"],
                server_url=server_url,
                canary_percent=canary_percent,
            ),
            "start-canary",
            io=True,
            cache=False,  # moves live traffic
        )

    # the single Output: the form kfp.local's condition evaluator resolves
    with dsl.If(decision.outputs["Output"] == True, name="retrain"):  # noqa: E712
        training_graph(
            data_uri=data_uri,
            max_playlists=max_playlists,
            split_seed=split_seed,
            valid_frac=valid_frac,
            test_frac=test_frac,
            als_config=als_config,
            tune_max_cases=tune_max_cases,
            train_config=train_config,
            baselines=baselines,
            base_model=champion,
            gate_metric=gate_metric,
            margin_over_baselines=margin_over_baselines,
            margin_over_champion=margin_over_champion,
            export_format=export_format,
            export_options=export_options,
            tracking_uri=tracking_uri,
            model_name=model_name,
            serving_target=serving_target,
            feedback_uri=feedback.outputs["feedback_uri"],
            live_data=True,
            promote=False,
            after_deploy=canary,
        )
    return ContinuousOutputs(
        drift=drift.outputs["drift"],
        drift_report=drift.outputs["report"],
        drift_scores=drift.outputs["scores"],
        feedback_batch=feedback.outputs["batch"],
        retrain=decision.outputs["Output"],
        retrain_decision=decision.outputs["decision"],
    )


PACKAGE = Path(__file__).with_suffix(".yaml")

if __name__ == "__main__":
    compiler.Compiler().compile(continuous_pipeline, str(PACKAGE))
    print(f"wrote {PACKAGE}")
