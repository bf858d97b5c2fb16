"""Four strong baselines behind the :class:`~llarapp.models.base.Recommender` interface.

- ``most_popular``: training playlist counts.
- ``item_knn``: item-item co-occurrence of the known seeds (cosine-like normalisation).
- ``als``: ``implicit`` ALS; a new playlist is folded in with ``recalculate_user``.
- ``title_knn``: the tracks of training playlists whose titles embed nearest to the case title.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from llarapp.config import ALSConfig, ItemKNNConfig, TitleKNNConfig, from_json, to_json
from llarapp.data.dataset import Case, TrainSet
from llarapp.models.base import Recommender, csr_arrays, csr_from_arrays

log = logging.getLogger(__name__)


class MostPopular(Recommender):
    """Most-popular tracks of the training playlists (the same list for every case)."""

    name = "most_popular"

    def _fit(self, train: TrainSet) -> None:
        pass

    def scores(self, case: Case) -> np.ndarray | None:
        return None


class ItemKNN(Recommender):
    """Item-based kNN on playlist co-occurrence.

    ``score(j) = sum_{s in seeds} C[s, j] / (n_s ** (1 - alpha) * n_j ** alpha)``, where
    ``C[s, j]`` counts training playlists holding both tracks and ``n`` is a track's count.
    """

    name = "item_knn"

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or ItemKNNConfig()
        self._item_playlists: sp.csr_matrix | None = None  # (n_items, n_playlists)

    def config_dict(self) -> dict[str, Any]:
        return to_json(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ItemKNN:
        return cls(from_json(ItemKNNConfig, config))

    def _fit(self, train: TrainSet) -> None:
        self._item_playlists = train.matrix.T.tocsr()

    def _arrays(self) -> dict[str, np.ndarray]:
        return csr_arrays("item_playlists", self._item_playlists)

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._item_playlists = csr_from_arrays("item_playlists", arrays)

    def scores(self, case: Case) -> np.ndarray | None:
        seeds = self.known_seeds(case)
        if seeds.size == 0:
            return None
        n = np.maximum(self.popularity, 1.0)
        a = self.config.alpha
        # (n_playlists,) vote of each training playlist: its seeds, each down-weighted
        votes = self._item_playlists[seeds].T @ (n[seeds] ** -(1.0 - a))
        return (self._item_playlists @ votes) * n**-a


def bm25_item_weights(matrix: sp.csr_matrix, k1: float, b: float, item_norm: np.ndarray):
    """BM25 on a playlist x track matrix: tracks are documents, playlists are terms.

    Args:
        matrix: (n_playlists, n_items) binary CSR.
        k1, b: BM25 saturation and length normalisation.
        item_norm: (n_items,) ``(1 - b) + b * count / mean_count`` from the training set.

    Returns:
        The weighted CSR matrix (same shape); a playlist's weight falls with its length.
    """
    n_docs = float(len(item_norm))  # documents are tracks
    lengths = np.diff(matrix.indptr)  # a playlist's document frequency is its length
    idf = np.log(max(n_docs, 2.0)) - np.log1p(lengths)
    coo = matrix.tocoo()
    data = coo.data * (k1 + 1.0) / (k1 * item_norm[coo.col] + coo.data) * idf[coo.row]
    return sp.csr_matrix((np.maximum(data, 1e-3), (coo.row, coo.col)), shape=matrix.shape)


class ALS(Recommender):
    """Implicit-feedback matrix factorisation (``implicit.cpu.als``), fold-in for new playlists."""

    name = "als"

    def __init__(self, config: ALSConfig | None = None, num_threads: int = 0) -> None:
        super().__init__()
        self.config = config or ALSConfig()
        self.num_threads = num_threads
        self._model = None
        self._item_norm: np.ndarray | None = None

    def config_dict(self) -> dict[str, Any]:
        return to_json(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ALS:
        return cls(from_json(ALSConfig, config))

    @property
    def item_factors(self) -> np.ndarray:
        """(n_items, factors) float32 behavior vectors."""
        return self._model.item_factors

    @property
    def user_factors(self) -> np.ndarray:
        """(n_train_playlists, factors) float32, rows as in the fitted matrix (after fit only)."""
        return self._model.user_factors

    def _new_model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        with threadpool_limits(1, "blas"):  # its constructor warns about a BLAS thread pool
            return AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                random_state=c.seed,
                calculate_training_loss=False,
                num_threads=self.num_threads,
            )

    def _weigh(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.bm25:
            return matrix.astype(np.float32)
        return bm25_item_weights(
            matrix, self.config.bm25_k1, self.config.bm25_b, self._item_norm
        ).astype(np.float32)

    def _fit(self, train: TrainSet) -> None:
        b = self.config.bm25_b
        self._item_norm = (1.0 - b) + b * self.popularity / max(self.popularity.mean(), 1e-9)
        self._model = self._new_model()
        with threadpool_limits(1, "blas"):  # implicit's advice: its OpenMP loop owns the cores
            self._model.fit(self._weigh(train.matrix), show_progress=False)
        self._model.num_threads = 1  # a one-row fold-in is slower with a thread pool

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors, "item_norm": self._item_norm}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._model = self._new_model()
        self._model.num_threads = 1
        factors = np.asarray(arrays["item_factors"], np.float32)  # mapped read-only
        # implicit's Cython fold-in (BM25 weights) takes writable buffers only
        self._model.item_factors = factors.copy() if self.config.bm25 else factors
        self._model.user_factors = np.zeros((1, self.config.factors), dtype=np.float32)
        self._item_norm = arrays["item_norm"]

    def user_vector(self, seeds: np.ndarray) -> np.ndarray:
        """Fold a new playlist holding catalogue tracks ``seeds`` into factor space.

        Without BM25 weights: implicit's ``recalculate_user`` normal equations, solved in numpy
        with its cached ``YtY`` (0.15 against 0.66 ms for 10 seeds: no sparse matrices)."""
        if not self.config.bm25:
            m = self._model
            items, counts = np.unique(seeds, return_counts=True)
            y = m.item_factors[items]
            confidence = (m.alpha * counts).astype(np.float32)
            a = m.YtY + m.regularization * np.eye(m.factors, dtype=np.float32)
            a += y.T @ ((confidence - 1.0)[:, None] * y)
            return np.linalg.solve(a, confidence @ y).astype(np.float32)
        row = sp.csr_matrix(
            (np.ones(len(seeds), dtype=np.float32), (np.zeros(len(seeds), dtype=np.int64), seeds)),
            shape=(1, self.n_items),
        )
        return self._model.recalculate_user(0, self._weigh(row))

    @property
    def n_items(self) -> int:
        return len(self.track_uris)

    def scores(self, case: Case) -> np.ndarray | None:
        seeds = self.known_seeds(case)
        if seeds.size == 0:
            return None
        return self.item_factors @ self.user_vector(seeds)


class TitleKNN(Recommender):
    """Playlist-title kNN: vote the tracks of the nearest training titles (MiniLM cosine)."""

    name = "title_knn"

    def __init__(self, config: TitleKNNConfig | None = None, encoder=None) -> None:
        super().__init__()
        self.config = config or TitleKNNConfig()
        self._encoder = encoder
        self._title_vectors: np.ndarray | None = None  # (n_playlists, 384)
        self._playlist_items: sp.csr_matrix | None = None  # (n_playlists, n_items)

    @property
    def encoder(self):
        if self._encoder is None:
            from llarapp.text import TextEncoder, default_cache_dir

            self._encoder = TextEncoder(default_cache_dir(), progress=False)
        return self._encoder

    def config_dict(self) -> dict[str, Any]:
        return to_json(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TitleKNN:
        return cls(from_json(TitleKNNConfig, config))

    def _fit(self, train: TrainSet) -> None:
        self._title_vectors = self.encoder.encode([str(t) for t in train.titles])
        self._playlist_items = train.matrix.tocsr()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"title_vectors": self._title_vectors, **csr_arrays("pl", self._playlist_items)}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._title_vectors = arrays["title_vectors"]
        self._playlist_items = csr_from_arrays("pl", arrays)

    def scores(self, case: Case) -> np.ndarray | None:
        if not case.title or not case.title.strip():
            return None
        sims = self._title_vectors @ self.encoder.encode([case.title])[0]
        k = min(self.config.neighbours, len(sims))
        near = np.argpartition(-sims, k - 1)[:k]
        weights = np.maximum(sims[near], 0.0) ** self.config.power
        return self._playlist_items[near].T @ weights
