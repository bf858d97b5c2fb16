"""Split: ingested playlists -> train / valid / test folds and challenge cases."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def split(
    data: Input[Dataset],
    seed: int,
    valid_frac: float,
    test_frac: float,
    splits: Output[Dataset],
) -> None:
    """Leakage-free folds and RecSys Challenge 2018 cases.

    Library: :func:`llarapp.data.split.split` with :class:`llarapp.config.SplitConfig`.

    Files in (``data``): ``playlists.parquet``, ``interactions.parquet``.

    Files out (``splits``, a folder): ``folds.parquet`` (``pid`` int64, ``fold`` string),
    ``cases.parquet`` (``pid``, ``fold``, ``category``, ``title``, ``seed_uris``,
    ``hidden_uris``, ``hidden_cold``), ``split.json`` (config and counts).
    """
    from llarapp.config import SplitConfig
    from llarapp.data.split import split as split_playlists
    from llarapp.pipeline.status import run_stage

    with run_stage("split"):
        config = SplitConfig(seed=seed, valid_frac=valid_frac, test_frac=test_frac)
        report = split_playlists(data.path, splits.path, config)
    for fold, n in report["playlists"].items():
        splits.metadata[f"{fold}_playlists"] = n
    splits.metadata["hidden_cold_share"] = round(report["hidden_cold_share"], 4)
