"""The ``llarapp`` command line. ``llarapp --help`` and ``llarapp GROUP CMD --help`` explain each.

Examples::

    llarapp data synth --playlists 2000 --out runs/synth
    llarapp data ingest --mpd runs/synth --out runs/data
    llarapp data split --data runs/data --out runs/split
    llarapp features text --data runs/data --out runs/text
    llarapp features behavior --data runs/data --split runs/split --out runs/behavior
    llarapp benchmark quality --mpd ../shared/data/mpd-dev --out runs/quality.json
    llarapp benchmark export --model runs/model --mpd ../shared/data/mpd-dev --out runs/export.json
    llarapp catalog add --model runs/model --tracks new_releases.jsonl
    llarapp feedback export --events runs/serving/events.db --out runs/feedback --model runs/model
    llarapp serve --model runs/model --port 8080
    llarapp serve --model runs/champion --challenger runs/challenger --canary-percent 10
    llarapp benchmark serving --model runs/model --mpd ../shared/data/mpd-dev --out runs/srv.json
    llarapp benchmark drift --mpd ../shared/data/mpd-dev --out runs/drift.json
    llarapp benchmark hardening --out runs/hardening.json
    llarapp benchmark scale --sizes 10000,100000 --out runs/scale.json --chart runs/scale.png
    llarapp monitor profile --model runs/model --requests reference.jsonl --out runs/profile
    llarapp monitor check --model runs/model --profile runs/profile --log runs/serving/events.db
    llarapp pipeline compile
    llarapp pipeline run --local --data runs/synth
    llarapp pipeline submit --host http://localhost:8080 --data s3://data/mpd
    llarapp demo
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from llarapp.cpu import apply_thread_limits
from llarapp.errors import one_line

log = logging.getLogger("llarapp")
CANARY_PERCENT = 10.0  # the challenger's share by default, as manifests/overlays/canary


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


FEEDBACK_HELP = (
    "exported feedback (`llarapp feedback export --out`): likes join the data as playlists, "
    "dislikes become the ranker's hard negatives"
)


def cmd_ingest(args: argparse.Namespace) -> None:
    from llarapp.data.ingest import ingest

    report = ingest(args.mpd, args.out, max_playlists=args.max_playlists, feedback=args.feedback)
    _print_json(report.to_dict())


def cmd_split(args: argparse.Namespace) -> None:
    from llarapp.config import SplitConfig
    from llarapp.data.split import split

    config = SplitConfig(seed=args.seed, valid_frac=args.valid_frac, test_frac=args.test_frac)
    _print_json(split(args.data, args.out, config))


def cmd_text(args: argparse.Namespace) -> None:
    from llarapp.features.text import embed_dataset
    from llarapp.text import TextEncoder, default_cache_dir

    encoder = TextEncoder(args.cache or default_cache_dir(), batch_size=args.batch_size)
    _print_json(embed_dataset(args.data, args.out, encoder))


def cmd_behavior(args: argparse.Namespace) -> None:
    from llarapp.config import ALSConfig, from_json
    from llarapp.training.behavior import fit_behavior

    config = from_json(ALSConfig, args.config) if args.config else None
    _print_json(fit_behavior(args.data, args.split, args.out, config=config))


def cmd_quality(args: argparse.Namespace) -> None:
    from llarapp.benchmark.quality import chart_path, run_quality
    from llarapp.evaluation.report import format_tables

    models = args.models.split(",") if args.models else None
    result = run_quality(
        args.mpd,
        args.out,
        seed=args.seed,
        max_playlists=args.max_playlists,
        models=models,
        work_dir=args.work_dir,
        **_given(distractor_frac=args.distractor_frac),
    )
    print(json.dumps(result["dataset"], indent=2))
    print(format_tables(result))
    print(f"\nJSON: {args.out}\nchart: {chart_path(args.out)}")


def _given(**kwargs):
    """The keyword arguments that were given (not None): the others keep their defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def cmd_api_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.api import format_result, run_api_benchmark
    from llarapp.training.roster import BASELINES

    result = run_api_benchmark(
        args.mpd,
        args.out,
        seed=args.seed,
        max_playlists=args.max_playlists,
        baselines=args.baselines.split(",") if args.baselines else BASELINES,
        work_dir=args.work_dir,
        epochs=args.epochs,
        **_given(distractor_frac=args.distractor_frac),
    )
    print(json.dumps(result["dataset"], indent=2))
    print(format_result(result))
    print(f"\nJSON: {args.out}")


def cmd_latency(args: argparse.Namespace) -> None:
    from llarapp.benchmark.latency import format_table, run_latency

    result = run_latency(args.model, args.work_dir, args.out, args.threads, args.cases)
    print(format_table(result))
    print(f"\nJSON: {args.out}")


def cmd_export_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.export import format_table, run_export_benchmark
    from llarapp.export.onnx_export import ExportConfig

    config = ExportConfig(
        threads=args.threads, max_valid_cases=args.max_valid_cases, encoder=not args.no_encoder
    )
    result = run_export_benchmark(
        args.model,
        args.mpd,
        args.out,
        seed=args.seed,
        max_playlists=args.max_playlists,
        work_dir=args.work_dir,
        config=config,
    )
    print(format_table(result))
    print(f"\nJSON: {args.out}")


