"""Two-stage retrieval, stage one: a case -> the top-N candidate tracks with their features.

The catalogue is every track with text: warm tracks (in training playlists, with ALS factors)
first, then cold tracks (text only, behavior vector from the track projector). Five sources
each score the whole catalogue, exactly (``argpartition``):

- ``seed``: behavior-space query of the seeds — ALS fold-in (``recalculate_user``) of warm
  seeds, else the mean projected vector of cold/unknown seeds — dotted with every track;
- ``title``: the title's query vector in behavior space dotted with every track: the ALS
  vectors of the training playlists with the nearest titles, weighted by ``cosine ** 4``
  (on mpd-dev's held-out training playlists, title-only NDCG 0.125 against 0.101 for an MLP
  projector from title text to the ALS vector, which 2,475 titles train poorly);
- ``knn``: item co-occurrence with the warm seeds (warm tracks only);
- ``title_knn``: votes of the training playlists whose titles are nearest to the case's title
  in MiniLM space (warm tracks only);
- ``artist``: the share of the seeds by each track's artist (warm tracks, and new releases
  added since training by ``llarapp catalog add``). A playlist's
  next tracks are often by an artist already in it, which ALS blurs: on mpd-dev this source
  took NDCG from 0.2456 to 0.2556. Over cold tracks too it reached 0.2899, but the benchmark's
  cold tracks are exactly those of held-out playlists, so a cold track by a seed's artist is
  there mostly because it is in this very playlist; a real catalogue holds an artist's whole
  discography, and that gain would not carry over. A new release added after training is
  the case it should surface, and nothing about it leaks: those it votes for.

Their top-N lists (only tracks a source scores above zero count for the sparse sources) are
fused by reciprocal rank (RRF, k=60) into N candidates. Per candidate the retriever returns
:data:`FEATURES`, scaled per case so the ranker sees stable ranges.

The two dense sources are one ``(2, f) x (f, n_items)`` product in onnxruntime, whose MLAS
kernel reads the prepacked catalogue once for both queries: 4.8 ms against 12.7 ms for two numpy
``gemv`` calls over 124,652 x 128 float32 on one core (OpenBLAS ``gemv`` is not memory bound
there; ORT's own TopK was slower than ``argpartition``, 1.8 against 0.9 ms for two rows).

Above a size (``ann_threshold``, :mod:`llarapp.models.ann`) the dense sources and the title
lookup read an approximate index instead (:attr:`Retriever.behavior_index`,
:attr:`Retriever.title_index`): a dense source is then its index's top N and, for the
features, its exact score of each candidate (:class:`IndexedSource`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llarapp.cpu import usable_cpus
from llarapp.models.ann import AnnIndex

FEATURES = (
    "seed_score",
    "title_score",
    "knn_score",
    "title_knn_score",
    "artist_score",
    "log_popularity",
    "is_cold",
    "rrf",
)
N_SOURCES = 5  # the first five features are the sources' scores
ARTIST = FEATURES.index("artist_score")  # the one source whose score is a share, not rescaled
RRF_K = 60.0


class DenseScorer:
    """``queries (q, f) -> (q, n)`` scores against a fixed catalogue, in onnxruntime.

    The catalogue is a graph initializer, so MLAS prepacks it at session creation. Two
    intra-op threads (where there are two cores) without spinning: 3.2 ms against 4.9 ms for
    one thread at 124,652 x 128, and idle threads sleep, so concurrent requests do not starve.
    """

    def __init__(self, behavior: np.ndarray, threads: int | None = None) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        n, f = behavior.shape
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["q", "catalogue"], ["scores"])],
            "dense_scores",
            [helper.make_tensor_value_info("q", TensorProto.FLOAT, [None, f])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, n])],
            [numpy_helper.from_array(np.ascontiguousarray(behavior.T), "catalogue")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        threads = threads or min(2, usable_cpus())
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self.session.run(None, {"q": q})[0]


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``scores``, best first; exact."""
    top = np.argpartition(scores, len(scores) - n)[len(scores) - n :] if len(scores) > n else None
    order = np.argsort(-(scores if top is None else scores[top]), kind="stable")
    return order if top is None else top[order]


