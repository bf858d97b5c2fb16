"""Behavior features: implicit ALS on the training playlists, tuned on validation cases."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def behavior_features(
    data: Input[Dataset],
    splits: Input[Dataset],
    als_config: dict,
    tune_max_cases: int,
    behavior: Output[Model],
) -> None:
    """Fit ALS on the training fold; coordinate-search its knobs on validation cases.

    Library: :func:`llarapp.training.behavior.fit_behavior`. ``als_config`` (ALSConfig fields)
    skips tuning when not empty.

    Files in: ``data`` (ingest tables), ``splits`` (``folds.parquet``, ``cases.parquet``).

    Files out (``behavior``, a folder): ``als/`` (``model.json``, ``arrays.npz``: ``track_uris``
    str, ``item_factors`` float32 (n_items, factors), ``item_norm``), ``als_config.json``,
    ``tuning.json`` (settings tried, validation NDCG, best first). ``evaluate`` scores this
    model as the ALS baseline. (The ranker refits its own ALS inside training, on its own
    subsets; see the README.)
    """
    from llarapp.pipeline.stages import behavior_features as fit
    from llarapp.pipeline.status import run_stage

    with run_stage("behavior_features"):
        report = fit(data.path, splits.path, behavior.path, als_config or None, tune_max_cases)
    behavior.metadata["items"] = report["items"]
    behavior.metadata["trials"] = report["trials"]
    behavior.metadata.update({f"als.{k}": v for k, v in report["config"].items()})
