"""Text features: MiniLM vectors for every track text and playlist title."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def text_features(data: Input[Dataset], text: Output[Dataset]) -> None:
    """Embed track texts and titles with all-MiniLM-L6-v2 (bundled in the image, offline).

    Library: :func:`llarapp.pipeline.stages.text_features` (around
    :func:`llarapp.features.text.embed_dataset`).

    Files in (``data``): ``tracks.parquet``, ``playlists.parquet``.

    Files out (``text``, a folder): ``tracks.npz`` (``track_uris`` str, ``vectors`` float32
    (n, 384)), ``titles.npz`` (``pids`` int64, ``vectors`` float32 (n, 384)), and
    ``cache/emb-features-<hash>.npz`` -- the same vectors keyed by text in the embedding-cache
    format. ``train_ranker``, ``evaluate`` and ``gate`` copy that shard into their cache, so
    they embed nothing again (training does not read the ``.npz`` files directly yet).
    """
    from llarapp.pipeline.stages import text_features as embed
    from llarapp.pipeline.status import run_stage

    with run_stage("text_features"):
        report = embed(data.path, text.path)
    text.metadata.update(report)
