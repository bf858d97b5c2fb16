"""Baseline tuning on validation cases, and the behavior-features stage (ALS on the training fold).

The tuners (:func:`tune_als`, :func:`tune_item_knn`, :func:`tune_title_knn`) fit one model per
setting on the training fold and keep the one with the best validation NDCG; the roster
(:mod:`llarapp.training.roster`) and :func:`fit_behavior` call them.

:func:`fit_behavior` -- files in: an ingest folder and a split folder. Files out (``out_dir``):

- ``als/`` — the fitted :class:`~llarapp.models.baselines.ALS` (``model.json``, ``arrays.npz``
  with ``track_uris`` (str), ``item_factors`` (float32, (n_items, factors)), ``item_norm``).
- ``als_config.json`` — the chosen :class:`~llarapp.config.ALSConfig`.
- ``tuning.json`` — every setting tried with its validation NDCG, best first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from llarapp.config import ALSConfig, ItemKNNConfig, TitleKNNConfig, TuneConfig, to_json
from llarapp.data.dataset import EvalCase, TrainSet, artist_lookup, load_cases, load_train
from llarapp.evaluation.evaluate import evaluate
from llarapp.models.base import Recommender
from llarapp.models.baselines import ALS, ItemKNN, TitleKNN
from llarapp.text import TextEncoder

log = logging.getLogger(__name__)
C = TypeVar("C")


def search(
    build: Callable[[C], Recommender],
    candidates: Sequence[C],
    train: TrainSet,
    cases: Sequence[EvalCase],
    artist_of: Mapping[str, str] | None = None,
) -> tuple[Recommender, list[dict]]:
    """Fit one model per candidate config; keep the best validation NDCG.

    Returns:
        The best fitted model, and the trials (config + NDCG + R-precision), best first.
    """
    if not candidates:
        raise ValueError("search() got no candidate configs")
    best, trials = None, []
    for config in tqdm(candidates, desc="tune", unit="config", leave=False):
        model, trial = _trial(build, config, train, cases, artist_of)
        trials.append(trial)
        if best is None or trial["ndcg"] > best[1]:
            best = (model, trial["ndcg"])
    trials.sort(key=lambda t: -t["ndcg"])
    return best[0], trials


def coordinate_search(
    build: Callable[[C], Recommender],
    base: C,
    space: Mapping[str, Sequence[Any]],
    train: TrainSet,
    cases: Sequence[EvalCase],
    artist_of: Mapping[str, str] | None = None,
) -> tuple[Recommender, list[dict]]:
    """One pass of coordinate ascent over ``space`` from ``base`` (validation NDCG).

    Each knob in turn takes every value in its list while the others stay at their best so
    far; the first value of each list is where the search starts.
    """
    current = dataclasses.replace(base, **{name: values[0] for name, values in space.items()})
    best_model, best = _trial(build, current, train, cases, artist_of)
    trials = [best]
    for name, values in space.items():
        for value in values[1:]:
            config = dataclasses.replace(current, **{name: value})
            model, trial = _trial(build, config, train, cases, artist_of)
            trials.append(trial)
            if trial["ndcg"] > best["ndcg"]:
                best_model, best, current = model, trial, config
    trials.sort(key=lambda t: -t["ndcg"])
    return best_model, trials


def _trial(build, config, train, cases, artist_of) -> tuple[Recommender, dict]:
    model = build(config).fit(train)
    result = evaluate(model, cases, artist_of=artist_of, progress=False)["overall"]
    log.info("tune %s %s -> ndcg %.4f", model.name, to_json(config), result["ndcg"])
    return model, {
        "config": to_json(config),
        "ndcg": result["ndcg"],
        "r_precision": result["r_precision"],
    }


def tune_als(
    train: TrainSet,
    cases: Sequence[EvalCase],
    artist_of: Mapping[str, str] | None = None,
    tune: TuneConfig | None = None,
    base: ALSConfig | None = None,
) -> tuple[Recommender, list[dict]]:
    """Coordinate-ascent search of :class:`ALSConfig` on validation cases."""
    tune = tune or TuneConfig()
    return coordinate_search(ALS, base or ALSConfig(), tune.als_space, train, cases, artist_of)


def tune_item_knn(
    train: TrainSet,
    cases: Sequence[EvalCase],
    artist_of: Mapping[str, str] | None = None,
    tune: TuneConfig | None = None,
) -> tuple[Recommender, list[dict]]:
    """Search the item-kNN normalisation exponent on validation cases."""
    tune = tune or TuneConfig()
    candidates = [ItemKNNConfig(alpha=a) for a in tune.itemknn_alpha]
    return search(ItemKNN, candidates, train, cases, artist_of)


def tune_title_knn(
    train: TrainSet,
    cases: Sequence[EvalCase],
    artist_of: Mapping[str, str] | None = None,
    tune: TuneConfig | None = None,
    encoder: TextEncoder | None = None,
) -> tuple[Recommender, list[dict]]:
    """Coordinate-ascent search of :class:`TitleKNNConfig` on validation cases."""
    tune = tune or TuneConfig()
    return coordinate_search(
        lambda config: TitleKNN(config, encoder=encoder),
        TitleKNNConfig(),
        tune.titleknn_space,
        train,
        cases,
        artist_of,
    )


def fit_behavior(
    data_dir: Path | str,
    split_dir: Path | str,
    out_dir: Path | str,
    *,
    config: ALSConfig | None = None,
    tune: TuneConfig | None = None,
) -> dict:
    """Fit ALS on the training fold; tune on validation cases unless ``config`` is given."""
    out_dir = Path(out_dir)
    train = load_train(data_dir, split_dir)
    if config is not None:
        model, trials = ALS(config).fit(train), []
    else:
        tune = tune or TuneConfig()
        cases = load_cases(data_dir, split_dir, "valid", max_cases=tune.max_cases)
        model, trials = tune_als(train, cases, artist_lookup(data_dir), tune)
    model.save(out_dir / "als")
    (out_dir / "als_config.json").write_text(json.dumps(to_json(model.config), indent=2))
    (out_dir / "tuning.json").write_text(json.dumps(trials, indent=2))
    return {"config": to_json(model.config), "items": len(model.track_uris), "trials": len(trials)}
