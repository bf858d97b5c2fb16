"""Fitting one retrieval stage: ALS + track projector + retriever over a catalogue of warm and
cold tracks (the stage itself, as inference reads it, is :class:`llarapp.models.llarapp.Stage`).

Training builds a fold stage per ranker-case fold, each fitted on the training playlists
outside its fold (its retrieved candidates for the fold's playlists become the ranker's
training cases, so the ranker never sees features computed from the very playlist it is asked
about), and one fitted on all training playlists (what is saved and served).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llarapp.config import ALSConfig
from llarapp.data.dataset import TrainSet
from llarapp.models.baselines import ALS
from llarapp.models.llarapp.stage import Catalog, Stage, artist_key
from llarapp.models.projector import ProjectorConfig, fit_projector
from llarapp.models.retriever import Retriever

log = logging.getLogger(__name__)


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
        "playlists": len(train.pids),
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
    index = target.catalog.index  # fresh data need not hold every track the source knew
    shared = [
        (i, index[u]) for i, u in enumerate(src_uris) if index.get(u, target.n_warm) < target.n_warm
    ]
    if len(shared) < source.behavior.shape[1]:
        raise ValueError(
            f"align: {len(shared)} shared warm tracks; need at least {source.behavior.shape[1]}"
        )
    a_idx, b_idx = (np.array(x) for x in zip(*shared, strict=True))
    weights = np.log1p(source.popularity[a_idx])
    return procrustes(source.behavior[a_idx], target.behavior[b_idx], weights)


def procrustes(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Orthogonal ``R`` (f, f) minimising ``sum_i weights_i ||source_i @ R - target_i||^2``
    (both ``(n, f)``), computed in the inputs' precision."""
    if weights is not None:
        w = np.sqrt(weights)[:, None]
        source, target = source * w, target * w
    u, _, vt = np.linalg.svd(source.T @ target)
    return (u @ vt).astype(np.float32)
