"""RecSys Challenge 2018 metrics for one playlist-continuation case, and their aggregation.

A case is a ranked list of recommended track ids (the challenge asks for 500) and the set of
hidden ("relevant") tracks of the playlist.

Conventions shared by every function here:

- ``relevant`` is de-duplicated; an empty ``relevant`` raises :class:`ValueError`.
- ``recommended`` keeps its positions: a track that occurs again further down the list counts
  once, at its first rank; the later occurrences still take up their slots but are never
  hits (so a list with duplicates is never better than the same list without them).
- Cut-offs ``k`` apply to positions of ``recommended`` as given (the first ``k`` entries).
- Track ids may be any hashable values (Spotify URIs, integer ids, ...), compared with ``==``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CLICKS_NONE",
    "METRIC_NAMES",
    "MetricAccumulator",
    "case_metrics",
    "clicks",
    "ndcg",
    "r_precision",
    "recall_at",
]

CLICKS_NONE = 51
"""Recommended Songs Clicks when no relevant track is in the top 500 (challenge rule)."""

RECALL_CUTOFFS = (10, 50, 500)
METRIC_NAMES = ("r_precision", "ndcg", "clicks", *(f"recall@{k}" for k in RECALL_CUTOFFS))
"""Keys of :func:`case_metrics`' result, in order."""

_ARTIST_CREDIT = 0.25
_discounts = 1.0 / np.log2(np.arange(2, 502, dtype=np.float64))  # 1 / log2(i + 1), i = 1..500


def _discount(n: int) -> np.ndarray:
    """``1 / log2(i + 1)`` for ranks ``i = 1..n``."""
    global _discounts
    if n > len(_discounts):
        _discounts = 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))
    return _discounts[:n]


def _check_recommended(recommended: Sequence[Hashable], where: str) -> None:
    if isinstance(recommended, (str, bytes)):
        raise ValueError(
            f"{where}: recommended must be a sequence of track ids, got a single "
            f"{type(recommended).__name__} {recommended[:40]!r}"
        )


def _relevant_set(relevant: Iterable[Hashable], where: str) -> set[Hashable]:
    if isinstance(relevant, (str, bytes)):
        raise ValueError(
            f"{where}: relevant must be a collection of track ids, got a single "
            f"{type(relevant).__name__} {relevant[:40]!r}"
        )
    rel = set(relevant)
    if not rel:
        raise ValueError(
            f"{where}: relevant (the hidden tracks) is empty; every metric divides by the "
            "number of relevant tracks, so a case needs at least one"
        )
    return rel


