"""The retrieval stage as inference reads it: the catalogue, a case's :class:`Query`, and the
:class:`Stage` (behavior vectors, track projector, retriever) of one fit.

Fitting a stage (ALS, the projector, artist vectors) lives in :mod:`llarapp.training.stage`;
this module only reads one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from dataclasses import dataclass, field

import numpy as np

from llarapp.models.ann import AnnIndex
from llarapp.models.baselines import ALS
from llarapp.models.projector import Projector
from llarapp.models.retriever import Retrieved, Retriever


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
    """A case as the stage sees it: vectors and catalogue indices, no URIs (the encode step's
    output)."""

    title_vec: np.ndarray | None  # (text_dim,)
    seed_idx: np.ndarray  # catalogue indices of known seeds
    extra_seed_text: np.ndarray  # (m, text_dim) seeds unknown to the catalogue
    extra_seed_artists: np.ndarray = field(  # (m,) their artists' codes (-1: unknown artist)
        default_factory=lambda: np.zeros(0, np.int64)
    )
    title_artists: np.ndarray = field(  # codes of the artists the title names (Stage.title_artists)
        default_factory=lambda: np.zeros(0, np.int64)
    )
    exclude_idx: np.ndarray = field(  # never recommended: the seeds, and every track named
        default_factory=lambda: np.zeros(0, np.int64)  # like a seed sent by name
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
        retriever.behavior = behavior  # which drops the index of the vectors it replaces
        if self.retriever.behavior_index is not None:
            retriever.behavior_index = AnnIndex.build(
                behavior, self.retriever.behavior_index.nprobe
            )
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
