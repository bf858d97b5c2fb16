"""The roster: which models exist, how each is fitted, and scoring a list of them on one fold.

The one place that fits and evaluates a list of models: ``llarapp benchmark quality``
(:func:`llarapp.benchmark.quality.run_quality`) and the pipeline's evaluate stage
(:func:`llarapp.pipeline.stages.evaluate_models`) both call :func:`fit_and_evaluate`, so a
model scores the same wherever it is compared. Every model is fitted on the training fold,
tuned (where it has knobs) on the same validation cases, and scored on the same cases of one
fold. With ``refit`` (the quality benchmark), every model is then fitted again, with the
settings it chose, on all the *training playlists* (the training and validation folds), as
the served model is (``llarapp train``): the baselines directly, LLaRA++ by running exactly
what ``llarapp train --data`` runs on an ingest folder of those playlists
(:func:`llarapp.data.split.subset_ingest`), whose catalogue is every track of the source
(held-out and distractor playlists' tracks included):

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
``llara++/feature-head``     the same, no gradient step: the ranker's feature head at the
                             tuned linear blend of the retrieval features (what the
                             transformer must beat; ablation)
``llara++/split-run``        ``llara++`` before its refit: fitted on its own split's
                             training fold (the nested check of the refit; ``refit`` only)
===========================  ==========================================================

Where the split set distractor playlists aside, each LLaRA++ row also reports
``leaky_catalogue``: the same model scored with the tracks only distractors hold hidden from
it, which is the catalogue the benchmark had before (its cold tracks were exactly the test
playlists' hidden ones): an upper bound, not a deployable figure.

The LLaRA++ variants share one :class:`~llarapp.training.llara.Prepared` (text features,
retrieval stages, ranker cases), built by the first of them that is fitted. A model that is
already fitted (the pipeline's trained candidate, the behavior stage's ALS) is loaded from its
folder instead (``saved``). A new model joins the roster with an entry in :data:`_FITTERS`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from llarapp.config import TuneConfig
from llarapp.data.dataset import (
    EvalCase,
    Track,
    TrainSet,
    artist_lookup,
    load_cases,
    load_train,
)
from llarapp.data.schema import INTERACTIONS_FILE
from llarapp.data.split import FOLDS_FILE, subset_ingest
from llarapp.evaluation.evaluate import evaluate
from llarapp.models.base import Recommender
from llarapp.models.baselines import ALS, ItemKNN, MostPopular, TitleKNN
from llarapp.models.llarapp import LlaraPP, encode
from llarapp.text import TextEncoder
from llarapp.training.behavior import tune_als, tune_item_knn, tune_title_knn

if TYPE_CHECKING:
    from llarapp.training.llara import Prepared

log = logging.getLogger(__name__)

BASELINES = ("most_popular", "item_knn", "als", "title_knn")
LLARA_CONFIGS: dict[str, dict[str, Any]] = {
    "llara++": {"curriculum": "linear"},
    "llara++/text-only": {"curriculum": "text-only"},
    "llara++/no-curriculum": {"curriculum": "none"},
    "llara++/feature-head": {"epochs": 0},
}
"""LLaRA++ rows of the roster: the full model and its ablations, by what each changes of
:class:`~llarapp.training.llara.LlaraTrainConfig`."""
TRAINING_FOLDS = ("train", "valid")
"""With ``refit``, every model's final fit is on these folds' playlists."""


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
    final: TrainSet | None = None  # refit: the training playlists (train + valid folds)
    aside: set[str] = field(default_factory=set)  # tracks only distractor playlists hold
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
        refit: bool = False,
    ) -> Roster:
        """Read the training fold, ``tune.max_cases`` validation cases and the ``fold`` cases
        (with ``refit``, also the training playlists; a hidden track is then cold when none of
        them holds it)."""
        data_dir, split_dir = Path(data_dir), Path(split_dir)
        cases = load_cases(data_dir, split_dir, fold)
        final = load_train(data_dir, split_dir, TRAINING_FOLDS) if refit else None
        if final is not None:
            warm = set(final.track_uris.tolist())
            cases = [
                dataclasses.replace(ec, hidden_cold=tuple(u not in warm for u in ec.hidden))
                for ec in cases
            ]
        return cls(
            data_dir=data_dir,
            split_dir=split_dir,
            train=load_train(data_dir, split_dir),
            valid=load_cases(data_dir, split_dir, "valid", tune.max_cases),
            cases=cases,
            artist_of=artist_lookup(data_dir),
            tune=tune,
            encoder=encoder,
            models_dir=Path(models_dir) if models_dir is not None else None,
            final=final,
            aside=distractor_only_tracks(data_dir, split_dir),
        )

    def refitted(self, model: Recommender, build: Callable[[Any], Recommender]) -> Recommender:
        """``model`` (fitted on the training fold), or with ``refit`` the model ``build`` makes
        of its config fitted on the training playlists."""
        return model if self.final is None else build(model.config).fit(self.final)


def _most_popular(roster: Roster) -> Recommender:
    return MostPopular().fit(roster.train if roster.final is None else roster.final)


def _item_knn(roster: Roster) -> Recommender:
    model, roster.tuning["item_knn"] = tune_item_knn(
        roster.train, roster.valid, roster.artist_of, roster.tune
    )
    return roster.refitted(model, ItemKNN)


def _als(roster: Roster) -> Recommender:
    model, roster.tuning["als"] = tune_als(
        roster.train, roster.valid, roster.artist_of, roster.tune
    )
    return roster.refitted(model, ALS)


def _title_knn(roster: Roster) -> Recommender:
    model, roster.tuning["title_knn"] = tune_title_knn(
        roster.train, roster.valid, roster.artist_of, roster.tune, encoder=roster.encoder
    )
    return roster.refitted(model, lambda config: TitleKNN(config, encoder=roster.encoder))


def _llara(roster: Roster, name: str) -> Recommender:
    if roster.models_dir is None:
        raise ValueError(f"fitting {name!r} needs Roster.models_dir (where the model is saved)")
    # imported here: torch and the ranker load only when a LLaRA++ variant is fitted
    from llarapp.training.llara import (
        LlaraTrainConfig,
        prepare_llara,
        train_llara,
        training_split,
    )

    config = LlaraTrainConfig(**LLARA_CONFIGS[name])
    folder = roster.models_dir / name.replace("/", "-")  # (the split run: beside it)
    data_dir, split_dir = roster.data_dir, roster.split_dir
    if roster.final is not None:  # what `llarapp train --data` runs on the training playlists
        work = roster.models_dir / "training-playlists"
        data_dir = work / "data"
        if roster.prepared is None:
            subset_ingest(roster.data_dir, roster.split_dir, TRAINING_FOLDS, data_dir)
        split_dir = training_split(data_dir, work, config.seed)
    if roster.prepared is None:  # the ablations share features and retrieval
        roster.prepared = prepare_llara(data_dir, split_dir, config, roster.encoder)
    model = train_llara(
        data_dir,
        split_dir,
        folder,
        config,
        encoder=roster.encoder,
        prepared=roster.prepared,
        refit=roster.final is not None,
        split_run_dir=_split_run_dir(roster, name) if roster.final is not None else None,
    )
    roster.tuning[name] = model.report["history"]
    return model


def _split_run(roster: Roster) -> Recommender:
    if roster.final is None:
        raise ValueError("'llara++/split-run' is the nested check of a refit: Roster(refit=True)")
    if roster.models_dir is None or not _split_run_dir(roster, "llara++").is_dir():
        _llara(roster, "llara++")
    return Recommender.load(_split_run_dir(roster, "llara++"))


def _split_run_dir(roster: Roster, name: str) -> Path:
    return roster.models_dir / f"{name.replace('/', '-')}-split-run"


class _WithoutTracks:
    """A LLaRA++ model that never retrieves nor recommends the catalogue tracks ``uris``: the
    same model over a catalogue without them."""

    def __init__(self, model, uris: set[str]) -> None:
        self.model, self.name = model, model.name
        self.hidden = np.flatnonzero(np.isin(model.track_uris, list(uris)))

    def recommend(self, case, k: int = 500) -> list[str]:
        q = self.model.encode(case)
        q = dataclasses.replace(q, exclude_idx=np.union1d(q.exclude_idx, self.hidden))
        ranked = self.model.rank(self.model.retrieve(q), k)
        return self.model.track_uris[ranked.indices].tolist()


class _UnknownSeeds:
    """A LLaRA++ model asked about seeds its catalogue does not know: each seed is sent by
    its text alone (no URI, no lookup by name), so retrieval reads its projected text and its
    artist, and the ranker reads it as a text-only token (what the curriculum's text-only
    batches teach). The seeds are still never recommended."""

    def __init__(self, model) -> None:
        self.model, self.name = model, model.name

    def recommend(self, case, k: int = 500) -> list[str]:
        m = self.model
        unknown = tuple(Track(t.track_name, t.artist_name, None, t.album_name) for t in case.seeds)
        q = encode(m.stage, dataclasses.replace(case, seeds=unknown), m.encoder.encode)
        index = m.stage.catalog.index
        seeds = [index[t.track_uri] for t in case.seeds if t.track_uri in index]
        q = dataclasses.replace(q, exclude_idx=np.union1d(q.exclude_idx, seeds))
        ranked = m.rank(m.retrieve(q), k)
        return m.track_uris[ranked.indices].tolist()


def _with_seeds(categories: dict[str, dict]) -> dict:
    """The cases with seeds, from the per-category means of every case: each category but
    ``title_only``, and their case-weighted mean."""
    seeded = {c: m for c, m in categories.items() if c != "title_only"}
    n = sum(m["cases"] for m in seeded.values())
    names = next(iter(seeded.values())).keys() - {"cases"}
    overall = {x: sum(m[x] * m["cases"] for m in seeded.values()) / n for x in names}
    return {"overall": {**overall, "cases": n}, "categories": seeded}


def distractor_only_tracks(data_dir: Path, split_dir: Path) -> set[str]:
    """Tracks that only distractor playlists hold (empty when the split set none aside)."""
    folds = pq.read_table(Path(split_dir) / FOLDS_FILE).to_pandas()
    aside_pids = folds.loc[folds["fold"] == "distractor", "pid"]
    if aside_pids.empty:
        return set()
    inter = pq.read_table(Path(data_dir) / INTERACTIONS_FILE, columns=["pid", "track_uri"])
    inter = inter.to_pandas()
    aside = inter["pid"].isin(aside_pids)
    return set(inter.loc[aside, "track_uri"]) - set(inter.loc[~aside, "track_uri"])


_FITTERS: dict[str, Callable[[Roster], Recommender]] = {
    "most_popular": _most_popular,
    "item_knn": _item_knn,
    "als": _als,
    "title_knn": _title_knn,
    **{name: (lambda roster, n=name: _llara(roster, n)) for name in LLARA_CONFIGS},
    "llara++/split-run": _split_run,
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
    unknown_seeds: bool = False,
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
        unknown_seeds: Also score each LLaRA++ model on the cases with seeds as they are
            (``seeds.known``, from the categories of the scores above) and with every seed
            unknown to its catalogue (``seeds.unknown``,
            :class:`_UnknownSeeds`): the cold-start path the curriculum is for.

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
        if roster.aside and isinstance(model, LlaraPP):
            leaky = evaluate(
                _WithoutTracks(model, roster.aside), roster.cases, artist_of=roster.artist_of, k=k,
                progress=progress,
            )  # fmt: skip
            results[name]["leaky_catalogue"] = {g: leaky[g] for g in ("overall", "warm", "cold")}
        if unknown_seeds and isinstance(model, LlaraPP):
            with_seeds = [ec for ec in roster.cases if ec.case.seeds]
            cold = evaluate(
                _UnknownSeeds(model), with_seeds, artist_of=roster.artist_of, k=k,
                progress=progress,
            )  # fmt: skip
            results[name]["seeds"] = {
                "known": _with_seeds(results[name]["categories"]),
                "unknown": {g: cold[g] for g in ("overall", "categories")},
            }
        log.info(
            "%s: fitted in %.1f s, scored in %.1f s, ndcg %.4f",
            name,
            seconds[f"fit:{name}"],
            seconds[f"evaluate:{name}"],
            results[name]["overall"]["ndcg"],
        )
    return results
