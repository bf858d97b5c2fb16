"""Stage timing shared by the benchmarks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``seconds[stage]`` (rounded to 10 ms)."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(time.perf_counter() - start, 2)
    log.info("stage %s: %.1f s", stage, seconds[stage])
