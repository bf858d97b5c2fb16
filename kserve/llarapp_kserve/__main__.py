"""The local server: ``python -m llarapp_kserve --model DIR [--host 127.0.0.1] [--port 8080]``.

``llarapp serve`` runs this. See :mod:`llarapp_kserve.local` for the routes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object per line (a JSON message is merged in)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name}
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
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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

    server = LocalServer(
        args.model,
        events=args.events,
        sample_rate=args.sample_rate,
        graph=args.graph,
        ranker_backend=args.ranker_backend,
    )
    server.serve(args.host, args.port)


if __name__ == "__main__":
    main()
