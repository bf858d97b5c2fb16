"""Durable feedback and request logs (SQLite, WAL, ``synchronous=FULL``), and their export.

File: one SQLite database (default ``runs/serving/events.db``) with two tables.

``feedback`` — one row per like/dislike, committed (WAL fsync'd) *before* the HTTP 200:

    id INTEGER, ts REAL (unix s), request_id TEXT, playlist_id TEXT, track_uri TEXT,
    liked INTEGER (1/0), title TEXT, seed_uris TEXT (JSON list), model_version TEXT

``requests`` — a sample (``sample_rate``) of served requests, the features drift checks need;
written by a background thread in batches (a request is never slowed by an fsync):

    id INTEGER, ts REAL, request_id TEXT, playlist_id TEXT, model_version TEXT, title TEXT,
    n_seeds INTEGER, n_known INTEGER, n_unknown INTEGER, k INTEGER, latency_ms REAL,
    top_score REAL, mean_score REAL, seed_uris TEXT (JSON), recommended TEXT (JSON, first 20)

``contexts`` — every served request's context (the background thread again), so feedback that
names a request finds its title and seeds whichever server process answered it (``--workers``);
rows older than ``context_ttl`` seconds are pruned as new ones arrive:

    request_id TEXT PRIMARY KEY, ts REAL, playlist_id TEXT, title TEXT, seed_uris TEXT (JSON),
    model_version TEXT

The title and seeds of a feedback row come from the request it answers: this process's recent
requests (a bounded map), else ``contexts``; an export fills what was still missing at insert
time (feedback faster than the context's batch) from ``contexts``, so feedback exports as
training data even for unsampled requests.

:func:`llarapp.serving.feedback.export_feedback` (``llarapp feedback export``) turns the
feedback into training data, each event exactly once.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from llarapp.serving.request import FeedbackEvent

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT, playlist_id TEXT,
    track_uri TEXT NOT NULL, liked INTEGER NOT NULL, title TEXT, seed_uris TEXT,
    model_version TEXT);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT, playlist_id TEXT,
    model_version TEXT, title TEXT, n_seeds INTEGER, n_known INTEGER, n_unknown INTEGER,
    k INTEGER, latency_ms REAL, top_score REAL, mean_score REAL, seed_uris TEXT,
    recommended TEXT);
CREATE TABLE IF NOT EXISTS contexts (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, playlist_id TEXT, title TEXT,
    seed_uris TEXT, model_version TEXT);
CREATE INDEX IF NOT EXISTS contexts_ts ON contexts (ts);
"""
_CONTEXT_COLUMNS = ("request_id", "ts", "playlist_id", "title", "seed_uris", "model_version")
_REQUEST_COLUMNS = (
    "ts", "request_id", "playlist_id", "model_version", "title", "n_seeds", "n_known",
    "n_unknown", "k", "latency_ms", "top_score", "mean_score", "seed_uris", "recommended",
)  # fmt: skip


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` (every commit fsync'd)."""
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class EventStore:
    """Feedback (synchronous, durable) and sampled request logs (background, batched).

    Args:
        path: the SQLite file (parent folders are created).
        sample_rate: share of served requests logged, in [0, 1].
        context_size: recent request ids remembered in memory for feedback context.
        context_ttl: seconds a request's context stays in the ``contexts`` table.
    """

    def __init__(
        self,
        path: Path | str,
        sample_rate: float = 0.1,
        context_size: int = 100_000,
        context_ttl: float = 7 * 86400.0,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate={sample_rate}: expected 0 <= x <= 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._conn = connect(self.path)
        self._conn.executescript(_SCHEMA)
        self._conn.commit()
        self._lock = threading.Lock()
        self._context: OrderedDict[str, dict] = OrderedDict()
        self._context_size = context_size
        self.context_ttl = context_ttl
        self._queue: queue.Queue = queue.Queue(maxsize=10_000)
        self._rng = random.Random()
        self._writer = threading.Thread(target=self._write_loop, name="request-log", daemon=True)
        self._writer.start()
        self._closed = False

    # ---------------------------------------------------------------- feedback
    def record_feedback(
        self, event: FeedbackEvent, model_version: str | None = None
    ) -> tuple[int, str | None]:
        """Insert and commit one event; returns its id once it is on disk, and the model
        version it is labelled with: its request's, else ``model_version`` (the version that
        serves its playlist, for feedback naming only a playlist)."""
        with self._lock:
            ctx = self._context.get(event.request_id or "")
            if ctx is None and event.request_id:  # served by another process, maybe
                ctx = _stored_context(self._conn, event.request_id)
        ctx = ctx or {}
        row = (
            time.time(),
            event.request_id,
            event.playlist_id or ctx.get("playlist_id"),
            event.track_uri,
            int(event.liked),
            ctx.get("title"),
            json.dumps(ctx.get("seed_uris", [])) if ctx else None,
            ctx.get("model_version") or model_version,
        )
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO feedback (ts, request_id, playlist_id, track_uri, liked, title, "
                "seed_uris, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            self._conn.commit()
            return int(cur.lastrowid), row[-1]

    # ---------------------------------------------------------------- request log
    def remember(self, request_id: str, context: dict[str, Any]) -> None:
        """Keep a served request's context (title, seeds) for feedback that names it: in
        memory, and in ``contexts`` for the other server processes (queued)."""
        with self._lock:
            self._context[request_id] = context
            while len(self._context) > self._context_size:
                self._context.popitem(last=False)
        if not self._closed:
            try:
                self._queue.put_nowait(("contexts", {"request_id": request_id, **context}))
            except queue.Full:
                log.warning("event queue full: request %s context kept in memory only", request_id)

    def maybe_log_request(self, row: dict[str, Any]) -> bool:
        """Queue ``row`` (keys: :data:`_REQUEST_COLUMNS`) with probability ``sample_rate``."""
        if self._closed or self._rng.random() >= self.sample_rate:
            return False
        row = {"ts": time.time(), **row}
        try:
            self._queue.put_nowait(("requests", row))
        except queue.Full:
            log.warning("request log queue full: dropping a sampled request")
            return False
        return True

    def _write_loop(self) -> None:
        conn = connect(self.path)
        # the request log and contexts may lose a last batch in a power cut, not feedback:
        # no fsync per batch (WAL, NORMAL), so a busy server does not write the disk each time
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = {
            table: f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
            for table, cols in (("requests", _REQUEST_COLUMNS), ("contexts", _CONTEXT_COLUMNS))
        }
        stop, since_prune = False, 0
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows: dict[str, list[tuple]] = {"requests": [], "contexts": []}
            for item in batch:
                if item is None:
                    stop = True
                    continue
                table, row = item
                cols = _REQUEST_COLUMNS if table == "requests" else _CONTEXT_COLUMNS
                row.setdefault("ts", time.time())
                rows[table].append(tuple(_cell(row.get(c)) for c in cols))
            since_prune += len(rows["contexts"])
            try:
                for table, values in rows.items():
                    if values:
                        conn.executemany(sql[table], values)
                if since_prune >= 10_000:
                    cutoff = time.time() - self.context_ttl
                    conn.execute("DELETE FROM contexts WHERE ts < ?", (cutoff,))
                    since_prune = 0
                conn.commit()
            except sqlite3.Error:
                log.exception("event log: %d rows not written", sum(map(len, rows.values())))
        conn.close()

    def close(self) -> None:
        """Flush the request log and close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=30)
        with self._lock:
            self._conn.close()


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _stored_context(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT playlist_id, title, seed_uris, model_version FROM contexts WHERE request_id = ?",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    seeds = json.loads(row[2]) if row[2] else []
    return {"playlist_id": row[0], "title": row[1], "seed_uris": seeds, "model_version": row[3]}


def read_feedback(
    path: Path | str, after: int = 0, upto: int | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Feedback rows with ``after < id <= upto`` (every row by default) and, with ``since``,
    stored at unix time ``ts >= since``, oldest first; context still missing is taken from
    ``contexts``."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    has_contexts = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'contexts'"
    ).fetchone()
    where = "WHERE f.id > ? AND f.id <= ?" + ("" if since is None else " AND f.ts >= ?")
    query = f"SELECT * FROM feedback f {where} ORDER BY id"
    if has_contexts:
        query = (
            "SELECT f.id, f.ts, f.request_id, f.track_uri, f.liked, "
            "COALESCE(f.playlist_id, c.playlist_id) AS playlist_id, "
            "COALESCE(f.title, c.title) AS title, "
            "COALESCE(f.seed_uris, c.seed_uris) AS seed_uris, "
            "COALESCE(f.model_version, c.model_version) AS model_version "
            f"FROM feedback f LEFT JOIN contexts c ON c.request_id = f.request_id {where} "
            "ORDER BY f.id"
        )
    try:
        bounds = (after, 2**62 if upto is None else upto, *(() if since is None else (since,)))
        return [dict(r) for r in conn.execute(query, bounds)]
    finally:
        conn.close()
