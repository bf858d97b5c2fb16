"""The local server: ``python -m llarapp_kserve --model DIR [--host 127.0.0.1] [--port 8080]``.

``llarapp serve`` runs this. See :mod:`llarapp_kserve.local` for the routes.

``--workers N`` (N > 1) makes this process a supervisor of N server processes that share the
port (``SO_REUSEPORT``: the kernel spreads connections over them). The supervisor loads the
models once, then forks the workers: they share its memory copy-on-write (the runtime's
libraries and Python objects as well as the memory-mapped arrays), so a machine holds about one
model copy, and every worker is ready when the first accepts a connection. onnxruntime's thread
pools do not survive a fork, so each worker runs one thread per step (``LLARAPP_THREADS=1``):
the workers are the parallelism, one a core. SIGTERM / SIGINT are passed on (each worker drains
its in-flight requests); if a worker dies, the others are stopped and the supervisor exits with
the worker's code, for the orchestrator to restart.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import signal
import sys

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
                   help="server processes on the port, forked after loading the model")  # fmt: skip
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
    return p


def _percent(value: str) -> float:
    from llarapp.serving.canary import check_percent

    try:
        return check_percent(float(value), "--canary-percent")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def supervise(server, host: str, port: int, workers: int) -> int:
    """Fork ``workers`` processes serving ``server`` (loaded) on one port; returns the exit
    code: 0 after SIGTERM / SIGINT, else the first failed worker's."""
    server.store.close()  # each worker opens its own (LocalServer.serve)
    gc.collect()
    gc.freeze()  # the loaded objects stay shared: no collection in a worker writes to them
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's
    if trim is not None:  # loading's freed heap goes back to the system, not into each worker
        trim(0)
    pids: set[int] = set()
    stopping: list[int] = []

    def stop(sig: int, _frame=None) -> None:
        stopping.append(sig)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os._exit(_worker(server, host, port))
        pids.add(pid)
    code = 0
    while pids:
        pid, status = os.wait()
        pids.discard(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code != 0 and not stopping:
            code = exit_code
            stop(signal.SIGTERM)
    return code


def _worker(server, host: str, port: int) -> int:
    """A forked worker's life: serve until stopped; returns its exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn installs its own
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    try:
        server.serve(host, port, worker=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logging.getLogger("llarapp.serving").exception("worker %d failed", os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit(f"--workers={args.workers}: expected >= 1")
    if args.challenger is None and (args.canary_percent, args.canary_state) != (None, None):
        raise SystemExit("--canary-percent / --canary-state: expected --challenger DIR too")
    # a port in use: said now, not after loading the model
    _fail_in_one_line(check_port, args.host, args.port)
    if args.workers > 1:  # onnxruntime's pools do not survive the fork: one thread a worker
        os.environ["LLARAPP_THREADS"] = "1"
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
    if args.workers > 1:
        raise SystemExit(supervise(server, args.host, args.port, args.workers))
    server.serve(args.host, args.port)


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


if __name__ == "__main__":
    main()
