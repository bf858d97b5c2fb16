"""Track names for responses, and name lookup for seeds sent without a URI.

File (``MODEL_DIR/track_names.parquet``, written by :func:`write_track_names`): one row per
catalogue track, columns ``track_uri`` (str), ``track_name`` (str), ``artist_name`` (str), in any
order. The model folder holds only URIs otherwise; a folder without this file still serves,
with empty names and URI-only seed matching.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

TRACK_NAMES_FILE = "track_names.parquet"
_COLUMNS = ["track_uri", "track_name", "artist_name"]


def write_track_names(model_dir: Path | str, tracks: Path | str | pa.Table) -> Path:
    """Write ``model_dir/track_names.parquet`` for the model's catalogue.

    Args:
        model_dir: A saved LLaRA++ folder (its ``arrays.npz`` names the catalogue).
        tracks: An ingest ``tracks.parquet`` (or the table itself) with at least the columns
            ``track_uri``, ``track_name``, ``artist_name``; rows outside the catalogue are
            dropped.

    Returns:
        The file written.
    """
    model_dir = Path(model_dir)
    table = tracks if isinstance(tracks, pa.Table) else pq.read_table(tracks, columns=_COLUMNS)
    missing = [c for c in _COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"track names: columns {missing} missing; expected {_COLUMNS}")
    with np.load(model_dir / "arrays.npz", allow_pickle=False) as z:
        catalogue = z["track_uris"].astype(str)
    table = table.select(_COLUMNS)
    keep = pc.is_in(table["track_uri"], value_set=pa.array(catalogue))
    table = table.filter(keep)
    out = model_dir / TRACK_NAMES_FILE
    pq.write_table(table, out)
    log.info("track names: %d of %d catalogue tracks -> %s", len(table), len(catalogue), out)
    return out


def name_key(track_name: str, artist_name: str) -> str:
    """How seeds without a URI are matched to the catalogue: case-folded, trimmed text."""
    return f"{track_name.strip().casefold()}\0{artist_name.strip().casefold()}"


class TrackNames:
    """Names aligned with a catalogue, and (track, artist) -> catalogue indices."""

    def __init__(self, uris: np.ndarray, names: np.ndarray, artists: np.ndarray) -> None:
        self.track_name = names  # (n,) object str, "" when unknown
        self.artist_name = artists
        self.by_name: dict[str, np.ndarray] = {}
        groups: dict[str, list[int]] = {}
        for i, (n, a) in enumerate(zip(names.tolist(), artists.tolist(), strict=True)):
            if n or a:
                groups.setdefault(name_key(n, a), []).append(i)
        self.by_name = {k: np.array(v, dtype=np.int64) for k, v in groups.items()}
        self.uris = uris

    @classmethod
    def from_table(cls, table: pa.Table, catalogue: np.ndarray) -> TrackNames:
        """Names for ``catalogue`` (the model's URIs) from a table with the columns
        ``track_uri``, ``track_name``, ``artist_name``; rows outside the catalogue are ignored."""
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"track names: columns {missing} missing; expected {_COLUMNS}")
        n = len(catalogue)
        names = np.full(n, "", dtype=object)
        artists = np.full(n, "", dtype=object)
        df = table.select(_COLUMNS).to_pandas()
        index = {u: i for i, u in enumerate(catalogue.tolist())}
        rows = np.asarray([index.get(u, -1) for u in df["track_uri"].tolist()], dtype=np.int64)
        ok = rows >= 0
        names[rows[ok]] = df["track_name"].fillna("").to_numpy(dtype=object)[ok]
        artists[rows[ok]] = df["artist_name"].fillna("").to_numpy(dtype=object)[ok]
        log.info("track names: %d of %d catalogue tracks named", int(ok.sum()), n)
        return cls(catalogue, names, artists)

    @classmethod
    def load(cls, model_dir: Path | str, catalogue: np.ndarray) -> TrackNames:
        """Names for ``catalogue`` (the model's URIs) from ``model_dir``, empty if absent."""
        path = Path(model_dir) / TRACK_NAMES_FILE
        if path.is_file():
            return cls.from_table(pq.read_table(path, columns=_COLUMNS), catalogue)
        log.warning("%s missing: responses carry URIs only, seeds match by URI only", path)
        empty = pa.table({c: pa.array([], pa.string()) for c in _COLUMNS})
        return cls.from_table(empty, catalogue)

    def to_table(self) -> pa.Table:
        """The names as a table (what :func:`write_track_names` takes)."""
        return pa.table(
            {
                "track_uri": pa.array(self.uris.astype(str)),
                "track_name": pa.array(self.track_name.astype(str)),
                "artist_name": pa.array(self.artist_name.astype(str)),
            }
        )

    def lookup(self, track_name: str, artist_name: str) -> np.ndarray:
        """Catalogue indices whose name and artist match (empty when none)."""
        return self.by_name.get(name_key(track_name, artist_name), np.zeros(0, np.int64))
