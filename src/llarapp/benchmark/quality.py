"""``llarapp benchmark quality``: ingest -> split -> fit every model -> evaluate -> table + JSON.

Every model is tuned (where it has knobs) on the same validation cases, fitted with what it
chose on the same training playlists (the training and validation folds: what ``llarapp
train`` does with the data it is given), and scored on the same test cases, by the roster
(:func:`llarapp.training.roster.fit_and_evaluate`) that the pipeline's evaluate stage also runs;
the models and how each is fitted are listed there.

The catalogue is honest: besides the training and test playlists' tracks it holds every track
of a share of playlists set aside whole as distractors (``distractor_frac``), so a test
playlist's unplayed tracks compete with at least as many other unplayed ones. Each LLaRA++ row
also reports ``leaky_catalogue``, the same model without the distractors' tracks (what this
benchmark measured before): an upper bound.

JSON written to ``out``::

    {"dataset": {counts}, "models": {NAME: {"overall": {...}, "categories": {...},
     "warm": {...}, "cold": {...}, "ms_per_case": x, "tuning": [...]}}, "seconds": {STAGE: s}}

and beside it the same name with ``.png``: every model's NDCG and R-precision per challenge
category, warm vs cold (:func:`llarapp.evaluation.charts.quality_chart`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llarapp.benchmark.timing import timed
from llarapp.config import SplitConfig, TuneConfig
from llarapp.data.ingest import IngestReport, ingest
from llarapp.data.split import split
from llarapp.evaluation.charts import quality_chart
from llarapp.text import TextEncoder, default_cache_dir
from llarapp.training.roster import MODELS, Roster, fit_and_evaluate

log = logging.getLogger(__name__)
DISTRACTOR_FRAC = 0.2


def ingest_and_split(
    mpd: str,
    work: Path,
    seconds: dict[str, float],
    *,
    seed: int,
    max_playlists: int | None,
    distractor_frac: float,
) -> tuple[IngestReport, dict]:
    """The benchmarks' data: ``mpd`` ingested into ``work/data`` and split into
    ``work/split`` (``SplitConfig(seed, distractor_frac)``); the two reports."""
    with timed(seconds, "ingest"):
        report = ingest(mpd, work / "data", max_playlists=max_playlists)
    with timed(seconds, "split"):
        config = SplitConfig(seed=seed, distractor_frac=distractor_frac)
        split_report = split(work / "data", work / "split", config)
    return report, split_report


def catalogue_counts(roster: Roster) -> dict:
    """What the models fit on and rank from: training playlists, warm tracks, the catalogue,
    the test cases' cold hidden tracks and the tracks only distractor playlists hold."""
    warm = set(roster.final.track_uris.tolist())
    hidden = {u for ec in roster.cases for u in ec.hidden}
    cold = {u for u in hidden if u not in warm}
    return {
        "training_playlists": len(roster.final.pids),
        "training_interactions": int(roster.final.matrix.nnz),
        "warm_tracks": len(warm),
        "catalogue_tracks": len(roster.artist_of),
        "hidden_cold_tracks": len(cold),
        "distractor_tracks": len(roster.aside),
        "hidden_cold_share": round(
            float(np.mean([c for ec in roster.cases for c in ec.hidden_cold])), 4
        ),
    }


def run_quality(
    mpd: str,
    out: Path | str,
    *,
    seed: int = 0,
    max_playlists: int | None = None,
    models: Sequence[str] | None = None,
    work_dir: Path | str | None = None,
    tune: TuneConfig | None = None,
    k: int = 500,
    distractor_frac: float = DISTRACTOR_FRAC,
) -> dict:
    """Run the quality benchmark on MPD slices at ``mpd``; write JSON to ``out``.

    Args:
        mpd: A folder of MPD slice files.
        out: Where the JSON goes.
        seed: Split seed.
        max_playlists: Ingest at most this many playlists (all when None).
        models: Names of :data:`llarapp.training.roster.MODELS`, in table order (all when None).
        work_dir: Keep ``data/``, ``split/`` and ``models/`` here (a temporary folder when None).
        tune: Baseline tuning grid and validation cases.
        k: Recommendations per case.
        distractor_frac: Share of playlists set aside as distractors (0: the leaky catalogue).

    Raises:
        ValueError: A name in ``models`` is not in the roster.
    """
    models = list(models or MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    tune = tune or TuneConfig()
    with tempfile.TemporaryDirectory(prefix="llarapp-bench-") as tmp:
        work = Path(work_dir or tmp)
        seconds: dict[str, float] = {}
        report, split_report = ingest_and_split(
            mpd, work, seconds, seed=seed, max_playlists=max_playlists,
            distractor_frac=distractor_frac,
        )  # fmt: skip
        with timed(seconds, "load"):
            roster = Roster.load(
                work / "data",
                work / "split",
                tune=tune,
                encoder=TextEncoder(default_cache_dir()),
                models_dir=work / "models",
                refit=True,
            )
        with timed(seconds, "text_features"):
            titles = {str(t) for t in roster.final.titles}
            titles |= {c.case.title for c in (*roster.valid, *roster.cases) if c.case.title}
            roster.encoder.encode(sorted(titles))
            roster.encoder.flush()
        results = fit_and_evaluate(roster, models, k=k, seconds=seconds, unknown_seeds=True)
        counts = catalogue_counts(roster)
        for name, trials in roster.tuning.items():
            results[name]["tuning"] = trials
    report_dict = report.to_dict()
    dataset = {
        "source": str(mpd),
        "seed": seed,
        "playlists": report_dict["playlists_ok"],
        "playlists_quarantined": report_dict["playlists_quarantined"],
        "interactions": report_dict["interactions_ok"],
        "tracks": report_dict["distinct_tracks"],
        "folds": split_report["playlists"],
        **counts,
        "valid_cases_used": len(roster.valid),
        "test_cases": len(roster.cases),
        "test_cases_per_category": split_report["cases"]["test"],
    }
    result = {"dataset": dataset, "models": results, "seconds": seconds}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    quality_chart(result, chart_path(out))
    return result


def chart_path(out: Path | str) -> Path:
    """Where the chart of the benchmark JSON ``out`` goes: beside it, ``.png``."""
    return Path(out).with_suffix(".png")
