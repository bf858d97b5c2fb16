"""Feedback becomes training signal, each acknowledged event exactly once: ``llarapp feedback
export``.

Files in: the event store (:mod:`llarapp.serving.store`) — its ``feedback`` rows above the last
export's cutoff, their context (title, seed URIs) filled from ``contexts`` — and one or more
model folders whose ``track_names.parquet`` names the tracks (an MPD slice needs a track's name
and artist; tracks none of them names are left out and counted).

Files out: one folder per export, ``OUT/feedback-{A:012d}-{B:012d}/`` (A..B: the feedback ids
it read), written under ``OUT/.tmp-feedback-...`` and renamed whole:

- ``mpd.slice.{A}-{B}.json`` — MPD slice format (``{"info", "playlists"}``), what ``llarapp
  train --mpd`` / :func:`llarapp.data.ingest.ingest` read: one *fresh playlist* per playlist
  context that liked something — the context's latest title (``"untitled"`` when it had none),
  its seeds, then its liked tracks, in feedback order, each once. A context is the feedback's
  ``playlist_id``, else its ``request_id``. ``pid`` is :data:`FEEDBACK_PID_BASE` + the context's
  first feedback id in the batch (above any MPD pid; unique across exports).
- ``negatives.parquet`` — one row per disliked (context, track): ``feedback_id`` int64, ``ts``
  float64, ``pid`` int64 (the context's fresh playlist, null when it liked nothing),
  ``playlist_id`` str, ``request_id`` str, ``title`` str, ``seed_uris`` list<str>,
  ``track_uri`` str, ``model_version`` str — hard negatives for the ranker.
- ``batch.json`` — the counts (:func:`export_feedback`'s summary).

Within a batch a (context, track) keeps its latest event (a like then a dislike is a dislike).

Exactly once: the event DB holds ``feedback_exports`` (``first_id``, ``last_id``, ``ts``,
``out``, ``state``). An export (1) records its range as ``pending``, (2) writes the batch folder
to a temporary name and renames it, (3) marks the range ``done``; the cutoff is the highest
``done`` ``last_id``. An export that finds a ``pending`` range finishes it first: the batch
folder exists (crash after the rename) -> ``done``; it does not -> the range is dropped (and
its temporary folder removed), and its events are read again. Two exports at once are refused
(an ``flock`` on ``DB.export.lock``). No event can appear below a cutoff later: SQLite has one
writer at a time, so feedback ids become visible in the order they are assigned.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llarapp.data.names import TRACK_NAMES_FILE
from llarapp.data.schema import FEEDBACK_PID_BASE, NEGATIVES, NEGATIVES_FILE
from llarapp.serving.store import connect, read_feedback

log = logging.getLogger(__name__)

UNTITLED = "untitled"  # the name of a fresh playlist whose requests had no title
_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback_exports (
    last_id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, ts REAL NOT NULL, out TEXT NOT NULL,
    state TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Batch:
    """One export's range of feedback ids and where it goes."""

    first_id: int
    last_id: int
    out: Path

    @property
    def name(self) -> str:
        return f"feedback-{self.first_id:012d}-{self.last_id:012d}"

    @property
    def folder(self) -> Path:
        return self.out / self.name

    @property
    def tmp(self) -> Path:
        return self.out / f".tmp-{self.name}"


def track_names(models: Sequence[Path | str]) -> dict[str, tuple[str, str]]:
    """URI -> (track name, artist name) from each model folder's ``track_names.parquet`` (the
    first folder naming a URI wins)."""
    names: dict[str, tuple[str, str]] = {}
    for model in models:
        path = Path(model) / TRACK_NAMES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected a trained model folder")
        table = pq.read_table(path, columns=["track_uri", "track_name", "artist_name"])
        columns = (table[c].to_pylist() for c in table.column_names)
        for uri, track, artist in zip(*columns, strict=True):
            if uri not in names and track and artist:
                names[uri] = (track, artist)
    return names


def begin(db: Path | str, out: Path | str) -> Batch | None:
    """Finish a crashed export, then record the next range as pending.

    Returns:
        The batch to write, or None when no feedback arrived since the cutoff.
    """
    out = Path(out).resolve()
    conn = connect(db)
    try:
        conn.executescript(_SCHEMA)
        pending = conn.execute(
            "SELECT first_id, last_id, out FROM feedback_exports WHERE state = 'pending'"
        ).fetchall()
        for first_id, last_id, where in pending:
            old = Batch(first_id, last_id, Path(where))
            if old.folder.is_dir():  # renamed before the crash: complete, keep it
                conn.execute("UPDATE feedback_exports SET state = 'done' WHERE last_id = ?",
                             (last_id,))  # fmt: skip
                log.info("feedback export: %s was written before a crash; recorded", old.folder)
            else:  # never published: read its events again
                shutil.rmtree(old.tmp, ignore_errors=True)
                conn.execute("DELETE FROM feedback_exports WHERE last_id = ?", (last_id,))
                log.info("feedback export: %s was not written before a crash; redone", old.name)
        cutoff = conn.execute(
            "SELECT COALESCE(MAX(last_id), 0) FROM feedback_exports WHERE state = 'done'"
        ).fetchone()[0]
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()[0]
        batch = Batch(cutoff + 1, last, out) if last > cutoff else None
        if batch is not None:
            conn.execute(
                "INSERT INTO feedback_exports (first_id, last_id, ts, out, state) "
                "VALUES (?, ?, ?, ?, 'pending')",
                (batch.first_id, batch.last_id, time.time(), str(out)),
            )
        conn.commit()
        return batch
    finally:
        conn.close()