def cmd_drift_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.drift import format_table, run_drift_benchmark

    sizes = [int(s) for s in args.window_sizes.split(",")] if args.window_sizes else None
    result = run_drift_benchmark(
        args.mpd,
        args.out,
        seed=args.seed,
        max_playlists=args.max_playlists,
        work_dir=args.work_dir,
        **_given(windows=args.windows, window_sizes=sizes, default_window=args.default_window),
    )
    print(json.dumps(result["dataset"], indent=2))
    print(format_table(result))
    print(f"\nJSON: {args.out}")


def cmd_monitor_profile(args: argparse.Namespace) -> None:
    from llarapp.monitoring.window import (
        Catalogue,
        read_bodies,
        window_from_bodies,
        window_from_log,
    )
    from llarapp.text import TextEncoder, default_cache_dir

    catalogue = Catalogue.from_model(args.model)
    encode = TextEncoder(default_cache_dir()).encode
    if args.requests:
        window = window_from_bodies(read_bodies(args.requests), catalogue, encode)
    else:
        window = window_from_log(args.log, catalogue, encode, last=args.last)
    window.save(args.out)
    print(f"reference profile of {len(window)} requests written to {args.out}")


def cmd_monitor_check(args: argparse.Namespace) -> None:
    from llarapp.monitoring import (
        DEFAULT_WINDOW,
        REFERENCE_DIR,
        Catalogue,
        Window,
        window_from_log,
        write_report,
    )
    from llarapp.text import TextEncoder, default_cache_dir

    encode = TextEncoder(default_cache_dir()).encode
    catalogue = Catalogue.from_model(args.model)
    current = window_from_log(args.log, catalogue, encode, last=args.last or DEFAULT_WINDOW)
    profile = args.profile or Path(args.model) / REFERENCE_DIR
    result = write_report(Window.load(profile), current, args.out)
    _print_json(result.to_dict())
    print(f"\nreport: {Path(args.out) / 'drift_report.html'}")


def cmd_train(args: argparse.Namespace) -> None:
    import tempfile

    from llarapp.data.ingest import ingest
    from llarapp.monitoring import write_reference
    from llarapp.training.llara import LlaraTrainConfig, train_from_data

    config = LlaraTrainConfig(
        epochs=args.epochs,
        curriculum=args.curriculum,
        seed=args.seed,
        lora_r=args.lora_r,
        rank_folds=args.rank_folds,
    )
    with tempfile.TemporaryDirectory(prefix="llarapp-train-") as tmp:
        work = Path(args.work or tmp)
        data = Path(args.data) if args.data else work / "data"
        if args.mpd:
            ingest(args.mpd, data, max_playlists=args.max_playlists, feedback=args.feedback)
        elif args.feedback:
            raise SystemExit("--feedback goes with --mpd (an ingest folder already has its own)")
        model = train_from_data(
            data,
            args.out,
            config,
            work_dir=work,
            base_model=args.base_model,
            split_run_dir=args.split_run,
        )
        reference = write_reference(args.out, data, work / "split", model.encoder.encode)
    report = model.report
    print(json.dumps({k: report[k] for k in ("train_cases", "valid_cases", "seconds")}, indent=2))
    playlists = report["playlists"]
    print(
        f"best validation NDCG {report['history'][-1]['best_valid_ndcg']:.4f} (split run: "
        f"{playlists['split_run']} training playlists)"
    )
    print(f"served model fitted on {playlists['served']} playlists (every one given)")
    print(f"ranker: {report['ranker']} (what validation kept)")
    print(f"model: {args.out}  (MLflow run {report['history'][-1]['mlflow_run_id']})")
    if args.split_run:
        print(f"split run: {args.split_run}  (score it on the split's test fold)")
    print(f"reference traffic profile: {len(reference)} held-out requests (for `llarapp monitor`)")


def cmd_lastfm(args: argparse.Namespace) -> None:
    from llarapp.benchmark.lastfm.run import format_table, run_lastfm

    models = args.models.split(",") if args.models else None
    result = run_lastfm(
        args.data, args.split, args.out, seeds=args.seeds, scorers=models, mpd=args.mpd
    )
    print(format_table(result))
    print(f"\nJSON: {args.out}")


