"""Request windows: the per-request features drift checks compare, from bodies or the request log.

A :class:`Window` is one row per recommendation request:

    n_seeds          float64  seed tracks sent
    unknown_share    float64  share of those seeds the catalogue does not know (0 with no seeds)
    seed_popularity  float64  mean log1p(popularity) of the known seeds (NaN with none known)
    title_only       int64    1 when the request has a title and no seeds
    title            str      the playlist title ("" when absent)

plus ``vectors``, (rows, 384) float32: the MiniLM vector of each title (of "" when absent, so
requests without a title are a point of the distribution too).

Sources: :func:`window_from_bodies` (``/v1/recommend`` JSON bodies, checked as the server checks
them; a seed is known when its ``track_uri`` is in the catalogue) and :func:`window_from_log`
(the ``requests`` table of :mod:`llarapp.serving.store`, whose ``n_unknown`` is the server's own
count: seeds it resolved by neither URI nor name).

Files (:meth:`Window.save` / :meth:`Window.load`), a folder: ``window.parquet`` (the columns
above) and ``vectors.npz`` (``vectors`` float32, read with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from llarapp.data.dataset import load_cases, load_train
from llarapp.data.split import FOLDS_FILE
from llarapp.models.base import ARRAYS_FILE
from llarapp.serving.request import RecommendRequest, RequestError, parse_recommend, request_body
from llarapp.text import DIM

WINDOW_FILE = "window.parquet"
VECTORS_FILE = "vectors.npz"
#: The tabular columns, in order.
COLUMNS = ("n_seeds", "unknown_share", "seed_popularity", "title_only")


@dataclass(frozen=True)
class Catalogue:
    """What a model knows: ``popularity[track_uri]`` for every catalogue track."""

    popularity: dict[str, float]

    @classmethod
    def from_model(cls, model_dir: Path | str) -> Catalogue:
        """The catalogue of a trained llara++ folder (``arrays.npz``: track_uris, popularity).

        Raises:
            FileNotFoundError: ``model_dir`` has no ``arrays.npz``.
        """
        path = Path(model_dir) / ARRAYS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected a trained llara++ MODEL_DIR")
        with np.load(path, allow_pickle=False) as z:
            uris, pop = z["track_uris"], z["popularity"].astype(np.float64)
        return cls(dict(zip(uris.tolist(), pop.tolist(), strict=True)))

    @classmethod
    def of_training_fold(cls, data_dir: Path | str, split_dir: Path | str) -> Catalogue:
        """The tracks of the split's training playlists, each counted in how many of them hold
        it, scaled by ``fitted / training`` playlists (fitted: every fold but distractors, what
        the served model counts over)."""
        folds = pq.read_table(Path(split_dir) / FOLDS_FILE, columns=["fold"]).column("fold")
        counts = pd.Series(folds.to_pylist()).value_counts()
        scale = (counts.sum() - counts.get("distractor", 0)) / max(counts.get("train", 0), 1)
        train = load_train(data_dir, split_dir)
        pop = np.asarray(train.matrix.sum(axis=0)).ravel() * scale
        return cls(dict(zip(train.track_uris.tolist(), pop.tolist(), strict=True)))


@dataclass(frozen=True)
class Window:
    """Per-request features of a set of requests (see the module docstring)."""

    frame: pd.DataFrame
    vectors: np.ndarray  # (rows, 384) float32

    def __post_init__(self) -> None:
        if len(self.frame) == 0:
            raise ValueError("request window is empty: expected at least one request")
        if self.vectors.ndim != 2 or self.vectors.shape != (len(self.frame), DIM):
            raise ValueError(
                f"title vectors have shape {self.vectors.shape}; expected ({len(self.frame)}, "
                f"{DIM}): one {DIM}-d MiniLM vector per request"
            )

    def __len__(self) -> int:
        return len(self.frame)

    def save(self, folder: Path | str) -> Path:
        """Write ``window.parquet`` and ``vectors.npz`` into ``folder``; returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.frame.to_parquet(folder / WINDOW_FILE, index=False)
        np.savez(folder / VECTORS_FILE, vectors=self.vectors.astype(np.float32))
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> Window:
        """Read a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: a file is missing.
        """
        folder = Path(folder)
        for name in (WINDOW_FILE, VECTORS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: expected a saved window")
        with np.load(folder / VECTORS_FILE, allow_pickle=False) as z:
            vectors = z["vectors"]
        return cls(pd.read_parquet(folder / WINDOW_FILE), vectors)


def _window(rows: list[dict[str, Any]], titles: list[str], encode) -> Window:
    if not rows:
        raise ValueError("request window is empty: expected at least one request")
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {"n_seeds": "float64", "unknown_share": "float64", "seed_popularity": "float64",
         "title_only": "int64"}
    )  # fmt: skip
    frame["title"] = titles
    return Window(frame, np.asarray(encode(titles), dtype=np.float32))


def _row(title: str | None, n_seeds: int, n_unknown: int, known_pop: list[float]) -> dict:
    return {
        "n_seeds": n_seeds,
        "unknown_share": n_unknown / n_seeds if n_seeds else 0.0,
        "seed_popularity": float(np.mean(np.log1p(known_pop))) if known_pop else np.nan,
        "title_only": int(bool(title) and n_seeds == 0),
    }


