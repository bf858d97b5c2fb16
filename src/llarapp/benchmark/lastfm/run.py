"""Run the LastFM benchmark: fit each scorer once, report HitRatio@1 over candidate seeds.

``llarapp benchmark llara-lastfm`` calls :func:`run_lastfm` and prints :func:`format_table`.
Every scorer is fitted once on the training rows; only the candidate sets
(:func:`~llarapp.benchmark.lastfm.data.candidate_sets`) change with the seed ``0..seeds-1``, and
each model's figure is the mean and sample standard deviation (``ddof=1``) over the seeds.

JSON written by :func:`run_lastfm`::

    {"split": "val", "seeds": [0, ...], "mpd": path or null,
     "dataset": {"n_items", "pad_id", "train_rows", "train_users", "eval_rows_total",
                 "eval_rows", "min_len_seq", "n_candidates"},
     "models": {NAME: {"hr@1": mean, "hr@1_std": std, "per_seed": [hr, ...],
                       "mpd_artists": n (llara++ scorers, with mpd only)}},
     "seconds": {"load": s, "candidates": s, "fit:NAME": s, "score:NAME": s, "total": s}}

``mpd`` (``--mpd``) gives the llara++ scorers (:class:`LlaraLastFMScorer`) MPD playlists for
their artist co-occurrence features (:attr:`LlaraLastFMConfig.mpd`); the other scorers ignore it.

The scorers are :data:`SCORERS`, in the order they run by default; another model joins with
:func:`register_scorer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llarapp.benchmark.lastfm.data import (
    MIN_LEN_SEQ,
    N_CANDIDATES,
    candidate_sets,
    hit_ratio_at_1,
    load_lastfm,
    user_sequences,
)
from llarapp.benchmark.lastfm.llara import LlaraLastFMScorer, llara_minilm
from llarapp.benchmark.lastfm.scorers import (
    CooccurrenceScorer,
    MostPopularScorer,
    SASRecScorer,
    SequentialScorer,
    cooccurrence_cosine,
)
from llarapp.benchmark.timing import timed

log = logging.getLogger(__name__)

ScorerFactory = Callable[[], SequentialScorer]
#: Name -> ``factory() -> SequentialScorer`` (a class or function), in the default run order.
SCORERS: dict[str, ScorerFactory] = {
    "most_popular": MostPopularScorer,
    "cooccurrence": CooccurrenceScorer,
    "cooccurrence_cosine": cooccurrence_cosine,
    "sasrec": SASRecScorer,
    "llara++": LlaraLastFMScorer,
    "llara++/minilm": llara_minilm,
}


def register_scorer(
    name: str, *, replace: bool = False
) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register ``factory() -> SequentialScorer`` (a class or function) under ``name``."""

    def register(factory: ScorerFactory) -> ScorerFactory:
        if name in SCORERS and not replace and SCORERS[name] is not factory:
            raise ValueError(f"scorer {name!r} is already registered")
        SCORERS[name] = factory
        return factory

    return register


def run_lastfm(
    data_dir: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    seeds: int = 5,
    scorers: list[str] | None = None,
    mpd: str | Path | None = None,
) -> dict:
    """Fit every scorer (all registered ones by default) on the training rows and report
    HitRatio@1 on ``split`` over candidate seeds ``0..seeds-1``; write the JSON (module doc) to
    ``out`` when given, and return it. ``mpd``: MPD playlists for the llara++ scorers."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    names = list(SCORERS) if scorers is None else list(scorers)
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorers {unknown}; registered: {sorted(SCORERS)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with timed(seconds, "load"):
        data = load_lastfm(data_dir, split)
    seed_list = list(range(seeds))
    with timed(seconds, "candidates"):
        cand_sets = [candidate_sets(data.eval_rows, data.n_items, s) for s in seed_list]
    histories = [list(r.history) for r in data.eval_rows]
    targets = np.array([r.target for r in data.eval_rows])
    models: dict[str, dict] = {}
    for name in names:
        scorer = SCORERS[name]()
        if mpd is not None and isinstance(scorer, LlaraLastFMScorer):
            scorer.config = dataclasses.replace(scorer.config, mpd=str(mpd))
        with timed(seconds, f"fit:{name}"):
            scorer.fit(data)
        per_seed = []
        with timed(seconds, f"score:{name}"):
            for cands in cand_sets:
                per_seed.append(hit_ratio_at_1(scorer.score(histories, cands), cands, targets))
        models[name] = {
            "hr@1": float(np.mean(per_seed)),
            "hr@1_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed,
        }
        if getattr(scorer, "mpd_artists", None) is not None:
            models[name]["mpd_artists"] = scorer.mpd_artists
        log.info("%s: HR@1 %.4f", name, models[name]["hr@1"])
    seconds["total"] = round(time.perf_counter() - start, 2)
    result = {
        "split": split,
        "seeds": seed_list,
        "mpd": None if mpd is None else str(mpd),
        "dataset": {
            "n_items": data.n_items,
            "pad_id": data.pad_id,
            "train_rows": len(data.train),
            "train_users": len(user_sequences(data.train)),
            "eval_rows_total": data.eval_rows_total,
            "eval_rows": len(data.eval_rows),
            "min_len_seq": MIN_LEN_SEQ,
            "n_candidates": N_CANDIDATES,
        },
        "models": models,
        "seconds": seconds,
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    """Markdown table: one row per model, HR@1 mean ± std over the candidate seeds."""
    ds = result["dataset"]
    seconds = result.get("seconds", {})
    lines = [
        f"LastFM {result.get('split', '')}: {ds['eval_rows']} rows (len_seq >= "
        f"{ds['min_len_seq']}), {ds['n_candidates']} candidates, "
        f"{len(result.get('seeds', []))} seeds",
        "",
        "| model | HR@1 | std | fit s | score s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        fit = seconds.get(f"fit:{name}", float("nan"))
        score = seconds.get(f"score:{name}", float("nan"))
        lines.append(
            f"| {name} | {m['hr@1']:.4f} | {m['hr@1_std']:.4f} | {fit:.1f} | {score:.1f} |"
        )
    return "\n".join(lines)