def write(db: Path | str, batch: Batch, names: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Read the batch's feedback and publish its folder (temporary folder, fsync, rename)."""
    rows = read_feedback(db, after=batch.first_id - 1, upto=batch.last_id)
    playlists, negatives, unnamed = _build(rows, names)
    shutil.rmtree(batch.tmp, ignore_errors=True)
    batch.tmp.mkdir(parents=True)
    summary = {
        "folder": str(batch.folder),
        "first_id": batch.first_id,
        "last_id": batch.last_id,
        "events": len(rows),
        "likes": sum(r["liked"] for r in rows),
        "dislikes": sum(not r["liked"] for r in rows),
        "playlists": len(playlists),
        "negatives": len(negatives),
        "unnamed_tracks": unnamed,
    }
    slice_doc = {
        "info": {"generated_on": time.strftime("%Y-%m-%d %H:%M:%S"), "slice": batch.name,
                 "version": "llarapp feedback export"},
        "playlists": playlists,
    }  # fmt: skip
    files = {
        f"mpd.slice.{batch.first_id}-{batch.last_id}.json": json.dumps(slice_doc),
        "batch.json": json.dumps(summary, indent=2),
    }
    for name, text in files.items():
        (batch.tmp / name).write_text(text)
    pq.write_table(pa.Table.from_pylist(negatives, NEGATIVES), batch.tmp / NEGATIVES_FILE)
    for path in batch.tmp.iterdir():
        _fsync(path)
    batch.tmp.rename(batch.folder)
    _fsync(batch.out)
    return summary


def commit(db: Path | str, batch: Batch) -> None:
    """Advance the cutoff past ``batch`` (its folder is published)."""
    conn = connect(db)
    try:
        conn.execute("UPDATE feedback_exports SET state = 'done' WHERE last_id = ?",
                     (batch.last_id,))  # fmt: skip
        conn.commit()
    finally:
        conn.close()


def export_feedback(
    db: Path | str, out: Path | str, models: Sequence[Path | str]
) -> dict[str, Any]:
    """Every feedback event since the last export -> one batch folder in ``out`` (see the
    module docstring for the files, and for why nothing is dropped or doubled by a crash).

    Args:
        db: the event store the server writes (``--events``).
        out: the folder that collects the batch folders.
        models: model folders whose ``track_names.parquet`` names the tracks.

    Returns:
        The batch's counts (``events`` 0 and no folder when nothing arrived since the cutoff).

    Raises:
        FileNotFoundError: ``db`` or a model's track names do not exist.
        RuntimeError: another export of ``db`` is running.
    """
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"{db}: no event store; expected the server's --events file")
    if not models:
        raise ValueError("models: none given; expected at least one model folder (names)")
    names = track_names(models)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(f"{db}.export.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"{db}: another feedback export is running ({lock.name})") from exc
        batch = begin(db, out)
        if batch is None:
            return {"folder": None, "events": 0}
        summary = write(db, batch, names)
        commit(db, batch)
    log.info("feedback export: %s", summary)
    return summary


def _build(
    rows: list[dict[str, Any]], names: dict[str, tuple[str, str]]
) -> tuple[list[dict], list[dict], int]:
    """(fresh MPD playlists, negative rows, tracks left out for want of a name)."""
    contexts: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = f"p:{r['playlist_id']}" if r["playlist_id"] else f"r:{r['request_id']}"
        ctx = contexts.setdefault(key, {"first": r["id"], "title": None, "seeds": {}, "votes": {}})
        ctx["title"] = r["title"] or ctx["title"]
        for uri in json.loads(r["seed_uris"]) if r["seed_uris"] else []:
            ctx["seeds"].setdefault(uri, None)
        ctx["votes"].pop(r["track_uri"], None)  # the latest event goes last
        ctx["votes"][r["track_uri"]] = r
    playlists, negatives, unnamed = [], [], set()
    for ctx in contexts.values():
        liked = [u for u, r in ctx["votes"].items() if r["liked"]]
        unnamed.update(u for u in liked if u not in names)
        liked = [u for u in liked if u in names]
        pid = FEEDBACK_PID_BASE + ctx["first"] if liked else None
        for uri, r in ctx["votes"].items():
            if not r["liked"]:
                negatives.append(
                    {"feedback_id": r["id"], "ts": r["ts"], "pid": pid,
                     "playlist_id": r["playlist_id"], "request_id": r["request_id"],
                     "title": ctx["title"], "seed_uris": list(ctx["seeds"]), "track_uri": uri,
                     "model_version": r["model_version"]}
                )  # fmt: skip
        if pid is None:
            continue
        unnamed.update(u for u in ctx["seeds"] if u not in names)
        uris = [u for u in dict.fromkeys([*ctx["seeds"], *liked]) if u in names]
        tracks = [
            {"pos": i, "track_uri": u, "track_name": names[u][0], "artist_name": names[u][1]}
            for i, u in enumerate(uris)
        ]
        playlists.append({"pid": pid, "name": ctx["title"] or UNTITLED,
                          "num_tracks": len(tracks), "tracks": tracks})  # fmt: skip
    negatives.sort(key=lambda n: n["feedback_id"])
    return playlists, negatives, len(unnamed)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
