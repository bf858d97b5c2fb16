"""Typed configuration for every stage, one dataclass per concern.

Each config validates itself on construction and round-trips through JSON
(:func:`to_json` / :func:`from_json`), so a stage's exact settings travel with its
artifacts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _check(ok: bool, cls: str, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{cls}.{name}={value!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class SplitConfig:
    """How playlists become train / valid / test and challenge cases."""

    seed: int = 0  # one seed drives the fold draw, the category draw and random seeds
    valid_frac: float = 0.1  # share of playlists whose cases tune hyperparameters
    test_frac: float = 0.2  # share of playlists whose cases are reported
    min_hidden: int = 5  # a case hides at least max(min_hidden, seeds // 2) tracks
    # share of playlists set aside whole as distractors: their tracks stay in the catalogue
    # (tracks.parquet), the playlists are never fitted on nor asked about
    distractor_frac: float = 0.0

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(0 < self.valid_frac < 1, n, "valid_frac", self.valid_frac, "0 < x < 1")
        _check(0 < self.test_frac < 1, n, "test_frac", self.test_frac, "0 < x < 1")
        _check(0 <= self.distractor_frac < 1, n, "distractor_frac", self.distractor_frac,
               "0 <= x < 1")  # fmt: skip
        total = self.valid_frac + self.test_frac + self.distractor_frac
        _check(total < 1, n, "valid_frac+test_frac+distractor_frac", total,
               "< 1 (train needs playlists)")  # fmt: skip
        _check(self.min_hidden >= 1, n, "min_hidden", self.min_hidden, ">= 1")


@dataclass(frozen=True)
class ALSConfig:
    """Implicit-feedback ALS (``implicit``) on the playlist x track matrix."""

    factors: int = 128  # latent dimensions
    regularization: float = 0.05  # L2 weight on both factor matrices
    alpha: float = 20.0  # confidence = 1 + alpha * weight
    iterations: int = 15  # ALS sweeps
    bm25: bool = True  # BM25-weight the matrix before fitting (down-weights long playlists)
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(self.factors >= 1, n, "factors", self.factors, ">= 1")
        _check(self.regularization >= 0, n, "regularization", self.regularization, ">= 0")
        _check(self.alpha > 0, n, "alpha", self.alpha, "> 0")
        _check(self.iterations >= 1, n, "iterations", self.iterations, ">= 1")
        _check(self.bm25_k1 > 0, n, "bm25_k1", self.bm25_k1, "> 0")
        _check(0 <= self.bm25_b <= 1, n, "bm25_b", self.bm25_b, "0 <= b <= 1")


@dataclass(frozen=True)
class ItemKNNConfig:
    """Item-item co-occurrence kNN: score(j) = sum_s C[s, j] / (n_s^(1-a) * n_j^a)."""

    alpha: float = 0.5  # 0.5 is cosine; higher favours rarer candidates

    def __post_init__(self) -> None:
        _check(0 <= self.alpha <= 1, type(self).__name__, "alpha", self.alpha, "0 <= a <= 1")


@dataclass(frozen=True)
class TitleKNNConfig:
    """Title-text kNN: the tracks of the training playlists whose titles are nearest."""

    neighbours: int = 100  # training playlists voted in per query title
    power: float = 2.0  # vote weight = cosine ** power

    def __post_init__(self) -> None:
        n = type(self).__name__
        _check(self.neighbours >= 1, n, "neighbours", self.neighbours, ">= 1")
        _check(self.power > 0, n, "power", self.power, "> 0")


@dataclass(frozen=True)
class TuneConfig:
    """Validation-case search for the baselines' hyperparameters.

    ALS is tuned by one pass of coordinate ascent over ``als_space`` (each knob in turn, the
    others held at their best so far): 1 + sum(len(values) - 1) fits instead of a full grid.
    """

    max_cases: int = 400  # validation cases scored per candidate setting
    als_space: dict[str, list[Any]] = field(
        default_factory=lambda: {
            "alpha": [20.0, 5.0, 60.0],  # first value of each list is the starting point
            "regularization": [0.05, 0.01, 0.3],
            "bm25": [True, False],
            "factors": [128, 64],
        }
    )
    itemknn_alpha: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5])
    titleknn_space: dict[str, list[Any]] = field(
        default_factory=lambda: {"neighbours": [100, 25, 400], "power": [2.0, 1.0, 4.0]}
    )


def to_json(config: Any) -> dict[str, Any]:
    """A config as a JSON-able dict."""
    return dataclasses.asdict(config)


def from_json(cls: type[T], data: dict[str, Any] | str | Path) -> T:
    """Build ``cls`` from a dict or a JSON file; unknown keys are an error."""
    if isinstance(data, str | Path):
        data = json.loads(Path(data).read_text())
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(names)}"
        )
    return cls(**data)
