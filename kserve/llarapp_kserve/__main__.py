"""The local server: ``python -m llarapp_kserve --model DIR [--host 127.0.0.1] [--port 8080]``.

``llarapp serve`` runs this. See :mod:`llarapp_kserve.local` for the routes.

``--workers N`` (N > 1) makes this process a supervisor of N server processes that share the
port (``SO_REUSEPORT``: the kernel spreads connections over them). Each loads the model; none
accepts a connection before all have loaded, so "ready" means every worker is. SIGTERM / SIGINT
are passed on (each worker drains its in-flight requests); if a worker dies, the others are
stopped and the supervisor exits with the worker's code, for the orchestrator to restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

from llarapp.cpu import apply_thread_limits
from llarapp.serving.client import check_port


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object per line (a JSON message is merged in)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "pid": record.process}  # fmt: skip
        msg = record.getMessage()
        try:
            parsed = json.loads(msg) if msg.startswith("{") else None
        except json.JSONDecodeError:
            parsed = None
        entry.update(parsed if isinstance(parsed, dict) else {"msg": msg})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llarapp_kserve", description=__doc__)
    p.add_argument("--model", default=os.environ.get("LLARAPP_MODEL_URI", "runs/model"),
                   help="model folder, s3:// prefix or models:/NAME@ALIAS")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--events", default="runs/serving/events.db", help="feedback + request log")
    p.add_argument("--sample-rate", type=float, default=0.1, help="share of requests logged")
    p.add_argument("--graph", default=None, help="InferenceGraph YAML (default: the manifest)")
    p.add_argument("--ranker-backend", choices=("auto", "onnx", "torch"), default="auto")
    p.add_argument("--threads", type=int, default=4, help="worker threads for the steps")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each loads the model")  # fmt: skip
    p.add_argument(
        "--challenger",
        default=None,
        help="a second model (folder, s3://, models:/) to split traffic with",
    )
    p.add_argument(
        "--canary-percent",
        type=_percent,
        default=None,
        help="with --challenger: its share of /v1/recommend, 0..100 (default 10)",
    )
    p.add_argument(
        "--canary-state", default=None, help="the split's state file (default EVENTS.canary.json)"
    )
    p.add_argument("--barrier-fds", default=None, help=argparse.SUPPRESS)  # set by --workers
    return p


def _percent(value: str) -> float:
    from llarapp.serving.canary import check_percent

    try:
        return check_percent(float(value), "--canary-percent")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def supervise(argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of this server on one port; returns the exit code."""
    loaded_r, loaded_w = os.pipe()
    go_r, go_w = os.pipe()
    child = [sys.executable, "-m", "llarapp_kserve", *argv, "--workers", "1",
             "--barrier-fds", f"{loaded_w},{go_r}"]  # fmt: skip
    procs = [subprocess.Popen(child, pass_fds=(loaded_w, go_r)) for _ in range(workers)]
    os.close(loaded_w)
    os.close(go_r)
    stopping = []

    def stop(sig: int, _frame=None) -> None:
        stopping.append(sig)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loaded = 0
    while loaded < workers and not stopping:
        if any(p.poll() is not None for p in procs):
            break
        if select.select([loaded_r], [], [], 0.5)[0]:
            loaded += len(os.read(loaded_r, workers))
    if loaded == workers:
        os.write(go_w, b"g" * workers)
    code = 0
    while any(p.poll() is None for p in procs):
        died = [p for p in procs if p.poll() is not None and p.returncode != 0]
        if died and not stopping:
            code = died[0].returncode
            stop(signal.SIGTERM)
        time.sleep(0.2)
    if loaded < workers and not stopping:
        code = code or next((p.returncode for p in procs if p.returncode), 1)
    return code


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit(f"--workers={args.workers}: expected >= 1")
    if args.challenger is None and (args.canary_percent, args.canary_state) != (None, None):
        raise SystemExit("--canary-percent / --canary-state: expected --challenger DIR too")
    if args.barrier_fds is None:  # a port in use: said now, not after loading the model
        _fail_in_one_line(check_port, args.host, args.port)
    if args.workers > 1:
        rest = [a for i, a in enumerate(argv) if not _is_workers_flag(argv, i)]
        raise SystemExit(supervise(rest, args.workers))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # requests run concurrently on the step threads (and --workers processes); an OpenMP pool
    # per torch call only spins: 21 against 36 ms of CPU per request at k = 500 (2 cores).
    # Set, not defaulted: `llarapp` sizes OMP_NUM_THREADS to the CPU quota before exec'ing this
    os.environ["OMP_NUM_THREADS"] = "1"
    _fail_in_one_line(
        apply_thread_limits
    )  # BLAS pools and the retriever's scorer: the CPU quota (llarapp.cpu)
    os.environ["LLARAPP_SERVE_THREADS"] = str(args.threads)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    llarapp_log = logging.getLogger("llarapp")
    llarapp_log.addHandler(handler)
    llarapp_log.setLevel(logging.INFO)
    llarapp_log.propagate = False
    # kserve parses sys.argv when imported; keep our flags away from its parser
    sys.argv = sys.argv[:1]
    from llarapp_kserve.local import LocalServer

    server = _fail_in_one_line(
        LocalServer,
        args.model,
        events=args.events,
        sample_rate=args.sample_rate,
        graph=args.graph,
        ranker_backend=args.ranker_backend,
        challenger=args.challenger,
        canary_percent=10.0 if args.canary_percent is None else args.canary_percent,
        canary_state=args.canary_state,
    )
    barrier = tuple(int(fd) for fd in args.barrier_fds.split(",")) if args.barrier_fds else None
    server.serve(args.host, args.port, barrier=barrier)


def _fail_in_one_line(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an error the user can fix (a bad model URI, a port in use, S3 or
    MLflow unreachable) exits with one line saying what and how, instead of a traceback."""
    from llarapp.errors import one_line

    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        raise SystemExit(f"llarapp serve: error: {message}") from None


def _is_workers_flag(argv: list[str], i: int) -> bool:
    """``--workers N`` / ``--workers=N`` at ``argv[i]`` (either word)."""
    a = argv[i]
    return a.startswith("--workers=") or a == "--workers" or (i > 0 and argv[i - 1] == "--workers")


if __name__ == "__main__":
    main()