def default_serving_model(target: Path = Path("runs/serving")) -> str:
    """What ``llarapp serve`` serves without ``--model``: the model the last deploy pointed
    ``target/current.json`` at (``make demo`` and the pipeline write it), else ``runs/model``
    (``llarapp train --out runs/model``).

    Raises:
        FileNotFoundError: neither exists; the message says how to make one.
    """
    from llarapp.pipeline.deploy import read_pointer

    pointer = read_pointer(target)
    if pointer is not None:
        return str(pointer["storage_uri"])
    if Path("runs/model").is_dir():
        return "runs/model"
    raise FileNotFoundError(
        f"no model to serve: no {target / 'current.json'} (written by `make demo` and the "
        "pipeline's deploy) and no runs/model (`llarapp train --mpd DIR --out runs/model`); "
        "give --model DIR, s3://... or models:/NAME@ALIAS"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    """Run the local KServe server in place of this process (signals reach it directly)."""
    from llarapp.serving.client import check_port, server_command, server_env
    from llarapp.serving.model_uri import resolve_model_uri

    model = args.model or default_serving_model()
    argv = server_command(model, args.port, args.host, "--events", args.events)
    argv += ["--sample-rate", str(args.sample_rate), "--ranker-backend", args.ranker_backend]
    argv += ["--graph", args.graph] if args.graph else []
    argv += ["--workers", str(args.workers)]
    if args.challenger:
        from llarapp.serving.canary import check_percent

        local = Path(args.challenger.removeprefix("file://"))
        if not args.challenger.startswith(("s3://", "models:/")) and not local.is_dir():
            raise FileNotFoundError(f"--challenger {args.challenger}: no such model folder")
        percent = CANARY_PERCENT if args.canary_percent is None else args.canary_percent
        percent = check_percent(percent, "--canary-percent")
        argv += ["--challenger", args.challenger, "--canary-percent", str(percent)]
        argv += ["--canary-state", args.canary_state] if args.canary_state else []
    elif args.canary_state or args.canary_percent is not None:
        raise ValueError("--canary-percent / --canary-state: expected --challenger DIR too")
    if not model.startswith(("s3://", "models:/")):  # a folder: checked here, in a second
        resolve_model_uri(model)
    check_port(args.host, args.port)  # before the server spends time loading the model
    os.execve(argv[0], argv, server_env())


def cmd_catalog_add(args: argparse.Namespace) -> None:
    from llarapp.models.llarapp.catalog import add_tracks, read_new_tracks

    report = add_tracks(args.model, read_new_tracks(args.tracks))
    print(
        f"added {report['added']} track(s) to {args.model} (catalogue "
        f"{report['catalogue_before']} -> {report['catalogue_after']}): "
        f"{report['from_artist']} from their artist's played tracks, "
        f"{report['from_projector']} from the track projector; "
        f"{report['new_artists']} new artist(s), {report['generated_uris']} generated URI(s); "
        f"{len(report['skipped'])} skipped as already present"
    )
    for s in report["skipped"]:
        print(f"  skipped line {s['line']}: {s['track_uri']} ({s['reason']})")
    if report["added"]:
        print("restart `llarapp serve` on this folder (or deploy it again) to serve them")


def cmd_feedback_export(args: argparse.Namespace) -> None:
    from llarapp.serving.feedback import export_feedback

    _print_json(export_feedback(args.events, args.out, args.model))


def cmd_rollout(args: argparse.Namespace) -> None:
    import dataclasses
    import time

    from llarapp.pipeline.rollout import WAIT, RolloutRules, act, decide, live_stats

    rules = RolloutRules(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(RolloutRules)}
    )
    cluster = None
    if args.kubectl_namespace:  # the InferenceGraph's Splitter moves with the local split
        from functools import partial

        from llarapp.pipeline.cluster import move_traffic

        cluster = partial(move_traffic, namespace=args.kubectl_namespace)
    deadline = time.monotonic() + args.watch
    while True:
        decision = decide(*live_stats(args.server, args.events), rules)
        record = act(
            decision,
            audit_log=args.audit,
            server=args.server,
            target=args.target,
            tracking_uri=args.tracking_uri,
            cluster=cluster,
        )
        print(f"{record['at']} {decision.action}: {decision.reason}", flush=True)
        if decision.action != WAIT or time.monotonic() + args.interval > deadline:
            break
        time.sleep(args.interval)
    print(json.dumps(record, indent=2, default=float))


def cmd_hardening_bench(args: argparse.Namespace) -> None:
    import importlib.util

    from llarapp.benchmark.hardening import format_table, run_hardening

    missing = [m for m in ("schemathesis", "hypothesis") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"benchmark hardening needs {missing}: pip install -e '.[dev]'")
    result = run_hardening(
        args.out,
        args.work,
        soak_requests=args.soak_requests,
        concurrency=args.concurrency,
        workers=args.workers,
        api_examples=args.api_examples,
        ingest_examples=args.ingest_examples,
        with_side_by_side=args.side_by_side,
    )
    print(format_table(result))
    if not result["ok"]:
        raise RuntimeError(f"hardening: a check failed; see {args.out}")


def cmd_serving_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.serving import format_table, run_serving_benchmark

    result = run_serving_benchmark(
        args.model,
        args.mpd,
        args.out,
        requests=args.requests,
        seeds=args.seeds,
        k=args.k,
        split_seed=args.seed,
        max_playlists=args.max_playlists,
        work_dir=args.work_dir,
        workers=args.workers,
    )
    print(format_table(result))
    print(f"\nJSON: {args.out}\nlatency histogram: {result['chart']}")


def cmd_ann_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.ann import format_table, run_ann_benchmark

    result = run_ann_benchmark(
        args.model, args.out, args.tracks, args.playlists, args.requests, args.k, args.seed
    )
    print(format_table(result))
    print(f"\nsynthetic: {result['synthetic']}\nJSON: {args.out}")


def cmd_scale_bench(args: argparse.Namespace) -> None:
    from llarapp.benchmark.scale import format_table, run_scale_benchmark

    result = run_scale_benchmark(
        args.sizes,
        args.out,
        work_dir=args.work,
        max_minutes=args.max_minutes,
        epochs=args.epochs,
        requests=args.requests,
        seeds=args.seeds,
        k=args.k,
        workers=args.workers,
        seed=args.seed,
        chart=args.chart,
        reuse=args.reuse,
        redo=tuple(args.redo),
    )
    print(format_table(result))
    print(f"\nJSON: {args.out}" + (f"\nchart: {result['chart']}" if args.chart else ""))