class Votes:
    """A sparse source's votes over ``n`` tracks: the tracks voted for (ascending) and their
    votes; indexed like a dense array of length ``n`` (0 where there is no vote)."""

    def __init__(self, rows: np.ndarray, values: np.ndarray, n: int) -> None:
        self.rows, self.values, self.n = rows, values, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        if not len(self.rows):
            return np.zeros(len(rows), self.values.dtype)
        at = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return np.where(self.rows[at] == rows, self.values[at], 0).astype(self.values.dtype)

    def scaled(self, factors: np.ndarray) -> Votes:
        """Each vote times ``factors`` (indexed by track)."""
        return Votes(self.rows, self.values * factors[self.rows], self.n)


def row_votes(csr: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray, n: int) -> Votes:
    """``csr[rows].T @ weights`` (float32) over ``n`` columns, without scipy's per-call
    overhead and without an ``n``-long array where the votes are few: a catalogue of millions
    would cost a few ms a source to allocate, fill and scan."""
    starts, lengths = csr.indptr[rows], csr.indptr[rows + 1] - csr.indptr[rows]
    at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    weights = np.repeat(weights, lengths) * csr.data[at]
    cols = csr.indices[at]
    if 8 * len(cols) < n:  # sorting the few votes beats reading n
        voted, inverse = np.unique(cols, return_inverse=True)
        sums = np.bincount(inverse, weights=weights, minlength=len(voted))
    else:
        dense = np.bincount(cols, weights=weights, minlength=n)
        voted = np.flatnonzero(dense)
        sums = dense[voted]
    return Votes(voted, sums.astype(np.float32), n)