def _check_k(k: int, where: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{where}: k must be an integer >= 1, got {k!r}")


def _hits(recommended: Sequence[Hashable], rel: set[Hashable], k: int) -> np.ndarray:
    """Boolean hit vector over the first ``k`` positions; repeats of a track are no hits."""
    top = recommended[:k]
    out = np.fromiter(map(rel.__contains__, top), dtype=bool, count=len(top))
    positions = np.flatnonzero(out).tolist()
    if len(positions) > 1:  # a relevant track listed twice is a hit at its first rank only
        seen: set[Hashable] = set()
        for i in positions:
            t = top[i]
            if t in seen:
                out[i] = False
            seen.add(t)
    return out


def _ndcg_from_hits(hits: np.ndarray, n_relevant: int, k: int) -> float:
    dcg = float(_discount(len(hits)) @ hits) if len(hits) else 0.0
    idcg = float(_discount(min(n_relevant, k)).sum())
    return dcg / idcg


def _clicks_from_hits(hits: np.ndarray, k: int) -> float:
    first = int(np.argmax(hits)) if len(hits) else 0
    if not len(hits) or not hits[first]:
        return float(k // 10 + 1)
    return float(first // 10)


def r_precision(
    recommended: Sequence[Hashable],
    relevant: Iterable[Hashable],
    *,
    artist_of: Mapping[Hashable, Hashable] | None = None,
) -> float:
    """R-precision with the RecSys Challenge 2018 artist-level partial credit.

    Definition. Let ``G`` be the distinct relevant tracks and ``R = |G|``. Let ``top`` be
    the first ``R`` entries of ``recommended`` (a repeated track counts once). Then

    - ``track_hits = |top ∩ G|``;
    - ``missed_artists`` = artists of the relevant tracks that are not in ``top``;
    - ``artist_hits`` = number of distinct artists of the tracks in ``top`` that are not
      track hits, and that belong to ``missed_artists``;
    - ``r_precision = (track_hits + 0.25 * artist_hits) / R``.

    Without ``artist_of`` (or for tracks it does not map) there is no artist credit, and the
    result is the plain track-level R-precision ``track_hits / R``. The score is in [0, 1].

    Args:
        recommended: Track ids, best first.
        relevant: The hidden tracks (duplicates are ignored).
        artist_of: Track id -> artist id, covering recommended and relevant tracks.

    Returns:
        The R-precision in [0, 1].

    Raises:
        ValueError: If ``relevant`` is empty, or an argument is a bare string.
    """
    where = "r_precision"
    _check_recommended(recommended, where)
    rel = _relevant_set(relevant, where)
    return _r_precision(recommended, rel, artist_of)


def _r_precision(
    recommended: Sequence[Hashable],
    rel: set[Hashable],
    artist_of: Mapping[Hashable, Hashable] | None,
) -> float:
    r = len(rel)
    top = set(recommended[:r])
    hit = top & rel
    score = float(len(hit))
    if artist_of is not None:
        missed_artists = {artist_of[t] for t in rel - hit if t in artist_of}
        if missed_artists:
            credited = {artist_of[t] for t in top - hit if t in artist_of}
            score += _ARTIST_CREDIT * len(credited & missed_artists)
    return score / r


def ndcg(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 500) -> float:
    """Normalised discounted cumulative gain over the first ``k`` recommendations.

    ``DCG = sum_{i=1..k} rel_i / log2(i + 1)`` with ``rel_i = 1`` when the track at rank ``i``
    (1-based) is relevant and not a repeat of an earlier entry; ``IDCG`` is the DCG of
    ``min(|relevant|, k)`` hits at ranks 1, 2, ...; ``NDCG = DCG / IDCG``.

    Args:
        recommended: Track ids, best first.
        relevant: The hidden tracks (duplicates are ignored).
        k: Cut-off (>= 1).

    Returns:
        NDCG in [0, 1].

    Raises:
        ValueError: If ``relevant`` is empty, ``k < 1``, or an argument is a bare string.
    """
    where = "ndcg"
    _check_recommended(recommended, where)
    _check_k(k, where)
    rel = _relevant_set(relevant, where)
    return _ndcg_from_hits(_hits(recommended, rel, k), len(rel), k)


def clicks(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 500) -> float:
    """Recommended Songs Clicks: pages of 10 a user skips before the first relevant track.

    ``floor(r / 10)`` where ``r`` is the 0-based rank of the first relevant track among the
    first ``k`` recommendations; when there is none, ``k // 10 + 1`` (51 for the
    challenge's ``k = 500``, :data:`CLICKS_NONE`). Lower is better.

    Args:
        recommended: Track ids, best first.
        relevant: The hidden tracks.
        k: Cut-off (>= 1).

    Returns:
        The number of clicks, as a float.

    Raises:
        ValueError: If ``relevant`` is empty, ``k < 1``, or an argument is a bare string.
    """
    where = "clicks"
    _check_recommended(recommended, where)
    _check_k(k, where)
    rel = _relevant_set(relevant, where)
    for i, t in enumerate(recommended[:k]):
        if t in rel:
            return float(i // 10)
    return float(k // 10 + 1)


def recall_at(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """Share of the distinct relevant tracks found among the first ``k`` recommendations.

    Args:
        recommended: Track ids, best first.
        relevant: The hidden tracks (duplicates are ignored).
        k: Cut-off (>= 1).

    Returns:
        Recall in [0, 1].

    Raises:
        ValueError: If ``relevant`` is empty, ``k < 1``, or an argument is a bare string.
    """
    where = "recall_at"
    _check_recommended(recommended, where)
    _check_k(k, where)
    rel = _relevant_set(relevant, where)
    return len(rel.intersection(recommended[:k])) / len(rel)


def case_metrics(
    recommended: Sequence[Hashable],
    relevant: Iterable[Hashable],
    *,
    artist_of: Mapping[Hashable, Hashable] | None = None,
    k: int = 500,
) -> dict[str, float]:
    """All metrics of one case, sharing the work.

    Args:
        recommended: Track ids, best first (the challenge asks for 500).
        relevant: The hidden tracks (duplicates are ignored).
        artist_of: Track id -> artist id, for R-precision's artist credit.
        k: Cut-off for NDCG and clicks; recall is reported at 10, 50 and 500 whatever ``k``.

    Returns:
        ``{"r_precision", "ndcg", "clicks", "recall@10", "recall@50", "recall@500"}`` as
        floats (see :data:`METRIC_NAMES`).

    Raises:
        ValueError: If ``relevant`` is empty, ``k < 1``, or an argument is a bare string.
    """
    where = "case_metrics"
    _check_recommended(recommended, where)
    _check_k(k, where)
    rel = _relevant_set(relevant, where)
    n_rel = len(rel)
    depth = max(k, *RECALL_CUTOFFS)
    hits = _hits(recommended, rel, depth)
    cum = np.cumsum(hits) if len(hits) else np.zeros(1, dtype=np.int64)
    out = {
        "r_precision": _r_precision(recommended, rel, artist_of),
        "ndcg": _ndcg_from_hits(hits[:k], n_rel, k),
        "clicks": _clicks_from_hits(hits[:k], k),
    }
    for cutoff in RECALL_CUTOFFS:
        found = int(cum[min(cutoff, len(hits)) - 1]) if len(hits) else 0
        out[f"recall@{cutoff}"] = found / n_rel
    return out


@dataclass
class MetricAccumulator:
    """Means of per-case metrics per group (e.g. ``"all"``, a challenge category, a model).

    Each case is added to every group it belongs to. Within a group all cases must report
    the same metric names.

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.add(["all", "title_only"], {"ndcg": 0.5})
        >>> acc.add(["all"], {"ndcg": 1.0})
        >>> acc.summary()["all"]
        {'ndcg': 0.75, 'cases': 2}
    """

    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, group_keys: Iterable[str], metrics: Mapping[str, float]) -> None:
        """Adds one case's metrics to each of its groups.

        Args:
            group_keys: The groups of this case; a single string is one group. Repeated
                keys count once.
            metrics: Metric name -> value (finite number).

        Raises:
            ValueError: If a metric is named ``"cases"``, a value is not a finite number, the
                metric names differ from earlier cases of the same group, or there is no
                group.
        """
        keys = [group_keys] if isinstance(group_keys, str) else list(dict.fromkeys(group_keys))
        if not keys:
            raise ValueError("MetricAccumulator.add: group_keys is empty; give at least one")
        if "cases" in metrics:
            raise ValueError(
                "MetricAccumulator.add: 'cases' is reserved for the case count in summary(); "
                "rename that metric"
            )
        values: dict[str, float] = {}
        for name, value in metrics.items():
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(
                    f"MetricAccumulator.add: metric {name!r} is {value!r}; expected a finite number"
                )
            values[name] = v
        for key in keys:
            sums = self.sums.get(key)
            if sums is None:
                self.sums[key] = dict(values)
                self.counts[key] = 1
                continue
            if sums.keys() != values.keys():
                raise ValueError(
                    f"MetricAccumulator.add: group {key!r} has metrics {sorted(sums)}, this "
                    f"case has {sorted(values)}; every case of a group must report the same"
                )
            for name, v in values.items():
                sums[name] += v
            self.counts[key] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        """Per group: the mean of each metric and ``"cases"``, the number of cases.

        Returns:
            ``{group: {metric: mean, ..., "cases": n}}``, groups in the order first seen.
        """
        out: dict[str, dict[str, float]] = {}
        for key, sums in self.sums.items():
            n = self.counts[key]
            row: dict[str, float] = {name: total / n for name, total in sums.items()}
            row["cases"] = n
            out[key] = row
        return out
