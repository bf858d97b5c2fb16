"""The one recommender interface every model implements, baselines included.

``fit(train)`` learns from a :class:`~llarapp.data.dataset.TrainSet`; ``recommend(case, k)``
returns ``k`` distinct track URIs, best first, never a seed of the case; ``save(dir)`` /
``Recommender.load(dir)`` round-trip a fitted model through ``model.json`` (name, config) and
``arrays.npz`` (numpy arrays, loaded with ``allow_pickle=False``).

Ties (including "no evidence at all", e.g. a title-only case for a seed-based model) are broken
by training popularity, so every model always fills its ``k`` slots.
"""

from __future__ import annotations

import importlib
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from llarapp.data.dataset import Case, TrainSet
from llarapp.models.npz import load_npz, save_npz

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
_REGISTRY: dict[str, type[Recommender]] = {}
_LAZY = {"llara++": "llarapp.models.llarapp.model"}


class Recommender(ABC):
    """Base class: catalogue, popularity tie-break, top-k, save/load."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.track_uris: np.ndarray | None = None  # (n_items,) str
        self.popularity: np.ndarray | None = None  # (n_items,) training playlist counts
        self._index: dict[str, int] = {}
        self._tiebreak: np.ndarray | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    # -- what a model defines -------------------------------------------------------------
    @abstractmethod
    def _fit(self, train: TrainSet) -> None:
        """Learn model-specific state; catalogue and popularity are already set."""

    @abstractmethod
    def scores(self, case: Case) -> np.ndarray | None:
        """(n_items,) scores for ``case``, higher is better; None when it has no evidence."""

    def config_dict(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""
        return {}

    def _arrays(self) -> dict[str, np.ndarray]:
        """Model-specific arrays to save."""
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 (optional hook)
        """Inverse of :meth:`_arrays`."""

    # -- shared behaviour -----------------------------------------------------------------
    def fit(self, train: TrainSet) -> Self:
        """Fit on the training playlists; returns self."""
        if train.n_items == 0:
            raise ValueError("TrainSet has no tracks: cannot fit a recommender on nothing")
        self._set_catalogue(
            train.track_uris.astype(str), np.asarray(train.matrix.sum(axis=0)).ravel()
        )
        self._fit(train)
        return self

    def _set_catalogue(self, track_uris: np.ndarray, popularity: np.ndarray) -> None:
        self.track_uris = track_uris
        self.popularity = popularity.astype(np.float64)
        self._index = {u: i for i, u in enumerate(track_uris.tolist())}
        # in [0, 1): more popular is higher; ties broken by catalogue order
        order = np.lexsort((-np.arange(len(popularity)), self.popularity))
        self._tiebreak = np.empty(len(popularity))
        self._tiebreak[order] = np.arange(len(popularity)) / len(popularity)

    def known_seeds(self, case: Case) -> np.ndarray:
        """Catalogue indices of the case's seeds that the model knows (dupes removed)."""
        idx = {self._index[t.track_uri] for t in case.seeds if t.track_uri in self._index}
        return np.array(sorted(idx), dtype=np.int64)

    def recommend(self, case: Case, k: int = 500) -> list[str]:
        """The top ``k`` track URIs for ``case``, best first, seeds excluded."""
        if self.track_uris is None:
            raise RuntimeError(f"{self.name}: recommend() before fit() or load()")
        if k < 1:
            raise ValueError(f"k={k}: expected k >= 1")
        raw = self.scores(case)
        if raw is None:
            combined = self._tiebreak.copy()
        else:
            raw = np.asarray(raw, dtype=np.float64)
            scale = float(np.max(np.abs(raw))) or 1.0
            combined = raw + self._tiebreak * (1e-6 * scale)
        combined[self.known_seeds(case)] = -np.inf
        return self.track_uris[top_k(combined, k)].tolist()

    def save(self, path: Path | str) -> Path:
        """Write ``model.json`` and ``arrays.npz`` into the folder ``path``."""
        if self.track_uris is None:
            raise RuntimeError(f"{self.name}: save() before fit()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"track_uris": self.track_uris, "popularity": self.popularity, **self._arrays()}
        save_npz(path / ARRAYS_FILE, **arrays)  # renamed over: a loaded model may map it
        meta = {"name": self.name, "config": self.config_dict()}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Recommender:
        """Load any saved model; the class is chosen by the name in ``model.json``."""
        path = Path(path)
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{path / MODEL_FILE} not found: not a saved llarapp model")
        meta = json.loads((path / MODEL_FILE).read_text())
        if meta.get("name") in _LAZY:  # heavy model modules register themselves on import
            importlib.import_module(_LAZY[meta["name"]])
        if meta.get("name") not in _REGISTRY:
            raise ValueError(
                f"{path / MODEL_FILE}: unknown model {meta.get('name')!r}; "
                f"expected one of {sorted(_REGISTRY)}"
            )
        return _REGISTRY[meta["name"]]._load(path, meta)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> Recommender:
        """Restore from a folder written by :meth:`save` (models with more files override)."""
        model = cls.from_config(meta.get("config", {}))
        arrays = load_npz(path / ARRAYS_FILE)  # big arrays mapped read-only
        model._set_catalogue(arrays.pop("track_uris"), arrays.pop("popularity"))
        model._restore(arrays)
        return model

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """Construct an unfitted model from :meth:`config_dict` output."""
        return cls(**config)


def registered_models() -> dict[str, type[Recommender]]:
    """Every model class by name."""
    return dict(_REGISTRY)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores, best first (exact, argpartition)."""
    finite = np.isfinite(scores)
    k = min(k, int(finite.sum()))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    masked = np.where(finite, scores, -np.inf)
    part = np.argpartition(-masked, k - 1)[:k]
    return part[np.argsort(-masked[part], kind="stable")]


def csr_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays for ``np.savez``."""
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
        f"{prefix}_shape": np.array(matrix.shape),
    }


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_arrays`."""
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=tuple(arrays[f"{prefix}_shape"]),
    )
