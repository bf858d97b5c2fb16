"""Text features stage: MiniLM vectors for every track text and playlist title of a dataset.

The vectors come from :class:`llarapp.text.TextEncoder` (its default backend and cache, see
:mod:`llarapp.text.encoder`).

:func:`embed_dataset` files in: ``tracks.parquet``, ``playlists.parquet`` of an ingest folder.
Files out (``out_dir``): ``tracks.npz`` (``track_uris`` str, ``vectors`` float32 (n, 384)) and
``titles.npz`` (``pids`` int64, ``vectors`` float32 (n, 384)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from llarapp.data.dataset import track_texts
from llarapp.data.schema import PLAYLISTS_FILE, TRACKS_FILE
from llarapp.text import DIM, TextEncoder, default_cache_dir


def embed_dataset(
    data_dir: Path | str, out_dir: Path | str, encoder: TextEncoder | None = None
) -> dict:
    """Embed every track text and playlist title of an ingest folder.

    Args:
        data_dir: Ingest folder holding ``tracks.parquet`` and ``playlists.parquet``.
        out_dir: Folder for ``tracks.npz`` and ``titles.npz``.
        encoder: The encoder to embed with; default one on :func:`default_cache_dir`.

    Returns:
        ``{"tracks": n, "titles": n, "dim": 384}``.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    encoder = encoder or TextEncoder(default_cache_dir())
    tracks = pq.read_table(data_dir / TRACKS_FILE).to_pandas()
    texts = track_texts(tracks)
    playlists = pq.read_table(data_dir / PLAYLISTS_FILE, columns=["pid", "name"]).to_pandas()
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        out_dir / "tracks.npz",
        track_uris=tracks["track_uri"].to_numpy(dtype=str),
        vectors=encoder.encode(texts),
    )
    np.savez(
        out_dir / "titles.npz",
        pids=playlists["pid"].to_numpy(np.int64),
        vectors=encoder.encode(playlists["name"].tolist()),
    )
    encoder.flush()
    return {"tracks": len(tracks), "titles": len(playlists), "dim": DIM}