def _sizes(text: str) -> list[int]:
    """``10000,100000``: positive integers, comma-separated."""
    return [_positive(part) for part in text.split(",") if part.strip()]


def _pipelines_runner() -> ModuleType:
    """:mod:`pipelines.runner`: compile, run and submit (kfp lives there, never in the library).

    Raises:
        RuntimeError: the ``pipelines`` package is not installed (an install of the library
            alone, e.g. the component image, has no pipelines).
    """
    try:
        from pipelines import runner
    except ModuleNotFoundError as exc:
        if exc.name != "pipelines":
            raise
        raise RuntimeError(
            "the package `pipelines` is not installed: `llarapp pipeline` and `llarapp demo` "
            "need the LLaRA++ repository installed (`pip install -e .` in it, as `make` does)"
        ) from exc
    return runner


def _json_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pipeline_arguments(args: argparse.Namespace, data_uri: str) -> dict:
    params: dict = {"data_uri": data_uri}
    if getattr(args, "train_config", None):
        path = Path(args.train_config)
        params["train_config"] = json.loads(
            path.read_text() if path.is_file() else args.train_config
        )
    for item in getattr(args, "param", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE (VALUE as JSON or text)")
        params[key] = _json_value(value)
    return params


def _run_local(args: argparse.Namespace, data_uri: str, defaults: dict) -> dict:
    from llarapp.pipeline.stages import export_available
    from llarapp.pipeline.summary import format_summary

    runner = _pipelines_runner()
    work = Path(args.work).resolve()
    params = {
        "tracking_uri": args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}",
        "serving_target": str(Path(args.serving_target).resolve()),
        **defaults,
    }
    if not export_available():
        params["export_format"] = "none"
        print("note: ONNX export stage not installed; the model will serve from PyTorch")
    params.update(_pipeline_arguments(args, data_uri))
    if args.compile:
        runner.compile_pipeline(args.pipeline)
    print(f"running pipeline {args.pipeline} locally (kfp.local) on {data_uri} -> {work}")
    result = runner.run_local(args.pipeline, params, work, cache=not args.no_cache)
    (work / "last_run.json").write_text(json.dumps({**result, "arguments": params}, indent=2))
    print()
    if args.pipeline == "continuous":  # its outputs: drift, retrain and where the reports are
        print(json.dumps(result["outputs"], indent=2, default=str))
    else:
        print(
            format_summary(
                result, tracking_uri=params["tracking_uri"], serving_target=params["serving_target"]
            )
        )
    if not result["ok"]:
        raise RuntimeError(f"pipeline {args.pipeline} failed; details above and in {work}")
    return result


def cmd_pipeline_compile(args: argparse.Namespace) -> None:
    runner = _pipelines_runner()
    for name in args.pipelines or sorted(runner.PIPELINES):
        print(f"wrote {runner.compile_pipeline(name)}")


def cmd_pipeline_run(args: argparse.Namespace) -> None:
    if not args.local:
        raise ValueError(
            "`llarapp pipeline run` runs on this machine only: pass --local "
            "(or send it to Kubeflow with `llarapp pipeline submit --host URL`)"
        )
    data = args.data
    if data is None:
        from llarapp.data.synth import generate

        data = str(Path(args.work) / "synth")
        generate(args.playlists, data, seed=args.seed)
        print(f"synthetic MPD: {args.playlists} playlists in {data}")
    _run_local(args, data, {})


def cmd_pipeline_submit(args: argparse.Namespace) -> None:
    runner = _pipelines_runner()
    params = _pipeline_arguments(args, args.data)
    run_id = runner.submit(
        args.pipeline,
        params,
        args.host,
        experiment=args.experiment,
        run_name=args.run_name,
        cache=not args.no_cache,
    )
    print(f"submitted {args.pipeline} to {args.host}: run {run_id}")


def cmd_loop(args: argparse.Namespace) -> None:
    import dataclasses

    from llarapp.monitoring import DEFAULT_WINDOW
    from llarapp.pipeline.loop import LoopConfig, run_loop
    from llarapp.pipeline.rollout import RolloutRules
    from llarapp.pipeline.stages import export_available

    runner = _pipelines_runner()
    work = Path(args.work).resolve()
    pipeline: dict = {}
    if args.quick:
        pipeline = {"train_config": QUICK_TRAIN_CONFIG, "tune_max_cases": 100,
                    "export_options": QUICK_EXPORT_OPTIONS,
                    "baselines": ["most_popular"]}  # fmt: skip
    if not export_available():
        pipeline["export_format"] = "none"
    config = LoopConfig(
        playlists=args.playlists,
        seed=args.seed,
        window=args.window or DEFAULT_WINDOW,
        canary_percent=args.canary_percent,
        round_requests=args.round_requests,
        rules=dataclasses.replace(
            RolloutRules(), min_requests=args.min_requests, min_feedback=args.min_feedback
        ),
        pipeline=pipeline,
    )
    if args.quick:  # the fine-tune of a quick champion: its epochs, LoRA on top
        config.continuous["train_config"] = {**QUICK_TRAIN_CONFIG, "epochs": 6}
    if args.train_config:  # both pipelines' (the champion's and its fine-tune's)
        text = args.train_config
        train = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
        config.pipeline["train_config"] = config.continuous["train_config"] = train

    def run_pipeline(name: str, arguments: dict) -> dict:
        print(f"running pipeline {name} locally (kfp.local) -> {work}", flush=True)
        return runner.run_local(name, arguments, work)

    result = run_loop(args.out, run_pipeline, work=work, data=args.data, config=config)
    keys = ("clean", "drifted", "retrain", "canary", "promote", "bad_challenger")
    summary = {
        k: {n: v for n, v in result[k].items() if n not in ("scores", "moved")} for k in keys
    }
    print(json.dumps(summary | {"alarm_to_promoted_s": result["alarm_to_promoted_s"]}, indent=2))
    print(f"\nJSON: {args.out}  (audit log: {work / 'serving' / 'rollout.jsonl'})")


