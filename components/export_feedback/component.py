"""Export feedback: the likes and dislikes since the last export, each exactly once."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_feedback(
    events: str,
    feedback_out: str,
    champion: str,
    tracking_uri: str,
    batch: Output[Dataset],
) -> NamedTuple("FeedbackOutputs", [("events", int), ("feedback_uri", str)]):
    """Turn the feedback stored since the last export into one batch of training data.

    Library: :func:`llarapp.pipeline.stages.export_feedback_batch` (around
    :func:`llarapp.serving.feedback.export_feedback`, as ``llarapp feedback export``: exactly
    once -- a crash or a retry neither drops nor doubles an event; two exports at once are
    refused). ``champion`` (resolved as in ``check_drift``) names the tracks. Not cached: every
    run exports what is new.

    Files in: ``events`` (the SQLite event store ``llarapp serve --events`` writes), the
    champion's ``track_names.parquet``.

    Files out: ``feedback_out/feedback-A-B/`` (``mpd.slice.A-B.json``: fresh playlists of the
    liked tracks; ``negatives.parquet``: the disliked ones; ``batch.json``: the counts), kept
    there for the retraining to ingest, and its copy in ``batch`` (with nothing new, only
    ``batch.json``, ``events`` 0). Outputs ``events`` (how many this run exported) and
    ``feedback_uri`` (``feedback_out`` when it holds any batch, else empty: what the
    retraining's ingest reads).
    """
    from collections import namedtuple

    from llarapp.pipeline.stages import export_feedback_batch
    from llarapp.pipeline.status import run_stage

    with run_stage("export_feedback"):
        summary = export_feedback_batch(
            events, feedback_out, champion, batch.path, tracking_uri=tracking_uri
        )
    batch.metadata.update({k: v for k, v in summary.items() if v is not None})
    outputs = namedtuple("FeedbackOutputs", ["events", "feedback_uri"])
    return outputs(summary["events"], summary["feedback_uri"])
