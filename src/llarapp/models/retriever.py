"""Two-stage retrieval, stage one: a case -> the top-N candidate tracks with their features.

The catalogue is every track with text: warm tracks (in training playlists, with ALS factors)
first, then cold tracks (text only, behavior vector from the track projector). Four sources
each score the whole catalogue, exactly (``argpartition``):

- ``seed``: behavior-space query of the seeds — ALS fold-in (``recalculate_user``) of warm
  seeds, else the mean projected vector of cold/unknown seeds — dotted with every track;
- ``title``: the title projector's query vector dotted with every track;
- ``knn``: item co-occurrence with the warm seeds (warm tracks only);
- ``title_knn``: votes of the training playlists whose titles are nearest to the case's title
  in MiniLM space (warm tracks only).

Their top-N lists are fused by reciprocal rank (RRF, k=60) into N candidates. Per candidate the
retriever returns :data:`FEATURES`, scaled per case so the ranker sees stable ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

FEATURES = (
    "seed_score",
    "title_score",
    "knn_score",
    "title_knn_score",
    "log_popularity",
    "is_cold",
    "rrf",
)
N_SOURCES = 4  # the first four features are the sources' scores
RRF_K = 60.0


@dataclass
class Retrieved:
    """Candidates of one case (catalogue indices) and their (N, len(FEATURES)) features."""

    candidates: np.ndarray
    features: np.ndarray


class Retriever:
    """Exact top-N retrieval over warm + cold tracks.

    Args:
        behavior: (n_items, f) float32 — ALS factors for warm items, projected for cold ones.
        is_cold: (n_items,) bool.
        popularity: (n_items,) training playlist counts (0 for cold).
        item_playlists: (n_warm, n_train_playlists) CSR, warm items' playlists (item-kNN).
        knn_alpha: item-kNN normalisation exponent.
        n_candidates: N.
        title_vectors: (n_train_playlists, text_dim) MiniLM title vectors of the playlists of
            ``item_playlists``' columns (title-kNN source); None disables that source.
        title_neighbours: title-kNN: the nearest titles that vote.
        title_power: title-kNN: vote weight ``max(cosine, 0) ** power``.
    """

    def __init__(
        self,
        behavior: np.ndarray,
        is_cold: np.ndarray,
        popularity: np.ndarray,
        item_playlists: sp.csr_matrix,
        knn_alpha: float = 0.2,
        n_candidates: int = 800,
        title_vectors: np.ndarray | None = None,
        title_neighbours: int = 400,
        title_power: float = 2.0,
    ) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates={n_candidates}: expected >= 1")
        self.behavior = np.ascontiguousarray(behavior, dtype=np.float32)
        self.is_cold = is_cold.astype(bool)
        self.popularity = popularity.astype(np.float32)
        self.log_pop = np.log1p(self.popularity)
        self.item_playlists = item_playlists
        self.n_warm = item_playlists.shape[0]
        self.knn_alpha = knn_alpha
        self.n_candidates = n_candidates
        self._knn_norm = np.maximum(self.popularity[: self.n_warm], 1.0)
        self._pop_order = np.argsort(-self.popularity, kind="stable")
        self.title_vectors = title_vectors
        if title_vectors is not None and len(title_vectors) != item_playlists.shape[1]:
            raise ValueError(
                f"title_vectors: {len(title_vectors)} rows; expected one per playlist "
                f"of item_playlists ({item_playlists.shape[1]})"
            )
        self.title_neighbours, self.title_power = title_neighbours, title_power
        # playlist -> tracks rows for the title-kNN votes; only that source reads them
        self._playlist_items = item_playlists.T.tocsr() if title_vectors is not None else None

    @property
    def n_items(self) -> int:
        return len(self.behavior)

    def knn_scores(self, warm_seeds: np.ndarray) -> np.ndarray:
        """(n_warm,) co-occurrence scores of the warm seeds."""
        n, a = self._knn_norm, self.knn_alpha
        votes = self.item_playlists[warm_seeds].T @ (n[warm_seeds] ** -(1.0 - a))
        return np.asarray(self.item_playlists @ votes) * n**-a

    def title_knn_scores(self, title_text: np.ndarray) -> np.ndarray:
        """(n_warm,) votes of the training playlists with the nearest titles."""
        sims = self.title_vectors @ title_text
        k = min(self.title_neighbours, len(sims))
        near = np.argpartition(-sims, k - 1)[:k]
        weights = np.maximum(sims[near], 0.0) ** self.title_power
        return np.asarray(self._playlist_items[near].T @ weights).ravel()

    def retrieve(
        self,
        seed_query: np.ndarray | None,
        title_query: np.ndarray | None,
        warm_seeds: np.ndarray,
        exclude: np.ndarray,
        title_text: np.ndarray | None = None,
    ) -> Retrieved:
        """Fuse the sources for one case.

        Args:
            seed_query: (f,) behavior-space query of the seeds, or None.
            title_query: (f,) behavior-space query of the title, or None.
            warm_seeds: catalogue indices of warm seeds (item-kNN).
            exclude: catalogue indices never returned (the seeds).
            title_text: (text_dim,) MiniLM vector of the title (title-kNN), or None.
        """
        n, N = self.n_items, min(self.n_candidates, self.n_items)
        queries = [q for q in (seed_query, title_query) if q is not None]
        dense = self.behavior @ np.stack(queries, axis=1) if queries else np.zeros((n, 0))
        cols = iter(range(dense.shape[1]))
        seed_s = dense[:, next(cols)] if seed_query is not None else None
        title_s = dense[:, next(cols)] if title_query is not None else None
        knn_s = None
        if warm_seeds.size:
            knn_s = np.zeros(n, dtype=np.float32)
            knn_s[: self.n_warm] = self.knn_scores(warm_seeds)
        tknn_s = None
        if title_text is not None and self.title_vectors is not None:
            tknn_s = np.zeros(n, dtype=np.float32)
            tknn_s[: self.n_warm] = self.title_knn_scores(title_text)
        sources = (seed_s, title_s, knn_s, tknn_s)
        fused = np.zeros(n, dtype=np.float64)
        for scores in sources:
            if scores is None:
                continue
            s = scores.astype(np.float64, copy=True)
            s[exclude] = -np.inf
            top = np.argpartition(-s, N - 1)[:N]
            top = top[np.argsort(-s[top], kind="stable")]
            fused[top] += 1.0 / (RRF_K + 1.0 + np.arange(len(top)))
        fused[exclude] = -1.0
        if not (fused > 0).any():  # nothing to go on: popularity
            head = self._pop_order[: N + len(exclude)]
            candidates = head[~np.isin(head, exclude)][:N]
        else:
            fused += 1e-9 * self.log_pop  # ties and the tail: popularity
            candidates = np.argpartition(-fused, N - 1)[:N]
            candidates = candidates[np.argsort(-fused[candidates], kind="stable")]
            candidates = candidates[fused[candidates] >= 0]
        feats = np.zeros((len(candidates), len(FEATURES)), dtype=np.float32)
        for j, scores in enumerate(sources):
            if scores is not None:
                vals = scores[candidates]
                feats[:, j] = vals / max(float(np.abs(vals).max()), 1e-6)
        feats[:, N_SOURCES] = self.log_pop[candidates] / max(float(self.log_pop.max()), 1e-6)
        feats[:, N_SOURCES + 1] = self.is_cold[candidates]
        feats[:, N_SOURCES + 2] = fused[candidates] * (RRF_K + 1.0) / N_SOURCES
        return Retrieved(candidates.astype(np.int64), feats)