def cmd_demo(args: argparse.Namespace) -> None:
    from llarapp.data.synth import generate
    from llarapp.training.roster import BASELINES

    work = Path(args.work)
    data = args.data
    if data is None:
        data = str(work / "synth")
        generate(args.playlists, data, seed=args.seed)
        print(f"synthetic MPD: {args.playlists} playlists in {data}")
    defaults = {
        "split_seed": args.seed,
        "baselines": args.models.split(",") if args.models else list(BASELINES),
    }
    if args.quick:
        defaults["train_config"] = QUICK_TRAIN_CONFIG
        defaults["tune_max_cases"] = 100
        defaults["export_options"] = QUICK_EXPORT_OPTIONS
    args.pipeline, args.compile, args.param, args.train_config = "training", False, [], None
    result = _run_local(args, data, defaults)
    print()
    print(next_steps(Path(args.serving_target), result["outputs"].get("model")))


#: the request the demo's closing lines send (a title only: the cold-start case)
DEMO_REQUEST = '{"name": "summer road trip", "k": 5}'


def next_steps(target: Path, trained: str | None = None, port: int = 8080) -> str:
    """The demo's closing lines: the exact commands to serve and query what it deployed to
    ``target`` (else the model it ``trained``, which the gate did not deploy), and the page's
    address."""
    from llarapp.pipeline.deploy import read_pointer

    pointer = read_pointer(target)
    exe = sys.argv[0] if Path(sys.argv[0]).name == "llarapp" else "llarapp"
    serve = f"{exe} serve"
    if pointer is None:
        if trained is None:
            return f"nothing deployed to {target} and no model trained; see above"
        head = f"Nothing deployed to {target} (the gate said no); to try the trained model anyway:"
        serve += f" --model {trained}"
    else:
        head = "Try it (the server in one terminal, the query in another):"
        if target.resolve() != Path("runs/serving").resolve():  # not where `serve` looks
            serve += f" --model {pointer['storage_uri']}"
    url = f"http://127.0.0.1:{port}"
    return "\n".join(
        [
            head,
            f"  {serve}",
            f"  curl -s {url}/v1/recommend -H 'Content-Type: application/json' -d '{DEMO_REQUEST}'",
            f"  the page: {url}/",
        ]
    )


