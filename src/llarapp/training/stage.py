"""One retrieval stage: ALS + track projector + retriever over a catalogue of warm and cold tracks.

Training builds two: one fitted on part of the training playlists (its retrieved candidates
for the *other* part become the ranker's training cases, so the ranker never sees features
computed from the very playlist it is asked about), and one fitted on all training playlists
(what is saved and served).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llarapp.config import ALSConfig
from llarapp.data.dataset import TrainSet
from llarapp.models.baselines import ALS
from llarapp.models.projector import Projector, ProjectorConfig, fit_projector
from llarapp.models.retriever import Retrieved, Retriever

log = logging.getLogger(__name__)


@dataclass
class Catalog:
    """Every track with text, aligned arrays (warm tracks first)."""

    uris: np.ndarray  # (n,) str
    text: np.ndarray  # (n, text_dim) float32 MiniLM vectors
    artists: np.ndarray | None = None  # (n,) str artist names (fitting only; not served)

    def __post_init__(self) -> None:
        self.index = {u: i for i, u in enumerate(self.uris.tolist())}


@dataclass
class Query:
    """A case as the stage sees it: vectors, no URIs."""

    title_vec: np.ndarray | None  # (text_dim,)
    seed_idx: np.ndarray  # catalogue indices of known seeds
    extra_seed_text: np.ndarray  # (m, text_dim) seeds unknown to the catalogue
    extra_seed_artists: np.ndarray = field(  # (m,) their artists' codes (-1: unknown artist)
        default_factory=lambda: np.zeros(0, np.int64)
    )
    title_artists: np.ndarray = field(  # codes of the artists the title names (Stage.title_artists)
        default_factory=lambda: np.zeros(0, np.int64)
    )


@dataclass
class Stage:
    """Catalogue order, behavior vectors, the track projector and the retriever of one fit."""

    catalog: Catalog  # reordered: warm first
    n_warm: int
    als: ALS
    behavior: np.ndarray  # (n, f) ALS factors (warm) / projected (cold)
    popularity: np.ndarray  # (n,)
    track_projector: Projector
    retriever: Retriever
    report: dict
    fold_in: bool = True  # warm seeds query by ALS fold-in; False: mean of the seeds' vectors
    artist_names: np.ndarray | None = None  # (n_artists,) artist_key of each artist code

    @functools.cached_property
    def _artist_lookup(self) -> dict[str, int]:
        names = [] if self.artist_names is None else self.artist_names.tolist()
        return {n: i for i, n in enumerate(names)}

    def artist_code(self, name: str | None) -> int:
        """The code of artist ``name`` (compared as :func:`artist_key`), -1 when unknown."""
        return self._artist_lookup.get(artist_key(name), -1) if name else -1

    def title_artists(self, title: str | None) -> np.ndarray:
        """Codes of the artists a playlist title names, sorted: the artist whose name is the
        whole title (as :func:`artist_key` compares), else those named by its parts
        (:func:`title_parts`).

        Playlists are often named after an artist ("Paramore", "Eric Church", "Drake x
        Future"); the title then votes in the artist source as one more seed by that artist.
        """
        lookup = self._artist_lookup
        whole, parts = title_parts(title)
        if whole in lookup:
            return np.array([lookup[whole]], np.int64)
        return np.array(sorted({lookup[p] for p in parts if p in lookup}), np.int64)

    def without_behavior(self) -> Stage:
        """This stage as if no track had a behavior vector (the ``llara++/text-only``
        ablation): every track's vector is its projected text, as a cold track's is, the
        seeds query by the mean of theirs, and a training playlist's vector (the title query)
        is the mean of its tracks'. Co-occurrence, title and artist sources stay."""
        behavior = self.track_projector.project(self.catalog.text)
        retriever = copy.copy(self.retriever)  # the same sources over the new vectors
        retriever.behavior = behavior
        if retriever.playlist_vectors is not None:
            tracks = retriever.item_playlists.T.tocsr()  # playlist -> warm tracks
            counts = np.maximum(np.diff(tracks.indptr), 1)[:, None]
            means = np.asarray(tracks @ behavior[: self.n_warm]) / counts
            retriever.playlist_vectors = means.astype(np.float32)
        return dataclasses.replace(self, behavior=behavior, retriever=retriever, fold_in=False)

    def seed_query(self, q: Query) -> tuple[np.ndarray | None, np.ndarray]:
        """(seed query in behavior space, warm seed indices)."""
        warm = q.seed_idx[q.seed_idx < self.n_warm]
        if warm.size and self.fold_in:
            return self.als.user_vector(warm), warm
        vecs = [self.behavior[q.seed_idx]]
        if len(q.extra_seed_text):
            vecs.append(self.track_projector.project(q.extra_seed_text))
        stacked = np.concatenate(vecs)
        return (stacked.mean(axis=0) if len(stacked) else None), warm

    def retrieve(self, q: Query) -> tuple[Retrieved, np.ndarray | None, np.ndarray | None]:
        """The retrieved candidates, the seed query and the title query (behavior space)."""
        seed_q, warm = self.seed_query(q)
        nearest = title_q = None
        if q.title_vec is not None and self.retriever.title_vectors is not None:
            nearest = self.retriever.nearest_titles(q.title_vec)  # both title sources read it
            title_q = self.retriever.title_query(nearest)
        seed_artists = None
        if self.retriever.artist_codes is not None:
            seed_artists = np.concatenate(
                [self.retriever.artist_codes[q.seed_idx], q.extra_seed_artists, q.title_artists]
            )
        retrieved = self.retriever.retrieve(
            seed_q, title_q, warm, q.seed_idx, nearest, seed_artists=seed_artists
        )
        return retrieved, seed_q, title_q


def subset(train: TrainSet, rows: np.ndarray) -> TrainSet:
    """The playlists ``rows`` of ``train``, with tracks they never hold dropped."""
    matrix = train.matrix[rows]
    keep = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
    return TrainSet(
        track_uris=train.track_uris[keep],
        track_names=train.track_names[keep],
        artist_names=train.artist_names[keep],
        album_names=train.album_names[keep],
        pids=train.pids[rows],
        titles=train.titles[rows],
        matrix=sp.csr_matrix(matrix[:, keep]),
    )


def build_stage(
    train: TrainSet,
    catalog: Catalog,
    title_vecs: np.ndarray,
    als_config: ALSConfig,
    projector_config: ProjectorConfig,
    knn_alpha: float,
    n_candidates: int,
) -> Stage:
    """Fit ALS on ``train``, the track projector, and the retriever over the whole catalogue.

    Args:
        train: the playlists to fit on.
        catalog: every track with text (any order).
        title_vecs: (n_playlists of train, text_dim) title vectors aligned with ``train.pids``.
    """
    warm_idx = np.array([catalog.index[u] for u in train.track_uris.astype(str)])
    cold_mask = np.ones(len(catalog.uris), dtype=bool)
    cold_mask[warm_idx] = False
    order = np.concatenate([warm_idx, np.flatnonzero(cold_mask)])
    artists = catalog.artists[order] if catalog.artists is not None else None
    ordered = Catalog(catalog.uris[order], catalog.text[order], artists)
    n_warm = len(warm_idx)

    als = ALS(als_config).fit(train)
    factors = als.item_factors
    popularity = np.zeros(len(order), dtype=np.float32)
    popularity[:n_warm] = als.popularity
    track_proj, track_report = fit_projector(
        ordered.text[:n_warm],
        factors,
        np.log1p(als.popularity).astype(np.float32),
        projector_config,
    )
    cold = track_proj.project(ordered.text[n_warm:])
    n_by_artist, codes, names = 0, None, None
    if artists is not None:
        codes, names = artist_codes(artists)
        cold, n_by_artist = artist_vectors(codes, factors, cold)
    behavior = np.concatenate([factors, cold])
    retriever = Retriever(
        behavior,
        popularity == 0,
        popularity,
        train.matrix.T.tocsr(),
        knn_alpha,
        n_candidates,
        # stored as float16 with the model: fitted on exactly what is served
        title_vectors=np.asarray(title_vecs, dtype=np.float16).astype(np.float32),
        playlist_vectors=als.user_factors.astype(np.float16).astype(np.float32),
        artist_codes=codes,
    )
    report = {
        "warm_tracks": n_warm,
        "cold_tracks": int(len(order) - n_warm),
        "cold_from_artist": n_by_artist,
        "track_projector": track_report,
    }
    log.info("stage: %d warm, %d cold tracks", n_warm, len(order) - n_warm)
    return Stage(
        ordered,
        n_warm,
        als,
        behavior,
        popularity,
        track_proj,
        retriever,
        report,
        artist_names=names,
    )


def artist_key(name: str) -> str:
    """How artist names are compared: stripped and case-folded."""
    return str(name).strip().casefold()


#: where a title splits into parts that may each name an artist ("Drake x Future", "Rock - 80s")
_TITLE_SPLIT = re.compile(r"[-\u2013\u2014|/:,+&()\[\]•~*!?.]+|\s(?:x|and|ft|feat|featuring|vs)\s")


def title_parts(title: str | None) -> tuple[str, set[str]]:
    """``(whole, parts)``: the :func:`artist_key` of a title and of each part of two
    characters or more that it splits into at punctuation and at " x ", " and ", " feat " ...:
    the names it may be made of. ``("", set())`` for no title."""
    whole = artist_key(title) if title else ""
    parts = {p.strip() for p in _TITLE_SPLIT.split(whole)} if whole else set()
    return whole, {p for p in parts if len(p) >= 2 and p != whole}


def artist_codes(artists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, names)``: (n,) int32 artist code of each track (-1 where none is known) and
    the :func:`artist_key` of each code."""
    keys = pd.Series(artists, dtype=object).fillna("").astype(str).map(artist_key)
    codes, names = pd.factorize(keys.where(keys != ""))
    return codes.astype(np.int32), np.asarray(names, dtype=str)


def artist_vectors(
    codes: np.ndarray, warm_factors: np.ndarray, cold: np.ndarray
) -> tuple[np.ndarray, int]:
    """Cold tracks by an artist with warm tracks get the mean of those tracks' ALS vectors.

    On real playlists an artist's tracks are played together far more reliably than a
    MiniLM-to-ALS projection of the track's text can tell (see the projector's held-out fit
    in the training report), so the projection is kept only for artists never played.

    Args:
        codes: (n_warm + n_cold,) :func:`artist_codes`, warm tracks first.
        warm_factors: (n_warm, f) ALS item vectors.
        cold: (n_cold, f) projected vectors of the cold tracks.

    Returns:
        The cold tracks' vectors and how many came from their artist.
    """
    n_warm, n_artists = len(warm_factors), int(codes.max(initial=-1)) + 1
    warm = np.flatnonzero(codes[:n_warm] >= 0)
    sums = np.zeros((n_artists, warm_factors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes[warm], warm_factors[warm])
    counts = np.bincount(codes[warm], minlength=n_artists)
    cold_codes = codes[n_warm:]
    known = cold_codes >= 0
    known[known] = counts[cold_codes[known]] > 0
    out = cold.copy()
    out[known] = (sums[cold_codes[known]] / counts[cold_codes[known], None]).astype(cold.dtype)
    return out, int(known.sum())


def align(source: Stage, target: Stage) -> np.ndarray:
    """Orthogonal map from ``source``'s behavior space onto ``target``'s (Procrustes).

    Two ALS fits learn the same geometry in arbitrarily rotated bases; a ranker trained on
    one stage's vectors must see the other's in the same basis. Fitted on the tracks warm in
    both, weighted by log-popularity.

    Returns:
        R (f, f) with ``source.behavior @ R`` ~ ``target.behavior`` on shared warm tracks.
    """
    src_uris = source.catalog.uris[: source.n_warm].tolist()
    shared = [(i, target.catalog.index[u]) for i, u in enumerate(src_uris)]
    shared = [(i, j) for i, j in shared if j < target.n_warm]
    if len(shared) < source.behavior.shape[1]:
        raise ValueError(
            f"align: {len(shared)} shared warm tracks; need at least {source.behavior.shape[1]}"
        )
    a_idx, b_idx = (np.array(x) for x in zip(*shared, strict=True))
    w = np.sqrt(np.log1p(source.popularity[a_idx]))[:, None]
    u, _, vt = np.linalg.svd((source.behavior[a_idx] * w).T @ (target.behavior[b_idx] * w))
    return (u @ vt).astype(np.float32)
