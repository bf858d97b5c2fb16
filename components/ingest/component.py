"""Ingest: MPD slice files (a folder, glob, file or ``s3://bucket/prefix``) -> parquet tables."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    data_uri: str, max_playlists: int, data: Output[Dataset], feedback_uri: str = ""
) -> None:
    """Validate MPD slices into parquet tables, quarantining bad records.

    Library: :func:`llarapp.data.ingest.ingest`.

    Files in: ``data_uri`` -- ``mpd.slice.*.json`` in a local folder, glob or file, or under
    ``s3://bucket/prefix`` (endpoint and keys from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``). ``max_playlists`` 0 reads everything. ``feedback_uri``
    (optional, a local folder): exported feedback -- the folder ``llarapp feedback export
    --out`` (or the pipeline's ``export_feedback``) fills, or one batch of it; its fresh
    playlists join the data (on top of ``max_playlists``) and its dislikes become
    ``negatives.parquet``.

    Files out (``data``, a folder): ``playlists.parquet``, ``tracks.parquet``,
    ``interactions.parquet`` (schemas in :mod:`llarapp.data.schema`), ``negatives.parquet``
    (with feedback: the hard negatives training reads), ``quarantine.jsonl``,
    ``ingest_report.json`` (written last). Metadata: playlist, track, quarantine and feedback
    counts.
    """
    from llarapp.data.ingest import ingest as ingest_mpd
    from llarapp.pipeline.status import run_stage

    with run_stage("ingest"):
        report = ingest_mpd(
            data_uri,
            data.path,
            max_playlists=max_playlists or None,
            feedback=feedback_uri or None,
        ).to_dict()
    for key in ("playlists_ok", "playlists_quarantined", "interactions_ok", "distinct_tracks",
                "feedback_batches", "negatives"):  # fmt: skip
        data.metadata[key] = report[key]
