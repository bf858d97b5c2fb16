"""The roster: which models exist, how each is fitted, and scoring a list of them on one fold.

The one place that fits and evaluates a list of models: ``llarapp benchmark quality``
(:func:`llarapp.benchmark.quality.run_quality`) and the pipeline's evaluate stage
(:func:`llarapp.pipeline.stages.evaluate_models`) both call :func:`fit_and_evaluate`, so a
model scores the same wherever it is compared. Every model is fitted on the training fold,
tuned (where it has knobs) on the same validation cases, and scored on the same cases of one
fold:

===========================  ==========================================================
name                         fitted with
===========================  ==========================================================
``most_popular``             :class:`~llarapp.models.baselines.MostPopular`
``item_knn``                 :func:`~llarapp.training.behavior.tune_item_knn`
``als``                      :func:`~llarapp.training.behavior.tune_als`
``title_knn``                :func:`~llarapp.training.behavior.tune_title_knn`
``llara++``                  :func:`~llarapp.training.llara.train_llara`, ``linear`` curriculum
``llara++/text-only``        the same, ``text-only`` curriculum (ablation)
``llara++/no-curriculum``    the same, ``none`` curriculum (ablation)
===========================  ==========================================================

The LLaRA++ variants share one :class:`~llarapp.training.llara.Prepared` (text features,
retrieval stages, ranker cases), built by the first of them that is fitted. A model that is
already fitted (the pipeline's trained candidate, the behavior stage's ALS) is loaded from its
folder instead (``saved``). A new model joins the roster with an entry in :data:`_FITTERS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llarapp.config import TuneConfig
from llarapp.data.dataset import EvalCase, TrainSet, artist_lookup, load_cases, load_train
from llarapp.evaluation.evaluate import evaluate
from llarapp.models.base import Recommender
from llarapp.models.baselines import MostPopular
from llarapp.text import TextEncoder
from llarapp.training.behavior import tune_als, tune_item_knn, tune_title_knn

if TYPE_CHECKING:
    from llarapp.training.llara import Prepared

log = logging.getLogger(__name__)

BASELINES = ("most_popular", "item_knn", "als", "title_knn")
LLARA_CURRICULA = {
    "llara++": "linear",
    "llara++/text-only": "text-only",
    "llara++/no-curriculum": "none",
}
"""LLaRA++ rows of the roster: the full model and its two ablations, by curriculum."""


@dataclass
class Roster:
    """One split's data and the pieces the roster's models share while they are fitted."""

    data_dir: Path
    split_dir: Path
    train: TrainSet
    valid: list[EvalCase]  # tune the baselines (the first ``tune.max_cases``)
    cases: list[EvalCase]  # the fold the models are scored on
    artist_of: dict[str, str]
    tune: TuneConfig
    encoder: TextEncoder  # shared: every title is embedded once per run
    models_dir: Path | None = None  # LLaRA++ variants are saved here, one folder each
    tuning: dict[str, list[dict]] = field(default_factory=dict)  # trials (or history) per model
    prepared: Prepared | None = None  # shared by the LLaRA++ variants, once one was fitted

    @classmethod
    def load(
        cls,
        data_dir: Path | str,
        split_dir: Path | str,
        *,
        tune: TuneConfig,
        encoder: TextEncoder,
        fold: str = "test",
        models_dir: Path | str | None = None,
    ) -> Roster:
        """Read the training fold, ``tune.max_cases`` validation cases and the ``fold`` cases."""
        data_dir, split_dir = Path(data_dir), Path(split_dir)
        return cls(
            data_dir=data_dir,
            split_dir=split_dir,
            train=load_train(data_dir, split_dir),
            valid=load_cases(data_dir, split_dir, "valid", tune.max_cases),
            cases=load_cases(data_dir, split_dir, fold),
            artist_of=artist_lookup(data_dir),
            tune=tune,
            encoder=encoder,
            models_dir=Path(models_dir) if models_dir is not None else None,
        )


def _most_popular(roster: Roster) -> Recommender:
    return MostPopular().fit(roster.train)


def _item_knn(roster: Roster) -> Recommender:
    model, roster.tuning["item_knn"] = tune_item_knn(
        roster.train, roster.valid, roster.artist_of, roster.tune
    )
    return model


def _als(roster: Roster) -> Recommender:
    model, roster.tuning["als"] = tune_als(
        roster.train, roster.valid, roster.artist_of, roster.tune
    )
    return model


def _title_knn(roster: Roster) -> Recommender:
    model, roster.tuning["title_knn"] = tune_title_knn(
        roster.train, roster.valid, roster.artist_of, roster.tune, encoder=roster.encoder
    )
    return model


def _llara(roster: Roster, name: str) -> Recommender:
    if roster.models_dir is None:
        raise ValueError(f"fitting {name!r} needs Roster.models_dir (where the model is saved)")
    # imported here: torch and the ranker load only when a LLaRA++ variant is fitted
    from llarapp.training.llara import LlaraTrainConfig, prepare_llara, train_llara

    config = LlaraTrainConfig(curriculum=LLARA_CURRICULA[name])
    if roster.prepared is None:  # the ablations share features and retrieval
        roster.prepared = prepare_llara(roster.data_dir, roster.split_dir, config, roster.encoder)
    model = train_llara(
        roster.data_dir,
        roster.split_dir,
        roster.models_dir / name.replace("/", "-"),
        config,
        encoder=roster.encoder,
        prepared=roster.prepared,
    )
    roster.tuning[name] = model.report["history"]
    return model


_FITTERS: dict[str, Callable[[Roster], Recommender]] = {
    "most_popular": _most_popular,
    "item_knn": _item_knn,
    "als": _als,
    "title_knn": _title_knn,
    **{name: (lambda roster, n=name: _llara(roster, n)) for name in LLARA_CURRICULA},
}
MODELS = tuple(_FITTERS)
"""Every model the roster can fit, in table order (the quality benchmark's default list)."""


def fit_and_evaluate(
    roster: Roster,
    names: Sequence[str],
    *,
    saved: Mapping[str, Path | str] | None = None,
    k: int = 500,
    progress: bool = True,
    seconds: dict[str, float] | None = None,
) -> dict[str, dict]:
    """Fit (or load) each model in turn and score it on ``roster.cases``.

    Models are fitted one at a time, in the order of ``names``, and each is scored before the
    next is fitted. Tuning trials (the LLaRA++ training history) land in ``roster.tuning``.

    Args:
        roster: The split's data and shared pieces.
        names: Models to score, in order: names of :data:`MODELS`, or keys of ``saved``.
        saved: ``name -> folder`` of models already fitted, loaded with
            :meth:`Recommender.load` instead of fitted.
        k: Recommendations per case.
        progress: Show a progress bar while each model is scored.
        seconds: Receives ``fit:NAME`` (loading, for a saved model) and ``evaluate:NAME``
            wall times, rounded to 10 ms.

    Returns:
        ``{name: evaluate(...)}`` in the order of ``names`` (see
        :func:`llarapp.evaluation.evaluate.evaluate`).

    Raises:
        ValueError: A name is neither in :data:`MODELS` nor in ``saved``.
    """
    saved = dict(saved or {})
    unknown = [n for n in names if n not in _FITTERS and n not in saved]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    seconds = {} if seconds is None else seconds
    results = {}
    for name in names:
        start = time.perf_counter()
        model = Recommender.load(saved[name]) if name in saved else _FITTERS[name](roster)
        seconds[f"fit:{name}"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        results[name] = evaluate(
            model, roster.cases, artist_of=roster.artist_of, k=k, progress=progress
        )
        seconds[f"evaluate:{name}"] = round(time.perf_counter() - start, 2)
        log.info(
            "%s: fitted in %.1f s, scored in %.1f s, ndcg %.4f",
            name,
            seconds[f"fit:{name}"],
            seconds[f"evaluate:{name}"],
            results[name]["overall"]["ndcg"],
        )
    return results