class IndexedSource:
    """A dense source read from an :class:`AnnIndex`: its top ``n`` tracks (best first, the
    excluded left out) and, indexed like a score array, its exact score of any track."""

    def __init__(
        self, index: AnnIndex, vectors: np.ndarray, query: np.ndarray, n: int, exclude: np.ndarray
    ) -> None:
        rows = index.search(query, n + len(exclude))[1][0]
        rows = rows[rows >= 0]
        self.top = rows[~np.isin(rows, exclude)][:n]
        self.vectors, self.query = vectors, query

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[rows] @ self.query


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
        playlist_vectors: (n_train_playlists, f) behavior vectors of the same playlists as
            ``title_vectors`` (their ALS vectors): the title query; None disables that source.
        title_query_power: the title query's weight of each neighbour, ``max(cosine, 0) **
            power``: sharper than the votes', as a vector blurs a wide neighbourhood.
        artist_codes: (n_items,) int artist of each track (-1: unknown); None disables the
            artist source (which votes for warm tracks and new releases only).
        n_trained: the catalogue size at training; the tracks from this index on are new
            releases added since (``llarapp catalog add``), which the artist source votes for
            as for warm tracks. None: there are none.
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
        playlist_vectors: np.ndarray | None = None,
        title_query_power: float = 4.0,
        artist_codes: np.ndarray | None = None,
        n_trained: int | None = None,
    ) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates={n_candidates}: expected >= 1")
        self.behavior = behavior
        self.is_cold = is_cold.astype(bool)
        self.popularity = popularity.astype(np.float32)
        self.log_pop = np.log1p(self.popularity)
        self.item_playlists = item_playlists
        self.n_warm = item_playlists.shape[0]
        self.n_trained = n_trained
        self.knn_alpha = knn_alpha
        self.n_candidates = n_candidates
        self._knn_norm = np.maximum(self.popularity[: self.n_warm], 1.0)
        self._knn_scale = self._knn_norm**-knn_alpha
        self._pop_order = np.argsort(-self.popularity, kind="stable")
        self._pop_tiebreak = 1e-3 * self.log_pop / max(float(self.log_pop.max()), 1e-6)
        self.title_vectors = title_vectors
        if title_vectors is not None and len(title_vectors) != item_playlists.shape[1]:
            raise ValueError(
                f"title_vectors: {len(title_vectors)} rows; expected one per playlist "
                f"of item_playlists ({item_playlists.shape[1]})"
            )
        self.title_neighbours, self.title_power = title_neighbours, title_power
        self.title_index: AnnIndex | None = None  # over title_vectors (llarapp.models.ann)
        self.playlist_vectors, self.title_query_power = playlist_vectors, title_query_power
        f = self.behavior.shape[1]
        if playlist_vectors is not None and (
            title_vectors is None or playlist_vectors.shape != (len(title_vectors), f)
        ):
            raise ValueError(
                f"playlist_vectors: shape {playlist_vectors.shape}; expected one {f}-vector "
                "per row of title_vectors"
            )
        self._playlist_items = item_playlists.T.tocsr()  # playlist -> tracks rows (both kNNs)
        self.artist_codes = self._artist_tracks = None
        if artist_codes is not None:
            if len(artist_codes) != len(behavior):
                raise ValueError(
                    f"artist_codes: {len(artist_codes)} entries; expected one per track "
                    f"({len(behavior)})"
                )
            self.artist_codes = np.asarray(artist_codes, dtype=np.int64)
            votes_for = np.zeros(len(behavior), bool)  # warm tracks and new releases
            votes_for[: self.n_warm] = True
            votes_for[len(behavior) if n_trained is None else n_trained :] = True
            known = np.flatnonzero(votes_for & (self.artist_codes >= 0))
            n_artists = int(self.artist_codes.max(initial=-1)) + 1
            self._artist_tracks = sp.csr_matrix(  # artist -> tracks rows
                (np.ones(len(known), np.float32), (self.artist_codes[known], known)),
                shape=(n_artists, len(behavior)),
            )

    #: intra-op threads of the dense product (None: two where there are two cores)
    dense_threads: int | None = None

    @property
    def behavior(self) -> np.ndarray:
        return self._behavior

    @behavior.setter
    def behavior(self, value: np.ndarray) -> None:
        self._behavior = np.ascontiguousarray(value, dtype=np.float32)
        self._dense: DenseScorer | None = None  # built on first use
        self.behavior_index: AnnIndex | None = None  # over these vectors (llarapp.models.ann)

    @property
    def n_items(self) -> int:
        return len(self.behavior)

    def dense_scores(self, queries: np.ndarray) -> np.ndarray:
        """``(q, n_items)`` behavior-space scores of ``queries`` ``(q, f)``."""
        if self._dense is None:
            self._dense = DenseScorer(self.behavior, self.dense_threads)
        return self._dense(queries)

    def dense_sources(
        self,
        seed_query: np.ndarray | None,
        title_query: np.ndarray | None,
        exclude: np.ndarray,
        n: int,
    ) -> list[np.ndarray | IndexedSource | None]:
        """The seed and title sources: every track's score, or with :attr:`behavior_index`
        an :class:`IndexedSource` each (None where there is no query)."""
        if self.behavior_index is not None:
            return [
                None
                if q is None
                else IndexedSource(self.behavior_index, self.behavior, q, n, exclude)
                for q in (seed_query, title_query)
            ]
        queries = [q for q in (seed_query, title_query) if q is not None]
        dense = iter(self.dense_scores(np.stack(queries)) if queries else ())
        return [None if q is None else next(dense) for q in (seed_query, title_query)]

    def knn_scores(self, warm_seeds: np.ndarray) -> Votes:
        """Co-occurrence scores of the warm seeds (over the warm tracks)."""
        n, a = self._knn_norm, self.knn_alpha
        n_playlists = self.item_playlists.shape[1]
        votes = row_votes(self.item_playlists, warm_seeds, n[warm_seeds] ** -(1.0 - a), n_playlists)
        held = votes.values != 0  # only the seeds' playlists vote
        votes = row_votes(self._playlist_items, votes.rows[held], votes.values[held], self.n_warm)
        return votes.scaled(self._knn_scale)

    def nearest_titles(self, title_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cosines)`` of the ``title_neighbours`` training titles nearest the title
        (its MiniLM vector), negative cosines as 0: what both title sources read."""
        if self.title_index is not None:
            sims, near = self.title_index.search(title_text, self.title_neighbours)
            found = near[0] >= 0
            return near[0][found], np.maximum(sims[0][found], 0.0)
        sims = self.title_vectors @ title_text
        k = min(self.title_neighbours, len(sims))
        near = np.argpartition(-sims, k - 1)[:k]
        return near, np.maximum(sims[near], 0.0)

    def title_knn_scores(self, nearest: tuple[np.ndarray, np.ndarray]) -> Votes:
        """Votes of the training playlists with the nearest titles (over the warm tracks)
        (:meth:`nearest_titles`)."""
        near, sims = nearest
        return row_votes(self._playlist_items, near, sims**self.title_power, self.n_warm)

    def title_query(self, nearest: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
        """(f,) the title's behavior-space query: the mean of the nearest titles' playlist
        vectors (:meth:`nearest_titles`), weighted by ``cosine ** title_query_power``; None
        without playlist vectors or when no title is near."""
        if self.playlist_vectors is None:
            return None
        near, sims = nearest
        weights = sims**self.title_query_power
        if weights.sum() <= 0:
            return None
        return (weights @ self.playlist_vectors[near] / weights.sum()).astype(np.float32)

    def artist_scores(self, seed_artists: np.ndarray) -> Votes:
        """The share of the seeds (their artist codes, -1: unknown) by each warm track's artist
        (no vote for other artists and for cold tracks)."""
        artists, counts = np.unique(seed_artists[seed_artists >= 0], return_counts=True)
        share = (counts / len(seed_artists)).astype(np.float64)
        return row_votes(self._artist_tracks, artists, share, self.n_items)

    def retrieve(
        self,
        seed_query: np.ndarray | None,
        title_query: np.ndarray | None,
        warm_seeds: np.ndarray,
        exclude: np.ndarray,
        nearest_titles: tuple[np.ndarray, np.ndarray] | None = None,
        seed_artists: np.ndarray | None = None,
    ) -> Retrieved:
        """Fuse the sources for one case.

        Args:
            seed_query: (f,) behavior-space query of the seeds, or None.
            title_query: (f,) behavior-space query of the title, or None.
            warm_seeds: catalogue indices of warm seeds (item-kNN).
            exclude: catalogue indices never returned (the seeds).
            nearest_titles: :meth:`nearest_titles` of the title (title-kNN), or None.
            seed_artists: artist code of every seed, in the catalogue or not (-1: unknown
                artist), or None: the artist source.
        """
        N = min(self.n_candidates, self.n_items)
        seed_s, title_s = self.dense_sources(seed_query, title_query, exclude, N)
        knn_s = self.knn_scores(warm_seeds) if warm_seeds.size else None
        tknn_s = None
        if nearest_titles is not None:
            tknn_s = self.title_knn_scores(nearest_titles)
        artist_s = None
        if seed_artists is not None and len(seed_artists) and self.artist_codes is not None:
            artist_s = self.artist_scores(np.asarray(seed_artists, dtype=np.int64))
        sources = (seed_s, title_s, knn_s, tknn_s, artist_s)
        tops = []
        for j, scores in enumerate(sources):
            if scores is None:
                continue
            if isinstance(scores, IndexedSource):  # its list already leaves the excluded out
                tops.append(scores.top)
                continue
            if isinstance(scores, Votes):  # the tracks voted for, the excluded left out
                keep = (scores.values > 0) & ~np.isin(scores.rows, exclude)
                among, votes = scores.rows[keep], scores.values[keep]
                if j == ARTIST:  # an artist's tracks: the more popular first
                    votes = votes + self._pop_tiebreak[among]
                tops.append(among[top_n(votes, N)])
                continue
            # the excluded never make a list, even when N reaches the whole catalogue
            scores[exclude] = -np.inf
            top = top_n(scores, N)
            tops.append(top[np.isfinite(scores[top])])
        lists = tops or [np.zeros(0, np.int64)]  # reciprocal rank fusion over their union
        union, inverse = np.unique(np.concatenate(lists), return_inverse=True)
        ranks = np.concatenate([1.0 / (RRF_K + 1.0 + np.arange(len(t))) for t in lists])
        rrf = np.bincount(inverse, weights=ranks, minlength=len(union))
        order = np.argsort(-(rrf + 1e-9 * self.log_pop[union]), kind="stable")  # ties: popularity
        candidates = union[order[:N]]
        if len(candidates) < N:  # the rest (or, with nothing to go on, all): popularity
            head = self._pop_order[: N + len(exclude) + len(candidates)]
            head = head[~np.isin(head, exclude) & ~np.isin(head, candidates)]
            candidates = np.concatenate([candidates, head[: N - len(candidates)]])
        cand_rrf = np.zeros(len(candidates))
        cand_rrf[: min(N, len(union))] = rrf[order[:N]]
        feats = np.zeros((len(candidates), len(FEATURES)), dtype=np.float32)
        for j, scores in enumerate(sources):
            if scores is not None:
                vals = np.zeros(len(candidates), np.float32)
                inside = candidates < len(scores)
                vals[inside] = scores[candidates[inside]]
                # per case to [-1, 1]; the artist share is one already, and its size tells
                feats[:, j] = vals if j == ARTIST else vals / max(float(np.abs(vals).max()), 1e-6)
        feats[:, N_SOURCES] = self.log_pop[candidates] / max(float(self.log_pop.max()), 1e-6)
        feats[:, N_SOURCES + 1] = self.is_cold[candidates]
        feats[:, N_SOURCES + 2] = cand_rrf * (RRF_K + 1.0) / N_SOURCES
        return Retrieved(candidates.astype(np.int64), feats)
