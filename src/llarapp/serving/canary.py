"""Canary traffic split: which of champion and challenger answers a request.

A request goes to the challenger when its bucket is below ``percent`` x 100 of
:data:`BUCKETS`: the bucket of a ``playlist_id`` is a SHA-1 of it (sticky: a playlist meets one
model while the percent stays, and raising the percent only moves playlists *to* the
challenger), a request without one draws its bucket at random.

File (``state_file``, JSON ``{"percent": P, "challenger": URI | null}``, written to a
temporary file and renamed): the split's current percent and the challenger model it splits
with, shared by every server process of one ``llarapp serve --workers N``. Each process re-reads
it when its inode or mtime changed (one ``stat`` per routed request), so a ``POST /v1/canary``
answered by any worker, or a controller rewriting the file, moves every worker's next request
(and a new challenger URI makes every worker load that model).

:class:`CanaryWindow`: each version's answers (count, 5xx, latency quantiles) since the current
champion / challenger pair began to split traffic -- the one window both are compared over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUCKETS = 10_000  # a percent has two decimals


def check_percent(value: object, where: str = "percent") -> float:
    """``value`` as a float in [0, 100]; :class:`ValueError` saying what was wrong otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}={value!r}: expected a number 0 <= p <= 100")
    if not 0 <= value <= 100:
        raise ValueError(f"{where}={value}: expected 0 <= p <= 100")
    return float(value)


def bucket(playlist_id: str | None, rng: random.Random) -> int:
    """The request's bucket in ``[0, BUCKETS)``: a hash of ``playlist_id``, else random."""
    if playlist_id is None:
        return rng.randrange(BUCKETS)
    digest = hashlib.sha1(playlist_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class CanarySplit:
    """The share of traffic the challenger gets, kept in ``state_file``.

    Args:
        state_file: the shared JSON state (parent folders are created).
        percent: the starting percent, written to ``state_file`` with ``challenger``; None to
            keep the file's.
        challenger: the challenger model's URI (None: no challenger).
    """

    def __init__(
        self, state_file: Path | str, percent: float | None, challenger: str | None = None
    ) -> None:
        self.state_file = Path(state_file)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._seen: tuple | str | None = "unread"  # the file's (inode, mtime, size) when read
        self._percent = 0.0
        self._challenger: str | None = None
        if percent is not None:
            self.start(percent, challenger)
        elif not self.state_file.is_file():
            raise FileNotFoundError(f"{self.state_file}: no canary state; give a percent")
        self._reload()

    @property
    def percent(self) -> float:
        """The current percent: the file's, re-read when it changed. A missing or bad file is
        logged once and the last good percent kept (requests keep flowing)."""
        try:
            self._reload()
        except (OSError, ValueError) as exc:
            log.error("canary state unusable (%s); keeping %s%%", exc, self._percent)
        return self._percent

    @property
    def challenger(self) -> str | None:
        """The challenger model's URI (the file's, re-read when it changed), or None."""
        self.percent  # noqa: B018 (re-reads the file)
        return self._challenger

    def _reload(self) -> None:
        try:
            st = os.stat(self.state_file)
            seen: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        with self._lock:
            self._seen = seen  # a missing or bad file is reported once, not on every request
            if seen is None:
                raise FileNotFoundError(f'{self.state_file}: missing; expected {{"percent": P}}')
            state = json.loads(self.state_file.read_text())
            if not isinstance(state, dict):
                raise ValueError(f'{self.state_file}: expected a JSON object {{"percent": P}}')
            percent = check_percent(state.get("percent"), f"{self.state_file}: percent")
            challenger = state.get("challenger")
            if challenger is not None and not isinstance(challenger, str):
                raise ValueError(f"{self.state_file}: challenger={challenger!r}, expected a URI")
            self._percent, self._challenger = percent, challenger

    def set(self, percent: object) -> float:
        """Check ``percent`` and write it for every process (the challenger stays); returns it
        as a float."""
        return self.start(percent, self.challenger)

    def start(self, percent: object, challenger: str | None) -> float:
        """Write ``percent`` and the ``challenger`` model URI for every process."""
        value = check_percent(percent)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"percent": value, "challenger": challenger}))
        os.replace(tmp, self.state_file)
        return value

    def to_challenger(self, playlist_id: str | None) -> bool:
        """Whether this request goes to the challenger."""
        return bucket(playlist_id, self._rng) < round(self.percent * BUCKETS / 100)


class CanaryWindow:
    """Both versions' answers since the current canary began: what a rollout controller compares.

    The Prometheus figures (``llarapp_recommend_*``) count from the process's start, so the
    champion's would hold the traffic from before the canary (before a drift alarm: another mix
    of requests) while the challenger's hold the canary's alone; a latency or like-rate rule
    would compare two different traffics. The window starts again whenever the (champion,
    challenger) pair changes. It keeps the last ``keep`` latencies of each version (exact
    quantiles) and every answer's count, per process (``--workers N``: each its own).
    """

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._pair: tuple[str, str] | None = None
        self._since: float | None = None
        self._counts: dict[str, list[int]] = {}  # version -> [requests, 5xx]
        self._seconds: dict[str, deque[float]] = {}

    def record(self, pair: tuple[str, str], version: str, status: int, seconds: float) -> None:
        """One ``/v1/recommend`` answer of ``version`` while ``pair`` (champion, challenger)
        split the traffic."""
        with self._lock:
            if pair != self._pair:
                self._pair, self._since = pair, time.time()
                self._counts = {v: [0, 0] for v in pair}
                self._seconds = {v: deque(maxlen=self.keep) for v in pair}
            counts = self._counts.get(version)
            if counts is None:  # routed before the pair changed: neither window's
                return
            counts[0] += 1
            counts[1] += status >= 500
            if status < 400:
                self._seconds[version].append(seconds)

    def summary(self, pair: tuple[str, str] | None) -> dict[str, Any]:
        """``{"since": unix time | null, "versions": {VERSION: {"requests", "errors",
        "p50_ms", "p99_ms"}}}`` for ``pair`` (empty when it has answered nothing yet)."""
        with self._lock:
            if pair is None or pair != self._pair:
                return {"since": None, "versions": {}}
            versions = {}
            for version, (requests, errors) in self._counts.items():
                ms = np.asarray(self._seconds[version], dtype=float) * 1000.0
                p50, p99 = np.percentile(ms, [50, 99]).tolist() if ms.size else (None, None)
                versions[version] = {"requests": requests, "errors": errors,
                                     "p50_ms": p50, "p99_ms": p99}  # fmt: skip
            return {"since": self._since, "versions": versions}
