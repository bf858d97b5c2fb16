"""Catalogue search for the seed picker of the page (``GET /v1/search?q=...&limit=...``).

:class:`CatalogSearch` finds tracks whose "track name artist name" contains every word of the
query (case-folded), tracks whose name starts with the query first, then by popularity (the
model's ``pop_order``). One linear scan of the pre-folded names per query; it stops early once
``limit`` name-prefix matches are found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from llarapp.serving.request import RequestError

MAX_QUERY_CHARS = 100
MAX_LIMIT = 50
DEFAULT_LIMIT = 10


class CatalogSearch:
    """Track lookup by words of its name and artist.

    Args:
        uris: (n,) catalogue URIs.
        track_names, artist_names: (n,) names aligned with ``uris`` ("" when unknown).
        pop_order: catalogue indices, most popular first.
    """

    def __init__(
        self,
        uris: np.ndarray,
        track_names: np.ndarray,
        artist_names: np.ndarray,
        pop_order: np.ndarray,
    ) -> None:
        named = np.flatnonzero([bool(n) for n in track_names.tolist()])
        rank = np.empty(len(uris), np.int64)
        rank[pop_order] = np.arange(len(pop_order))
        order = named[np.argsort(rank[named], kind="stable")]  # named tracks, popular first
        self._idx = order
        self._uris = [str(u) for u in uris[order].tolist()]
        self._names = [str(n) for n in track_names[order].tolist()]
        self._artists = [str(a) for a in artist_names[order].tolist()]
        self._folded = [
            f"{n} {a}".casefold() for n, a in zip(self._names, self._artists, strict=True)
        ]

    @classmethod
    def from_engine(cls, engine) -> CatalogSearch:
        """The search over a :class:`llarapp.serving.engine.ServingEngine`'s catalogue."""
        names = engine.names
        return cls(engine.uris, names.track_name, names.artist_name, engine.pop_order)

    def __len__(self) -> int:
        return len(self._idx)

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[dict[str, str]]:
        """Up to ``limit`` tracks matching every word of ``query``: ``[{"track_uri",
        "track_name", "artist_name"}]``, name-prefix matches first, then by popularity."""
        words = query.casefold().split()
        if not words:
            return []
        prefix = query.strip().casefold()
        first: list[int] = []
        rest: list[int] = []
        for i, text in enumerate(self._folded):
            if all(w in text for w in words):
                (first if text.startswith(prefix) else rest).append(i)
                if len(first) >= limit:
                    break
        return [
            {
                "track_uri": self._uris[i],
                "track_name": self._names[i],
                "artist_name": self._artists[i],
            }
            for i in (first + rest)[:limit]
        ]


def parse_search(params: Mapping[str, str]) -> tuple[str, int]:
    """``(q, limit)`` from a query string; :class:`RequestError` (422) when malformed."""
    unknown = sorted(set(params) - {"q", "limit"})
    if unknown:
        raise RequestError(f"search: unknown parameters {unknown}; expected q and limit")
    q = params.get("q")
    if q is None or not q.strip():
        raise RequestError("search: expected a non-blank q (words of a track or artist name)")
    if len(q) > MAX_QUERY_CHARS:
        raise RequestError(f"search: q has {len(q)} characters; at most {MAX_QUERY_CHARS}")
    raw = params.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestError(f"search: limit={raw!r}; expected an integer in 1..{MAX_LIMIT}")
    return q, limit


def search_response(search: CatalogSearch, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/v1/search`` answer for a query string: ``{"query", "tracks"}``."""
    q, limit = parse_search(params)
    return {"query": q, "tracks": search.search(q, limit)}
