"""Run one pipeline stage: log it, time it, and on failure say which stage failed and why.

Every component body runs inside :func:`run_stage`. When ``$LLARAPP_PIPELINE_STATUS`` names a
file (the local runner sets it), one JSON object per finished stage is appended to it::

    {"stage": "train_ranker", "status": "ok", "seconds": 41.2, "ended_at": 1764680000.5}
    {"stage": "train_ranker", "status": "failed", "seconds": 3.1, "ended_at": ...,
     "error": "ValueError", "message": "..."}

(``ended_at``: unix time.)

A cached stage (nothing ran) writes nothing. On a cluster the variable is unset and the same
message reaches the pod log through the raised :class:`StageError`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llarapp.cpu import apply_thread_limits

log = logging.getLogger(__name__)

STATUS_VAR = "LLARAPP_PIPELINE_STATUS"


class StageError(RuntimeError):
    """A pipeline stage raised; the message names the stage and the original error."""

    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        self.error = error
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}")


def _record(entry: dict) -> None:
    path = os.environ.get(STATUS_VAR)
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


@contextmanager
def run_stage(stage: str) -> Iterator[None]:
    """Run the body as pipeline stage ``stage``.

    Raises:
        StageError: The body raised; chained to the original exception.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = apply_thread_limits()  # the pod's CPU quota, not the node's cores
    log.info("stage %s: start (%d threads)", stage, threads)
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        seconds = round(time.perf_counter() - start, 2)
        _record(
            {
                "stage": stage,
                "status": "failed",
                "seconds": seconds,
                "ended_at": time.time(),
                "error": type(exc).__name__,
                "message": str(exc),
            }
        )
        log.error("stage %s failed after %.1f s: %s: %s", stage, seconds, type(exc).__name__, exc)
        raise StageError(stage, exc) from exc
    seconds = round(time.perf_counter() - start, 2)
    _record({"stage": stage, "status": "ok", "seconds": seconds, "ended_at": time.time()})
    log.info("stage %s: done in %.1f s", stage, seconds)


def read_status(path: Path | str) -> list[dict]:
    """The entries :func:`run_stage` appended to ``path`` (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
