"""The ``llarapp`` command line. ``llarapp --help`` and ``llarapp GROUP CMD --help`` explain each.

Examples::

    llarapp data synth --playlists 2000 --out runs/synth
    llarapp data ingest --mpd runs/synth --out runs/data
    llarapp data split --data runs/data --out runs/split
    llarapp features text --data runs/data --out runs/text
    llarapp features behavior --data runs/data --split runs/split --out runs/behavior
    llarapp benchmark quality --mpd ../shared/data/mpd-dev --out runs/quality.json
    llarapp demo
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("llarapp")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1")
    return n


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_synth(args: argparse.Namespace) -> None:
    from llarapp.data.synth import generate

    files = generate(
        args.playlists,
        args.out,
        seed=args.seed,
        playlists_per_slice=args.per_slice,
        reduced=args.reduced,
    )
    print(f"wrote {len(files)} slice file(s) with {args.playlists} playlists to {args.out}")


def cmd_ingest(args: argparse.Namespace) -> None:
    from llarapp.data.ingest import ingest

    report = ingest(args.mpd, args.out, max_playlists=args.max_playlists)
    _print_json(report.to_dict())


def cmd_split(args: argparse.Namespace) -> None:
    from llarapp.config import SplitConfig
    from llarapp.data.split import split

    config = SplitConfig(seed=args.seed, valid_frac=args.valid_frac, test_frac=args.test_frac)
    _print_json(split(args.data, args.out, config))


def cmd_text(args: argparse.Namespace) -> None:
    from llarapp.features.text import TextEncoder, default_cache_dir, embed_dataset

    encoder = TextEncoder(args.cache or default_cache_dir(), batch_size=args.batch_size)
    _print_json(embed_dataset(args.data, args.out, encoder))


def cmd_behavior(args: argparse.Namespace) -> None:
    from llarapp.config import ALSConfig, from_json
    from llarapp.features.behavior import fit_behavior

    config = from_json(ALSConfig, args.config) if args.config else None
    _print_json(fit_behavior(args.data, args.split, args.out, config=config))


def cmd_quality(args: argparse.Namespace) -> None:
    from llarapp.benchmark.quality import format_tables, run_quality

    models = args.models.split(",") if args.models else None
    result = run_quality(
        args.mpd,
        args.out,
        seed=args.seed,
        max_playlists=args.max_playlists,
        models=models,
        work_dir=args.work_dir,
    )
    print(json.dumps(result["dataset"], indent=2))
    print(format_tables(result))
    print(f"\nJSON: {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    import tempfile

    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split
    from llarapp.training.llara import LlaraTrainConfig, train_llara

    config = LlaraTrainConfig(epochs=args.epochs, curriculum=args.curriculum, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="llarapp-train-") as tmp:
        work = Path(args.work or tmp)
        ingest(args.mpd, work / "data", max_playlists=args.max_playlists)
        split(work / "data", work / "split", SplitConfig(seed=args.seed))
        model = train_llara(work / "data", work / "split", args.out, config)
    report = model.report
    print(json.dumps({k: report[k] for k in ("train_cases", "valid_cases", "seconds")}, indent=2))
    print(f"best validation NDCG {report['history'][-1]['best_valid_ndcg']:.4f}")
    print(f"model: {args.out}  (MLflow run {report['history'][-1]['mlflow_run_id']})")


def cmd_lastfm(args: argparse.Namespace) -> None:
    from llarapp.benchmark.lastfm import format_table, run_lastfm

    models = args.models.split(",") if args.models else None
    result = run_lastfm(args.data, args.split, args.out, seeds=args.seeds, scorers=models)
    print(format_table(result))
    print(f"\nJSON: {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from llarapp.benchmark.quality import BASELINES, format_tables, run_quality
    from llarapp.data.synth import generate

    work = Path(args.work)
    start = time.perf_counter()
    data = args.data
    if data is None:
        data = str(work / "synth")
        generate(args.playlists, data, seed=args.seed)
        print(f"synthetic MPD: {args.playlists} playlists in {data}")
    out = work / "quality.json"
    models = args.models.split(",") if args.models else list(BASELINES)
    result = run_quality(data, out, seed=args.seed, work_dir=work / "bench", models=models)
    print(format_tables(result))
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"tables (ingest, split), quarantine and report: {work / 'bench' / 'data'}")
    print(f"benchmark JSON: {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llarapp",
        description="LLaRA++: cold-start playlist continuation. Stages as commands.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    data = groups.add_parser("data", help="synthetic data, ingest, split").add_subparsers(
        dest="cmd", required=True, metavar="CMD"
    )
    p = data.add_parser("synth", help="write synthetic MPD slice files")
    p.add_argument("--playlists", type=_positive, required=True, help="how many playlists")
    p.add_argument("--out", required=True, help="folder for mpd.slice.*.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-slice", type=_positive, default=1000, help="playlists per file")
    p.add_argument("--reduced", action="store_true", help="only the fields mpd-dev has")
    p.set_defaults(fn=cmd_synth)

    p = data.add_parser("ingest", help="validate MPD slices into parquet tables")
    p.add_argument("--mpd", required=True, help="folder, glob, file or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="folder for the parquet tables and reports")
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.set_defaults(fn=cmd_ingest)

    p = data.add_parser("split", help="train/valid/test folds and challenge cases")
    p.add_argument("--data", required=True, help="an ingest output folder")
    p.add_argument("--out", required=True, help="folder for folds.parquet and cases.parquet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.2)
    p.set_defaults(fn=cmd_split)

    feats = groups.add_parser("features", help="text and behavior features").add_subparsers(
        dest="cmd", required=True, metavar="CMD"
    )
    p = feats.add_parser("text", help="MiniLM vectors for tracks and titles (cached)")
    p.add_argument("--data", required=True, help="an ingest output folder")
    p.add_argument("--out", required=True, help="folder for tracks.npz and titles.npz")
    p.add_argument("--cache", default=None, help="embedding cache folder")
    p.add_argument("--batch-size", type=_positive, default=128)
    p.set_defaults(fn=cmd_text)

    p = feats.add_parser("behavior", help="ALS factors, tuned on validation cases")
    p.add_argument("--data", required=True, help="an ingest output folder")
    p.add_argument("--split", required=True, help="a split output folder")
    p.add_argument("--out", required=True, help="folder for the ALS model and its config")
    p.add_argument("--config", default=None, help="ALSConfig JSON: skip tuning, use this")
    p.set_defaults(fn=cmd_behavior)

    bench = groups.add_parser("benchmark", help="benchmarks (table + JSON)").add_subparsers(
        dest="cmd", required=True, metavar="CMD"
    )
    p = bench.add_parser("quality", help="every model on the same split, per category")
    p.add_argument("--mpd", required=True, help="MPD slices: folder, glob or s3:// URI")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.add_argument("--models", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--work-dir", default=None, help="keep intermediate tables here")
    p.set_defaults(fn=cmd_quality)

    p = bench.add_parser("llara-lastfm", help="the LLaRA paper's LastFM protocol (HR@1)")
    p.add_argument("--data", required=True, help="folder with train_data.jsonl, Val_data.jsonl")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--seeds", type=_positive, default=5, help="candidate draws to average")
    p.add_argument("--models", default=None, help="comma-separated subset (default: all)")
    p.set_defaults(fn=cmd_lastfm)

    p = groups.add_parser("train", help="train LLaRA++ (features, ALS, projectors, ranker)")
    p.add_argument("--mpd", required=True, help="MPD slices: folder, glob or s3:// URI")
    p.add_argument("--out", required=True, help="MODEL_DIR: everything export and serving need")
    p.add_argument("--work", default=None, help="keep the ingest and split tables here")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--curriculum", choices=("linear", "none", "text-only"), default="linear")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.set_defaults(fn=cmd_train)

    p = groups.add_parser("demo", help="synthetic data -> the whole local run -> summary")
    p.add_argument("--playlists", type=_positive, default=2000)
    p.add_argument("--data", default=None, help="MPD slices to use instead of synthetic data")
    p.add_argument("--work", default="runs/demo", help="output folder")
    p.add_argument(
        "--models", default=None, help="comma-separated benchmark rows (default: the baselines)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llarapp`` script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"llarapp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
