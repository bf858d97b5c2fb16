"""In-memory views that models consume: the training set and the evaluation cases.

Files in: an ingest folder (``tracks.parquet``, ``playlists.parquet``, ``interactions.parquet``)
and a split folder (``folds.parquet``, ``cases.parquet``). Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from llarapp.data.schema import (
    FEEDBACK_PID_BASE,
    INTERACTIONS_FILE,
    PLAYLISTS_FILE,
    TRACKS_FILE,
)
from llarapp.data.split import CASES_FILE, FOLDS_FILE


@dataclass(frozen=True)
class Track:
    """A track as a request names it: text always, URI when the caller knows one."""

    track_name: str
    artist_name: str
    track_uri: str | None = None
    album_name: str | None = None

    @property
    def text(self) -> str:
        """The text the encoder embeds: ``"{track} by {artist}"`` (+ album when known)."""
        base = f"{self.track_name} by {self.artist_name}"
        return f"{base} from {self.album_name}" if self.album_name else base


@dataclass(frozen=True)
class Case:
    """A playlist to continue: a title and/or seed tracks (either may be empty)."""

    title: str | None
    seeds: tuple[Track, ...] = ()
    pid: int | None = None
    category: str | None = None


@dataclass(frozen=True)
class EvalCase:
    """A :class:`Case` plus the hidden tracks it is scored against."""

    case: Case
    fold: str
    hidden: tuple[str, ...]
    hidden_cold: tuple[bool, ...]


@dataclass
class TrainSet:
    """Training playlists as a binary playlist x track matrix over the warm catalogue.

    Attributes:
        track_uris: (n_items,) catalogue; column j of ``matrix`` is ``track_uris[j]``.
        track_names, artist_names: (n_items,) text of each catalogue track.
        album_names: (n_items,) album or "" when unknown.
        pids: (n_playlists,) row ids of ``matrix``.
        titles: (n_playlists,) playlist titles.
        matrix: (n_playlists, n_items) CSR float32, 1 where the playlist holds the track.
    """

    track_uris: np.ndarray
    track_names: np.ndarray
    artist_names: np.ndarray
    album_names: np.ndarray
    pids: np.ndarray
    titles: np.ndarray
    matrix: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return len(self.track_uris)


def str_or_none(value) -> str | None:
    """A non-empty string, or None for null / NaN / "" (pandas 2 and 3 spell nulls differently)."""
    return value if isinstance(value, str) and value else None


def track_texts(tracks) -> list[str]:
    """Encoder text of every row of a tracks table (track, artist, album columns)."""
    columns = (tracks[c] for c in ("track_name", "artist_name", "album_name"))
    return [Track(n, a, album_name=str_or_none(al)).text for n, a, al in zip(*columns, strict=True)]


def _read_tracks(data_dir: Path):
    return pq.read_table(
        data_dir / TRACKS_FILE, columns=["track_uri", "track_name", "artist_name", "album_name"]
    ).to_pandas()


def load_train(
    data_dir: Path | str,
    split_dir: Path | str,
    folds: tuple[str, ...] = ("train",),
    fresh_weight: float = 1.0,
) -> TrainSet:
    """Build the :class:`TrainSet` from the playlists of ``folds`` (the training fold only by
    default); its catalogue is the tracks those playlists hold.

    A matrix entry is 1, or ``fresh_weight`` in a fresh playlist (a listener's likes,
    ``pid >= FEEDBACK_PID_BASE``): an explicit like can count for more than a playlist's
    implicit membership in everything fitted on the matrix (ALS, co-occurrence, title votes).
    """
    data_dir, split_dir = Path(data_dir), Path(split_dir)
    fold_table = pq.read_table(split_dir / FOLDS_FILE).to_pandas()
    train_pids = fold_table.loc[fold_table["fold"].isin(folds), "pid"].to_numpy()
    playlists = pq.read_table(data_dir / PLAYLISTS_FILE, columns=["pid", "name"]).to_pandas()
    playlists = playlists[playlists["pid"].isin(train_pids)].sort_values("pid")
    inter = pq.read_table(data_dir / INTERACTIONS_FILE, columns=["pid", "track_uri"]).to_pandas()
    inter = inter[inter["pid"].isin(train_pids)]

    tracks = _read_tracks(data_dir)
    tracks = tracks[tracks["track_uri"].isin(inter["track_uri"].unique())]
    tracks = tracks.sort_values("track_uri").reset_index(drop=True)
    col = np.searchsorted(tracks["track_uri"].to_numpy(), inter["track_uri"].to_numpy())
    pids = playlists["pid"].to_numpy()
    row = np.searchsorted(pids, inter["pid"].to_numpy())
    matrix = sp.csr_matrix(
        (np.ones(len(inter), dtype=np.float32), (row, col)), shape=(len(pids), len(tracks))
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    fresh = pids >= FEEDBACK_PID_BASE
    if fresh_weight != 1.0 and fresh.any():
        weights = sp.diags(np.where(fresh, fresh_weight, 1.0).astype(np.float32))
        matrix = (weights @ matrix).tocsr()
    return TrainSet(
        track_uris=tracks["track_uri"].to_numpy(dtype=object),
        track_names=tracks["track_name"].to_numpy(dtype=object),
        artist_names=tracks["artist_name"].to_numpy(dtype=object),
        album_names=tracks["album_name"].fillna("").to_numpy(dtype=object),
        pids=pids,
        titles=playlists["name"].to_numpy(dtype=object),
        matrix=matrix,
    )


def load_cases(
    data_dir: Path | str, split_dir: Path | str, fold: str, max_cases: int | None = None
) -> list[EvalCase]:
    """The evaluation cases of ``fold`` ("valid" or "test"), seeds resolved to their text."""
    if fold not in ("valid", "test"):
        raise ValueError(f"fold={fold!r}: expected 'valid' or 'test'")
    data_dir, split_dir = Path(data_dir), Path(split_dir)
    cases = pq.read_table(split_dir / CASES_FILE).to_pandas()
    cases = cases[cases["fold"] == fold]
    if max_cases is not None:
        cases = cases.iloc[:max_cases]
    tracks = _read_tracks(data_dir).set_index("track_uri")
    out = []
    for row in cases.itertuples(index=False):
        meta = tracks.loc[list(row.seed_uris)] if len(row.seed_uris) else tracks.iloc[:0]
        seeds = tuple(
            Track(r.track_name, r.artist_name, uri, str_or_none(r.album_name))
            for uri, r in zip(row.seed_uris, meta.itertuples(index=False), strict=True)
        )
        case = Case(
            title=str_or_none(row.title), seeds=seeds, pid=int(row.pid), category=row.category
        )
        out.append(EvalCase(case, fold, tuple(row.hidden_uris), tuple(row.hidden_cold)))
    return out


def artist_lookup(data_dir: Path | str) -> dict[str, str]:
    """``track_uri -> artist_name`` over every ingested track (for artist partial credit)."""
    tracks = pq.read_table(Path(data_dir) / TRACKS_FILE, columns=["track_uri", "artist_name"])
    return dict(zip(*(tracks.column(c).to_pylist() for c in tracks.column_names), strict=True))