def window_from_bodies(bodies: Sequence[Any], catalogue: Catalogue, encode) -> Window:
    """Features of ``/v1/recommend`` bodies (dicts, or checked :class:`RecommendRequest`).

    Args:
        bodies: request bodies as the server receives them.
        catalogue: the model's tracks; a seed is known when its ``track_uri`` is one of them.
        encode: ``texts -> (n, 384)`` vectors (:meth:`llarapp.text.TextEncoder.encode`).

    Raises:
        ValueError: ``bodies`` is empty, or body ``i`` is not a valid request (the server's
            message, prefixed with ``bodies[i]``).
    """
    rows, titles = [], []
    for i, body in enumerate(bodies):
        try:
            req = body if isinstance(body, RecommendRequest) else parse_recommend(body)
        except RequestError as exc:
            raise ValueError(f"bodies[{i}]: {exc.message}") from exc
        pops = [catalogue.popularity.get(t.track_uri) for t in req.tracks if t.track_uri]
        known = [p for p in pops if p is not None]
        rows.append(_row(req.name, len(req.tracks), len(req.tracks) - len(known), known))
        titles.append(req.name or "")
    return _window(rows, titles, encode)


REFERENCE_DIR = "reference"
"""The reference profile training writes inside MODEL_DIR (:func:`write_reference`)."""


def write_reference(
    model_dir: Path | str, data_dir: Path | str, split_dir: Path | str, encode, k: int = 500
) -> Window:
    """The reference profile of a model just trained: the validation and test cases of its
    training split as ``/v1/recommend`` bodies (held-out playlists, the traffic the model was
    chosen on), saved to ``MODEL_DIR/reference/`` (:meth:`Window.save`).

    The cases are profiled as new listeners look to the served model: against the catalogue of
    the split's training fold (a seed only held-out playlists hold is unknown, as a new
    listener's own tracks are), with popularity counts scaled to the served model's (it was
    fitted on every playlist but distractors: ``fitted / training-fold`` playlists). Profiled
    against the served catalogue, which holds every held-out track, the reference would know
    every seed and any real traffic would look drifted.

    Raises:
        ValueError: The split has no validation or test case.
    """
    cases = [
        *load_cases(data_dir, split_dir, "valid"),
        *load_cases(data_dir, split_dir, "test"),
    ]
    if not cases:
        raise ValueError(f"{split_dir}: no validation or test case to profile")
    bodies = [request_body(ec.case, k) for ec in cases]
    window = window_from_bodies(bodies, Catalogue.of_training_fold(data_dir, split_dir), encode)
    window.save(Path(model_dir) / REFERENCE_DIR)
    return window


def read_bodies(path: Path | str) -> list[Any]:
    """Request bodies from a JSON-lines file (one ``/v1/recommend`` body a line; blank lines
    skipped).

    Raises:
        ValueError: a line is not JSON (its number in the message).
    """
    bodies = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                bodies.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{n}: not JSON ({exc.msg}); expected one body a line"
                ) from exc
    return bodies


def _open_request_log(db: Path | str) -> sqlite3.Connection:
    """A read-only connection to the serving event store ``db`` that has a ``requests`` table.

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``db`` has no ``requests`` table.
    """
    if not Path(db).is_file():
        raise FileNotFoundError(f"{db} not found: expected the request log of `llarapp serve`")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
    ).fetchone()
    if not found:
        conn.close()
        raise ValueError(f"{db}: no 'requests' table; expected a `llarapp serve` event store")
    return conn


def logged_requests(db: Path | str) -> int:
    """How many requests the ``requests`` table of a serving event store holds.

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``db`` has no ``requests`` table.
    """
    conn = _open_request_log(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def window_from_log(
    db: Path | str,
    catalogue: Catalogue,
    encode,
    *,
    since: float | None = None,
    last: int | None = None,
    model_version: str | None = None,
) -> Window:
    """Features of the requests logged in the ``requests`` table of the serving event store.

    Args:
        db: the SQLite file ``llarapp serve`` logs to (``runs/serving/events.db``).
        catalogue: the served model's tracks (seed popularity of the logged ``seed_uris``).
        encode: ``texts -> (n, 384)`` vectors.
        since: only requests logged at or after this unix time.
        last: only the latest ``last`` of those requests.
        model_version: only requests this model version answered.

    Raises:
        FileNotFoundError: ``db`` does not exist.
        ValueError: ``db`` has no ``requests`` table, or no request matches.
    """
    where, params = [], []
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if model_version is not None:
        where.append("model_version = ?")
        params.append(model_version)
    query = "SELECT title, n_seeds, n_unknown, seed_uris FROM requests"
    query += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
    if last is not None:
        query += f" LIMIT {int(last)}"
    conn = _open_request_log(db)
    try:
        logged = conn.execute(query, params).fetchall()[::-1]  # oldest first
    finally:
        conn.close()
    if not logged:
        raise ValueError(
            f"{db}: no logged request matches (since={since}, model_version={model_version}); "
            "expected at least one"
        )
    rows, titles = [], []
    for title, n_seeds, n_unknown, seed_uris in logged:
        pops = [catalogue.popularity.get(u) for u in json.loads(seed_uris or "[]")]
        rows.append(_row(title, n_seeds or 0, n_unknown or 0, [p for p in pops if p is not None]))
        titles.append(title or "")
    return _window(rows, titles, encode)