# ``llarapp demo --quick`` / the tests: a small model, a short export benchmark
QUICK_TRAIN_CONFIG = {
    "als": {"factors": 16, "iterations": 8},
    "projector": {"hidden": 64, "epochs": 5},
    "n_candidates": 300,
    "hidden_size": 64,
    "epochs": 4,
    "max_valid_cases": 200,
}
QUICK_EXPORT_OPTIONS = {
    "encoder": False,
    "max_valid_cases": 50,
    "latency_runs": 20,
    "warmup_runs": 2,
    "throughput_runs": 2,
}


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
    p.add_argument("--feedback", help=FEEDBACK_HELP)
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
    p.add_argument(
        "--batch-size", type=_positive, default=None, help="texts per forward pass (default: 1)"
    )
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
    p.add_argument(
        "--distractor-frac",
        type=float,
        default=None,
        help="share of playlists set aside as catalogue distractors (default 0.2; 0: the "
        "leaky catalogue of earlier runs)",
    )
    p.set_defaults(fn=cmd_quality)

    p = bench.add_parser(
        "api",
        help="llarapp train + llarapp serve as a user runs them, every test case over HTTP, "
        "against the baselines fitted on the same playlists",
    )
    p.add_argument("--mpd", required=True, help="MPD slices: folder, glob or s3:// URI")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--seed", type=int, default=0, help="split seed (as benchmark quality's)")
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.add_argument("--baselines", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--work-dir", default=None, help="keep the tables, model and logs here")
    p.add_argument("--distractor-frac", type=float, default=None, help="as benchmark quality's")
    p.add_argument("--epochs", type=_positive, default=None, help="llarapp train --epochs")
    p.set_defaults(fn=cmd_api_bench)

    p = bench.add_parser("latency", help="retrieve + rank of one case, pinned threads")
    p.add_argument("--model", required=True, help="a trained llara++ MODEL_DIR")
    p.add_argument("--work-dir", required=True, help="data/ and split/ (quality --work-dir)")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--threads", type=_positive, default=1)
    p.add_argument("--cases", type=_positive, default=300)
    p.set_defaults(fn=cmd_latency)

    p = bench.add_parser("export", help="ONNX export variants: parity, latency, the choice")
    p.add_argument("--model", required=True, help="a trained MODEL_DIR (writes MODEL_DIR/onnx)")
    p.add_argument("--mpd", required=True, help="the MPD slices the model was trained on")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the model's)")
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.add_argument("--threads", type=_positive, default=1, help="intra_op_num_threads")
    p.add_argument("--max-valid-cases", type=_positive, default=400)
    p.add_argument("--no-encoder", action="store_true", help="skip the MiniLM encoder")
    p.add_argument("--work-dir", default=None, help="keep the ingest and split tables here")
    p.set_defaults(fn=cmd_export_bench)

    p = bench.add_parser("serving", help="the local server at concurrency 1 and 8 vs numpy")
    p.add_argument("--model", required=True, help="a trained MODEL_DIR")
    p.add_argument("--mpd", required=True, help="MPD slices: requests from validation cases")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--requests", type=_positive, default=500, help="per concurrency level")
    p.add_argument("--seeds", type=_positive, default=10, help="seed tracks per request")
    p.add_argument("--k", type=_positive, default=500, help="recommendations per request")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.add_argument("--work-dir", default=None, help="keep the tables and server log here")
    p.add_argument("--workers", type=_positive, default=2, help="server processes (one a core)")
    p.set_defaults(fn=cmd_serving_bench)

    p = bench.add_parser(
        "hardening", help="API and ingest fuzzing, injected faults, a soak (and side by side)"
    )
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--work", default="runs/hardening", help="the synthetic model, logs, inputs")
    p.add_argument("--soak-requests", type=_positive, default=20_000)
    p.add_argument("--concurrency", type=_positive, default=8, help="of the soak")
    p.add_argument("--workers", type=_positive, default=2, help="server processes")
    p.add_argument("--api-examples", type=_positive, default=100, help="per operation and mode")
    p.add_argument("--ingest-examples", type=_positive, default=300, help="slice sets")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also time llarapp train alone and two at once (about 10 minutes)",
    )
    p.set_defaults(fn=cmd_hardening_bench)

    p = bench.add_parser(
        "drift", help="false alarms and detection of the drift check, per drift kind and window"
    )
    p.add_argument("--mpd", required=True, help="MPD slices: folder, glob or s3:// URI")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--windows", type=_positive, default=None, help="K windows per kind and size")
    p.add_argument("--window-sizes", default=None, help="comma-separated (default 100,200,500)")
    p.add_argument("--default-window", type=_positive, default=None, help="the pipeline's size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-playlists", type=_positive, default=None)
    p.add_argument("--work-dir", default=None, help="keep the ingest and split tables here")
    p.set_defaults(fn=cmd_drift_bench)

    p = bench.add_parser("llara-lastfm", help="the LLaRA paper's LastFM protocol (HR@1)")
    p.add_argument("--data", required=True, help="folder with train_data.jsonl, Val_data.jsonl")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--seeds", type=_positive, default=5, help="candidate draws to average")
    p.add_argument("--models", default=None, help="comma-separated subset (default: all)")
    p.add_argument(
        "--mpd",
        default=None,
        help="MPD playlists (folder of mpd.slice.*.json): artist co-occurrence features for "
        "llara++",
    )
    p.set_defaults(fn=cmd_lastfm)

    p = bench.add_parser(
        "ann", help="exact vs indexed retrieval on a large synthetic catalogue (docs/scale.md)"
    )
    p.add_argument("--model", required=True, help="a trained MODEL_DIR: ranker, projector, ALS")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--tracks", type=_positive, default=1_000_000, help="synthetic catalogue")
    p.add_argument("--playlists", type=_positive, default=300_000, help="synthetic titles")
    p.add_argument("--requests", type=_positive, default=200, help="title + 10 seeds each")
    p.add_argument("--k", type=_positive, default=500, help="recommendations per request")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_ann_bench)

    p = bench.add_parser(
        "scale", help="cost of every stage from 10 k to 1 M synthetic playlists (docs/scale.md)"
    )
    p.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000],
                   help="playlists, comma-separated (default 10000,100000,1000000)")  # fmt: skip
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--chart", default=None, help="PNG of the log-log cost curves")
    p.add_argument("--max-minutes", type=float, default=60.0,
                   help="budget of the whole run; what does not fit is extrapolated")  # fmt: skip
    p.add_argument("--work", default="runs/scale", help="data, models and logs of each size")
    p.add_argument("--epochs", type=_positive, default=None, help="llarapp train --epochs")
    p.add_argument("--requests", type=_positive, default=200, help="per concurrency")
    p.add_argument("--seeds", type=_positive, default=5, help="seed tracks a request (+ title)")
    p.add_argument("--k", type=_positive, default=500, help="recommendations per request")
    p.add_argument("--workers", type=_positive, default=2, help="llarapp serve --workers")
    p.add_argument("--seed", type=int, default=0, help="synth and train seed")
    p.add_argument(
        "--reuse", default=None, help="an earlier --out (same settings): its sizes are not rerun"
    )
    p.add_argument(
        "--redo",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=[],
        help="stages of the reused sizes to run again (comma-separated, e.g. serve), on their "
        "folders under --work",
    )
    p.set_defaults(fn=cmd_scale_bench)

    p = groups.add_parser(
        "train",
        help="train LLaRA++ (features, ALS, projector, ranker): settings chosen on a split, "
        "then refitted on every playlist",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--mpd", help="MPD slices: folder, glob or s3:// URI")
    source.add_argument("--data", help="an ingest folder (`llarapp data ingest`) instead")
    p.add_argument("--out", required=True, help="MODEL_DIR: everything export and serving need")
    p.add_argument("--feedback", help=FEEDBACK_HELP + " (with --mpd)")
    p.add_argument("--work", default=None, help="keep the ingest and split tables here")
    p.add_argument(
        "--split-run",
        default=None,
        help="also save the split run's model here (fitted on the training fold only: the one "
        "to score on the split's test fold)",
    )
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument(
        "--curriculum",
        choices=("linear", "none", "text-only"),
        default="linear",
        help="linear: text-only tokens giving way to hybrid ones (default); none: hybrid from "
        "the start; text-only: no behavior vectors anywhere, an ablation",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rank-folds",
        type=_positive,
        default=1,
        help="quarters of the training playlists giving ranker cases, each retrieved by a stage "
        "fitted without it (1-4; 4: every playlist, at 4x the case retrieval)",
    )
    p.add_argument("--max-playlists", type=_positive, default=None, help="with --mpd")
    p.add_argument("--base-model", default=None, help="retrain: fine-tune this MODEL_DIR's ranker")
    p.add_argument(
        "--lora-r", type=int, default=8, help="with --base-model: LoRA rank (0: every weight)"
    )
    p.set_defaults(fn=cmd_train)

    mon = groups.add_parser("monitor", help="drift checks of served traffic (Evidently)")
    mon = mon.add_subparsers(dest="cmd", required=True, metavar="CMD")
    p = mon.add_parser("profile", help="the reference profile: the traffic a model expects")
    p.add_argument("--model", required=True, help="the trained MODEL_DIR (its catalogue)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", help="JSON lines, one /v1/recommend body a line")
    source.add_argument("--log", help="the serving event store (runs/serving/events.db)")
    p.add_argument("--last", type=_positive, default=None, help="with --log: the latest N")
    p.add_argument("--out", required=True, help="folder for window.parquet + vectors.npz")
    p.set_defaults(fn=cmd_monitor_profile)
    p = mon.add_parser("check", help="the latest logged requests against the profile")
    p.add_argument("--model", required=True, help="the served MODEL_DIR (its catalogue)")
    p.add_argument(
        "--profile",
        default=None,
        help="a `llarapp monitor profile` folder (default: MODEL/reference, written by "
        "`llarapp train` and the pipeline's train stage)",
    )
    p.add_argument("--log", required=True, help="the serving event store (runs/serving/events.db)")
    p.add_argument("--last", type=_positive, default=None, help="window size (default: 500)")
    p.add_argument("--out", required=True, help="folder for the HTML/JSON report and drift.json")
    p.set_defaults(fn=cmd_monitor_check)

    p = groups.add_parser("serve", help="encoder, retriever, ranker + /v1/recommend (KServe)")
    p.add_argument(
        "--model",
        default=None,
        help="folder, s3:// or models:/NAME@ALIAS (default: the model runs/serving/current.json "
        "points at, as `make demo` deploys it, else runs/model)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--events", default="runs/serving/events.db", help="feedback + request log")
    p.add_argument("--sample-rate", type=float, default=0.1, help="share of requests logged")
    p.add_argument("--graph", default=None, help="InferenceGraph YAML (default: the manifest)")
    p.add_argument("--ranker-backend", choices=("auto", "onnx", "torch"), default="auto")
    p.add_argument("--workers", type=_positive, default=1,
                   help="server processes sharing the port (each loads the model)")  # fmt: skip
    p.add_argument(
        "--challenger",
        default=None,
        help="canary: a second model (folder, s3://, models:/) beside --model",
    )
    p.add_argument(
        "--canary-percent",
        type=float,
        default=None,
        help=f"with --challenger: its share of traffic, sticky per playlist_id, 0..100 "
        f"(default {CANARY_PERCENT:g}); change it at run time with POST /v1/canary",
    )
    p.add_argument(
        "--canary-state", default=None, help="the split's state file (default EVENTS.canary.json)"
    )
    p.set_defaults(fn=cmd_serve)

    cat = groups.add_parser("catalog", help="a trained model's catalogue: add new releases")
    cat = cat.add_subparsers(dest="cmd", required=True, metavar="CMD")
    p = cat.add_parser("add", help="add tracks nobody has played yet, without retraining")
    p.add_argument("--model", required=True, help="a trained llara++ MODEL_DIR (rewritten)")
    p.add_argument(
        "--tracks",
        required=True,
        help="JSON lines: track_name, artist_name, optional album_name and track_uri",
    )
    p.set_defaults(fn=cmd_catalog_add)

    fb = groups.add_parser("feedback", help="likes and dislikes as training data")
    fb = fb.add_subparsers(dest="cmd", required=True, metavar="CMD")
    p = fb.add_parser(
        "export",
        help="feedback since the last export -> fresh MPD playlists + negatives (exactly once)",
    )
    p.add_argument("--events", required=True, help="the server's event store (--events)")
    p.add_argument("--out", required=True, help="folder that collects one folder per export")
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="MODEL_DIR whose track names name the tracks (repeat for several)",
    )
    p.set_defaults(fn=cmd_feedback_export)

    p = groups.add_parser(
        "rollout",
        help="the canary controller: promote, roll back or wait, from live per-version figures",
    )
    p.add_argument("--server", required=True, help="a `llarapp serve --challenger` base URL")
    p.add_argument("--events", required=True, help="that server's event store (--events)")
    p.add_argument("--audit", default="runs/serving/rollout.jsonl", help="the decisions' log")
    p.add_argument("--target", default=None, help="deploy target (current.json, challenger.json)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow registry whose aliases move (with --target)"
    )
    p.add_argument(
        "--kubectl-namespace",
        default=None,
        help="also move the InferenceGraph's Splitter in this namespace (kubectl patch)",
    )
    p.add_argument("--watch", type=float, default=0.0, help="keep deciding for this many s")
    p.add_argument("--interval", type=float, default=30.0, help="s between decisions")
    from llarapp.pipeline.rollout import RolloutRules  # the rules' defaults are the flags'

    defaults = RolloutRules()
    for name in ("min_requests", "min_feedback"):
        p.add_argument(
            f"--{name.replace('_', '-')}", type=_positive, default=getattr(defaults, name)
        )
    for name in ("alpha", "max_error_increase", "max_p99_ratio", "like_margin"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    p.set_defaults(fn=cmd_rollout)

    pipe = groups.add_parser("pipeline", help="Kubeflow pipelines: compile, run, submit")
    pipe = pipe.add_subparsers(dest="cmd", required=True, metavar="CMD")
    p = pipe.add_parser("compile", help="compile pipelines/*_pipeline.py to the YAML beside it")
    p.add_argument("pipelines", nargs="*", help="training, retraining (default: all)")
    p.set_defaults(fn=cmd_pipeline_compile)

    def add_params(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--pipeline", choices=("training", "retraining", "continuous"), default="training"
        )
        p.add_argument("--train-config", default=None, help="LlaraTrainConfig JSON (or a file)")
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="any pipeline parameter (VALUE as JSON or text); repeatable",
        )
        p.add_argument("--no-cache", action="store_true", help="rerun every stage")

    def add_local(p: argparse.ArgumentParser, work: str) -> None:
        p.add_argument("--work", default=work, help="task outputs, cache, MLflow SQLite")
        p.add_argument("--tracking-uri", default=None, help="MLflow (default: WORK/mlflow.db)")
        p.add_argument(
            "--serving-target", default="runs/serving", help="deploy writes current.json here"
        )
        p.add_argument("--playlists", type=_positive, default=2000, help="synthetic, no --data")
        p.add_argument("--seed", type=int, default=0)

    p = pipe.add_parser("run", help="run the compiled pipeline on this machine (kfp.local)")
    p.add_argument("--local", action="store_true", help="required: SubprocessRunner here")
    p.add_argument("--data", default=None, help="MPD slices (folder or s3://); default synthetic")
    p.add_argument("--compile", action="store_true", help="recompile the YAML first")
    add_params(p)
    add_local(p, "runs/pipeline")
    p.set_defaults(fn=cmd_pipeline_run)

    p = pipe.add_parser("submit", help="submit the compiled pipeline to Kubeflow (kfp.Client)")
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--data", required=True, help="MPD slices the cluster reads (s3://...)")
    p.add_argument("--experiment", default="llarapp")
    p.add_argument("--run-name", default=None)
    add_params(p)
    p.set_defaults(fn=cmd_pipeline_submit)

    p = groups.add_parser(
        "loop",
        help="the closed loop on one machine: drift -> retrain -> canary -> promote / rollback",
    )
    p.add_argument("--out", required=True, help="the result JSON")
    p.add_argument("--data", default=None, help="MPD slices (default: synthetic playlists)")
    p.add_argument("--work", default="runs/loop", help="registry, pointers, runs, event store")
    p.add_argument("--playlists", type=_positive, default=2000, help="synthetic playlists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=_positive, default=None,
                   help="requests per drift window (default: the monitor's, 500)")  # fmt: skip
    p.add_argument("--canary-percent", type=float, default=10.0)
    p.add_argument("--round-requests", type=_positive, default=200,
                   help="requests between two decisions of the controller")  # fmt: skip
    p.add_argument("--min-requests", type=_positive, default=100,
                   help="per version before the controller decides")  # fmt: skip
    p.add_argument("--min-feedback", type=_positive, default=50,
                   help="likes + dislikes per version before the controller promotes")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a small model (tests, a first look)")
    p.add_argument("--train-config", help="JSON (or a file of it): LlaraTrainConfig fields")
    p.set_defaults(fn=cmd_loop)

    p = groups.add_parser("demo", help="synthetic data -> the local training pipeline -> summary")
    p.add_argument("--data", default=None, help="MPD slices to use instead of synthetic data")
    p.add_argument(
        "--models", default=None, help="comma-separated baselines to beat (default: all four)"
    )
    p.add_argument("--quick", action="store_true", help="a small model and a short export check")
    p.add_argument("--no-cache", action="store_true", help="rerun every stage")
    add_local(p, "runs/demo")
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
        apply_thread_limits()  # before torch, onnxruntime or implicit load: llarapp.cpu
        args.fn(args)
    except Exception as exc:
        message = one_line(exc)
        if message is None:  # a bug: its traceback
            raise
        print(f"llarapp: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
