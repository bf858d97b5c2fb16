"""``llarapp benchmark quality``: ingest -> split -> fit every model -> evaluate -> table + JSON.

Every model is fitted on the same training fold, tuned (where it has knobs) on the same
validation cases, and scored on the same test cases, by the roster
(:func:`llarapp.training.roster.fit_and_evaluate`) that the pipeline's evaluate stage also runs;
the models and how each is fitted are listed there.

JSON written to ``out``::

    {"dataset": {counts}, "models": {NAME: {"overall": {...}, "categories": {...},
     "warm": {...}, "cold": {...}, "ms_per_case": x, "tuning": [...]}}, "seconds": {STAGE: s}}
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llarapp.benchmark.timing import timed
from llarapp.config import SplitConfig, TuneConfig
from llarapp.data.ingest import ingest
from llarapp.data.split import split
from llarapp.text import TextEncoder, default_cache_dir
from llarapp.training.roster import MODELS, Roster, fit_and_evaluate

log = logging.getLogger(__name__)


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
        with timed(seconds, "ingest"):
            report = ingest(mpd, work / "data", max_playlists=max_playlists)
        with timed(seconds, "split"):
            split_report = split(work / "data", work / "split", SplitConfig(seed=seed))
        with timed(seconds, "load"):
            roster = Roster.load(
                work / "data",
                work / "split",
                tune=tune,
                encoder=TextEncoder(default_cache_dir()),
                models_dir=work / "models",
            )
        with timed(seconds, "text_features"):
            titles = {str(t) for t in roster.train.titles}
            titles |= {c.case.title for c in (*roster.valid, *roster.cases) if c.case.title}
            roster.encoder.encode(sorted(titles))
            roster.encoder.flush()
        results = fit_and_evaluate(roster, models, k=k, seconds=seconds)
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
        "train_interactions": split_report["train_interactions"],
        "warm_tracks": split_report["warm_tracks"],
        "valid_cases_used": len(roster.valid),
        "test_cases": len(roster.cases),
        "test_cases_per_category": split_report["cases"]["test"],
        "hidden_cold_share": round(split_report["hidden_cold_share"], 4),
    }
    result = {"dataset": dataset, "models": results, "seconds": seconds}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result
