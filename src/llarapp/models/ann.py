"""Approximate inner-product top-k for large catalogues: an inverted-file (IVF) index.

Below ``ann_threshold`` rows (the model config; :data:`DEFAULT_THRESHOLD`) the retriever scores
every row exactly. Above it, the dense sources (seed and title queries against every track's
behavior vector) and the title lookup (the title's MiniLM vector against every training
playlist's title) search an :class:`AnnIndex` instead, which reads ``nprobe`` of its ``nlist``
lists: a few percent of the rows, with exact inner products of the rows it reads.

Lists are spherical k-means clusters of the vectors' directions, and a query reads the
``nprobe`` lists whose centroids point most its way; the rows it reads are scored exactly, by
inner product (norms count there, as they do in the exact product). On a synthetic million-track
catalogue (``llarapp benchmark ann``) 8 of 1,000 lists clustered by direction kept 0.997 of the
exact fused candidates, where clustering the vectors augmented to one common norm (``[x,
sqrt(M^2 - |x|^2)]``, the textbook reduction of inner product to angle) kept 0.93: the extra
coordinate, large for every short vector, put short vectors of every direction into the same
lists.

The index keeps the vectors themselves list by list (a copy in list order), so a list is one
contiguous block: scoring it is one BLAS matrix-vector product over a slice of a memory-mapped
array. (faiss's IVF-flat, which this replaced, scans with generic kernels where its pip wheel
loads no AVX2 build: 2.6 ms against 0.9 ms here for 32 of 1,000 lists over 1 M x 128.)

``nprobe`` is set by whoever knows what the answer needs: the model tunes it on the recall of
its fused candidates (:func:`llarapp.models.llarapp.model.tune_indexes`).

Files (beside the model, ``ann/NAME.npz`` + ``ann/NAME.json``): ``centroids`` (nlist, d),
``offsets`` (nlist + 1), ``rows`` (n: the original row of each stored vector) and ``vectors``
(n, d, list by list); and ``{"rows", "dim", "nlist", "nprobe", "recall", ...}``.
The arrays are loaded memory-mapped (:func:`llarapp.models.npz.load_npz`), so worker processes
share their pages.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llarapp.models.npz import load_npz, save_npz

log = logging.getLogger(__name__)

#: catalogues (and title sets) with more rows than this use an index (model config
#: ``ann_threshold``)
DEFAULT_THRESHOLD = 250_000
ANN_DIR = "ann"
_BLOCK = 16_384  # rows a step when assigning: bounded temporaries (block x nlist scores)


class AnnIndex:
    """Approximate top-k by inner product over ``rows`` fixed vectors.

    Args:
        arrays: ``centroids``, ``offsets``, ``rows``, ``vectors`` (:meth:`build`).
        meta: at least ``rows``, ``dim``, ``nlist``, ``nprobe``.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.centroids = arrays["centroids"]
        self.offsets = np.asarray(arrays["offsets"], np.int64)
        self.order = arrays["rows"]
        self.vectors = arrays["vectors"]
        self.meta = meta

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @property
    def nlist(self) -> int:
        return int(self.meta["nlist"])

    @property
    def nprobe(self) -> int:
        """Lists read a query (at most :attr:`nlist`)."""
        return int(self.meta["nprobe"])

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.meta["nprobe"] = max(1, min(int(value), self.nlist))

    @classmethod
    def build(
        cls, vectors: np.ndarray, nprobe: int = 32, iterations: int = 10, seed: int = 0
    ) -> AnnIndex:
        """Index ``vectors`` (n, d): ``min(n / 256, sqrt(n))`` lists from spherical k-means
        (``iterations`` rounds on a sample of 40 rows a list), every row in the list whose
        centroid is nearest its direction.

        Raises:
            ValueError: fewer than 2 rows.
        """
        n, d = vectors.shape
        if n < 2:
            raise ValueError(f"AnnIndex.build: {n} rows; expected at least 2 rows")
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        nlist = int(min(max(1, n // 256), max(1, round(np.sqrt(n)))))
        sample = _unit(vectors[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))])
        centroids = sample[rng.choice(len(sample), nlist, replace=False)]
        for _ in range(iterations):
            assign = _assign(sample, centroids)
            onehot = sp.csr_matrix(
                (np.ones(len(sample), np.float32), (assign, np.arange(len(sample)))),
                shape=(nlist, len(sample)),
            )
            sums = np.asarray(onehot @ sample)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            filled = norms[:, 0] > 0  # an empty list keeps its centroid
            centroids[filled] = sums[filled] / norms[filled]
        assign = np.concatenate(
            [_assign(_unit(vectors[s : s + _BLOCK]), centroids) for s in range(0, n, _BLOCK)]
        )
        index = cls._grouped(centroids, assign, np.arange(n), vectors, {"rows": n, "dim": d})
        index.nprobe = nprobe
        log.info(
            "ann index: %d x %d, %d lists (%.1f s)", n, d, nlist, time.perf_counter() - started
        )
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(q, k')`` with ``k' = min(k, rows)``, best first;
        exact inner products of the rows found (rows ``-1`` and scores ``-inf`` past the end
        when the probed lists hold fewer than ``k``)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.meta["dim"])
        k = min(k, self.rows)
        scores = np.full((len(q), k), -np.inf, np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        nprobe = self.nprobe
        for i, centre_scores in enumerate(q @ self.centroids.T):
            lists = np.sort(
                np.argpartition(-centre_scores, nprobe - 1)[:nprobe]
                if nprobe < self.nlist
                else np.arange(self.nlist)
            )
            # neighbouring lists lie side by side: one slice a run of them
            breaks = np.flatnonzero(np.diff(lists) != 1) + 1
            starts = self.offsets[lists[np.r_[0, breaks]]]
            ends = self.offsets[lists[np.r_[breaks - 1, len(lists) - 1]] + 1]
            spans = list(zip(starts, ends, strict=True))
            s = np.concatenate([self.vectors[a:b] @ q[i] for a, b in spans])
            r = np.concatenate([self.order[a:b] for a, b in spans])
            top = np.argpartition(-s, k - 1)[:k] if len(s) > k else np.arange(len(s))
            top = top[np.argsort(-s[top], kind="stable")]
            scores[i, : len(top)], rows[i, : len(top)] = s[top], r[top]
        return scores, rows

    def extended(self, vectors: np.ndarray) -> AnnIndex:
        """This index with ``vectors`` (m, d) as rows ``rows .. rows + m - 1``, each in the
        list of the centroid nearest its direction (the lists are not clustered again; the
        tuned ``nprobe`` is kept)."""
        new = np.asarray(vectors, np.float32).reshape(-1, self.meta["dim"])
        old = np.repeat(np.arange(self.nlist), np.diff(self.offsets))
        return self._grouped(  # a list's old rows, then its new ones
            self.centroids,
            np.concatenate([old, _assign(_unit(new), self.centroids)]),
            np.concatenate([self.order, np.arange(self.rows, self.rows + len(new))]),
            np.concatenate([self.vectors, new]),
            {**self.meta, "rows": self.rows + len(new)},
        )

    def rotated(self, rotation: np.ndarray) -> AnnIndex:
        """This index of ``vectors @ rotation`` (orthogonal ``rotation``): every row stays in
        its list, so the tuned ``nprobe`` and its recall hold."""
        arrays = {
            "centroids": np.asarray(self.centroids @ rotation, np.float32),
            "offsets": self.offsets,
            "rows": self.order,
            "vectors": np.asarray(self.vectors @ rotation, np.float32),
        }
        return AnnIndex(arrays, dict(self.meta))

    @classmethod
    def _grouped(
        cls,
        centroids: np.ndarray,
        assign: np.ndarray,
        rows: np.ndarray,
        vectors: np.ndarray,
        meta: dict,
    ) -> AnnIndex:
        """The index of ``vectors`` (row ids ``rows``) stored list by list (``assign``)."""
        nlist = len(centroids)
        order = np.argsort(assign, kind="stable")
        arrays = {
            "centroids": centroids,
            "offsets": np.searchsorted(assign[order], np.arange(nlist + 1)).astype(np.int64),
            "rows": np.asarray(rows, np.int64)[order],
            "vectors": np.asarray(vectors[order], np.float32),
        }
        return cls(arrays, {"nprobe": 1, **meta, "nlist": nlist})

    def save(self, folder: Path | str, name: str) -> Path:
        """Write ``folder/NAME.npz`` (renamed over the old one, which may be mapped) and
        ``folder/NAME.json``; returns the arrays' file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.npz"
        save_npz(
            path,
            centroids=self.centroids,
            offsets=self.offsets,
            rows=self.order,
            vectors=self.vectors,
        )
        (folder / f"{name}.json").write_text(json.dumps(self.meta, indent=2))
        return path

    @classmethod
    def load(cls, folder: Path | str, name: str, shape: tuple[int, int]) -> AnnIndex | None:
        """The index ``folder/NAME.npz``, memory-mapped; None when there is none, or when it
        indexes another ``(rows, dim)`` than ``shape`` (a catalogue grown since: logged)."""
        folder = Path(folder)
        path = folder / f"{name}.npz"
        if not path.is_file():
            return None
        meta = json.loads((folder / f"{name}.json").read_text())
        if (meta["rows"], meta["dim"]) != tuple(shape):
            log.warning(
                "%s: an index of %d x %d vectors for %d x %d ones: not used",
                path, meta["rows"], meta["dim"], *shape,
            )  # fmt: skip
            return None
        return cls(load_npz(path), meta)


def _unit(x: np.ndarray) -> np.ndarray:
    """``x``'s rows scaled to unit length (float32; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's list: the centroid that scores it highest."""
    return np.argmax(x @ centroids.T, axis=1)


def recall_of(found: np.ndarray, exact: np.ndarray) -> float:
    """The share of ``exact`` (indices) that ``found`` holds."""
    return len(np.intersect1d(found, exact)) / max(len(exact), 1)
