"""Decide retrain: drift or enough feedback -> the one bool the pipeline's condition reads."""

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def decide_retrain(
    drift: bool,
    drift_reason: str,
    new_feedback: int,
    feedback_out: str,
    min_feedback: int,
    decision: Output[Markdown],
    summary: Output[Metrics],
) -> bool:
    """Retrain when the traffic drifted or ``min_feedback`` feedback events await a retraining.

    Library: :func:`llarapp.pipeline.stages.decide_retrain`. Feedback awaiting a retraining:
    the events of the batches in ``feedback_out`` exported since the last retraining started
    (``feedback_out/retrain_mark.json``, moved here when it retrains). Not cached: it reads and
    moves that mark.

    Files in: ``feedback_out`` (``feedback-*/batch.json``, ``retrain_mark.json``).

    Files out: ``decision`` (Markdown: the decision and why, the figures it used); ``summary``
    (Metrics: ``retrain``, ``drift`` (1/0), ``new_feedback``, ``pending_feedback``,
    ``min_feedback``; also as JSON at its path); ``feedback_out/retrain_mark.json`` when it
    retrains. Outputs whether to retrain (the pipeline's ``dsl.If``; one ``Output``, the form
    ``kfp.local`` evaluates in a condition).
    """
    import json
    from pathlib import Path

    from llarapp.pipeline.stages import decide_retrain as decide
    from llarapp.pipeline.status import run_stage

    with run_stage("decide_retrain"):
        result = decide(drift, drift_reason, feedback_out, min_feedback)
        lines = [
            f"## {'Retrain' if result['retrain'] else 'No retraining'}",
            "",
            result["reason"],
            "",
            "| figure | value |",
            "|---|---|",
            f"| drift | {result['drift']} |",
            f"| feedback exported by this run | {new_feedback} |",
            f"| feedback awaiting a retraining | {result['pending_feedback']} |",
            f"| min_feedback | {min_feedback} |",
            f"| batches awaiting | {', '.join(result['pending_batches']) or 'none'} |",
        ]
        Path(decision.path).write_text("\n".join(lines) + "\n")
        summary.log_metric("retrain", float(result["retrain"]))
        summary.log_metric("drift", float(result["drift"]))
        summary.log_metric("new_feedback", new_feedback)
        summary.log_metric("pending_feedback", result["pending_feedback"])
        summary.log_metric("min_feedback", min_feedback)
        Path(summary.path).write_text(json.dumps(summary.metadata, indent=2))
    print(result["reason"])
    return result["retrain"]
