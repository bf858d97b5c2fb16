"""``llarapp benchmark quality``: ingest -> split -> fit every model -> evaluate -> table + JSON.

Every model is fitted on the same training fold, tuned (where it has knobs) on the same
validation cases, and scored on the same test cases. The model list is open: a later model
joins with :func:`benchmark_model`.

JSON written to ``out``::

    {"dataset": {counts}, "models": {NAME: {"overall": {...}, "categories": {...},
     "warm": {...}, "cold": {...}, "ms_per_case": x, "tuning": [...]}}, "seconds": {STAGE: s}}
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llarapp.benchmark.timing import timed
from llarapp.config import SplitConfig, TuneConfig
from llarapp.data.dataset import EvalCase, TrainSet, artist_lookup, load_cases, load_train
from llarapp.data.ingest import ingest
from llarapp.data.split import CATEGORY_NAMES, split
from llarapp.evaluation.evaluate import HEADLINE, evaluate
from llarapp.features.behavior import tune_als, tune_item_knn, tune_title_knn
from llarapp.features.text import TextEncoder, default_cache_dir
from llarapp.models.base import Recommender
from llarapp.models.baselines import MostPopular

log = logging.getLogger(__name__)


@dataclass
class BenchContext:
    """What a benchmark entry may use to build its fitted model."""

    data_dir: Path
    split_dir: Path
    work_dir: Path
    train: TrainSet
    valid: list[EvalCase]
    artist_of: dict[str, str]
    tune: TuneConfig
    encoder: TextEncoder  # shared: every title is embedded once per run
    tuning: dict[str, list[dict]] = field(default_factory=dict)  # entries record trials here
    shared: dict[str, object] = field(default_factory=dict)  # work entries share


BenchEntry = Callable[[BenchContext], Recommender]
BASELINES = ("most_popular", "item_knn", "als", "title_knn")
_ENTRIES: dict[str, BenchEntry] = {}


def benchmark_model(name: str) -> Callable[[BenchEntry], BenchEntry]:
    """Register ``fn(ctx) -> fitted Recommender`` under ``name`` in the quality benchmark."""

    def register(fn: BenchEntry) -> BenchEntry:
        _ENTRIES[name] = fn
        return fn

    return register


def benchmark_models() -> list[str]:
    """Names the benchmark runs by default, in table order."""
    return list(_ENTRIES)


@benchmark_model("most_popular")
def _most_popular(ctx: BenchContext) -> Recommender:
    return MostPopular().fit(ctx.train)


@benchmark_model("item_knn")
def _item_knn(ctx: BenchContext) -> Recommender:
    model, ctx.tuning["item_knn"] = tune_item_knn(ctx.train, ctx.valid, ctx.artist_of, ctx.tune)
    return model


@benchmark_model("als")
def _als(ctx: BenchContext) -> Recommender:
    model, ctx.tuning["als"] = tune_als(ctx.train, ctx.valid, ctx.artist_of, ctx.tune)
    return model


@benchmark_model("title_knn")
def _title_knn(ctx: BenchContext) -> Recommender:
    model, ctx.tuning["title_knn"] = tune_title_knn(
        ctx.train, ctx.valid, ctx.artist_of, ctx.tune, encoder=ctx.encoder
    )
    return model


def _llara(ctx: BenchContext, curriculum: str) -> Recommender:
    from llarapp.training.llara import LlaraTrainConfig, prepare_llara, train_llara

    config = LlaraTrainConfig(curriculum=curriculum)
    if "llara_prepared" not in ctx.shared:  # the ablations share features and retrieval
        ctx.shared["llara_prepared"] = prepare_llara(
            ctx.data_dir, ctx.split_dir, config, ctx.encoder
        )
    model = train_llara(
        ctx.data_dir,
        ctx.split_dir,
        ctx.work_dir / "models" / model_name(curriculum).replace("/", "-"),
        config,
        encoder=ctx.encoder,
        prepared=ctx.shared["llara_prepared"],
    )
    ctx.tuning[model_name(curriculum)] = model.report["history"]
    return model


def model_name(curriculum: str) -> str:
    """Benchmark row of a curriculum: the full model and its two ablations."""
    return {"linear": "llara++", "text-only": "llara++/text-only", "none": "llara++/no-curriculum"}[
        curriculum
    ]


for _curriculum in ("linear", "text-only", "none"):
    benchmark_model(model_name(_curriculum))(lambda ctx, c=_curriculum: _llara(ctx, c))


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
    """Run the quality benchmark on MPD slices at ``mpd``; write JSON to ``out``."""
    models = list(models or benchmark_models())
    unknown = [m for m in models if m not in _ENTRIES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {benchmark_models()}")
    tune = tune or TuneConfig()
    with tempfile.TemporaryDirectory(prefix="llarapp-bench-") as tmp:
        work = Path(work_dir or tmp)
        seconds: dict[str, float] = {}
        with timed(seconds, "ingest"):
            report = ingest(mpd, work / "data", max_playlists=max_playlists)
        with timed(seconds, "split"):
            split_report = split(work / "data", work / "split", SplitConfig(seed=seed))
        with timed(seconds, "load"):
            ctx = BenchContext(
                data_dir=work / "data",
                split_dir=work / "split",
                work_dir=work,
                train=load_train(work / "data", work / "split"),
                valid=load_cases(work / "data", work / "split", "valid", tune.max_cases),
                artist_of=artist_lookup(work / "data"),
                tune=tune,
                encoder=TextEncoder(default_cache_dir()),
            )
            test = load_cases(work / "data", work / "split", "test")
        with timed(seconds, "text_features"):
            titles = {str(t) for t in ctx.train.titles}
            titles |= {c.case.title for c in (*ctx.valid, *test) if c.case.title}
            ctx.encoder.encode(sorted(titles))
            ctx.encoder.flush()
        results = {}
        for name in models:
            with timed(seconds, f"fit:{name}"):
                model = _ENTRIES[name](ctx)
            with timed(seconds, f"evaluate:{name}"):
                results[name] = evaluate(model, test, artist_of=ctx.artist_of, k=k)
            if name in ctx.tuning:
                results[name]["tuning"] = ctx.tuning[name]
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
        "valid_cases_used": len(ctx.valid),
        "test_cases": len(test),
        "test_cases_per_category": split_report["cases"]["test"],
        "hidden_cold_share": round(split_report["hidden_cold_share"], 4),
    }
    result = {"dataset": dataset, "models": results, "seconds": seconds}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_tables(result: dict) -> str:
    """Markdown tables: overall and warm/cold per model, then NDCG and R-precision per category."""
    models = result["models"]
    lines = ["| model | " + " | ".join(HEADLINE) + " | cold recall@500 | ms/case |"]
    lines.append("|---" * (len(HEADLINE) + 3) + "|")
    for name, r in models.items():
        cells = [f"{r['overall'][m]:.4f}" for m in HEADLINE]
        cold = r["cold"].get("recall@500", 0.0)
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {cold:.4f} | {r['ms_per_case']:.1f} |"
        )
    for metric in ("ndcg", "r_precision"):
        cats = [c for c in CATEGORY_NAMES if any(c in r["categories"] for r in models.values())]
        lines += ["", f"{metric} per category", ""]
        lines.append("| category | cases | " + " | ".join(models) + " |")
        lines.append("|---" * (len(models) + 2) + "|")
        for c in cats:
            first = next(iter(models.values()))["categories"].get(c, {})
            row = [
                f"{r['categories'].get(c, {}).get(metric, float('nan')):.4f}"
                for r in models.values()
            ]
            lines.append(f"| {c} | {first.get('cases', 0)} | " + " | ".join(row) + " |")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items())
    lines += ["", f"seconds: {secs}"]
    return "\n".join(lines)
