"""Approximate inner-product top-k for large catalogues: a faiss IVF-flat index.

Below ``ann_threshold`` rows (the model config; :data:`DEFAULT_THRESHOLD`) the retriever scores
every row exactly. Above it, the dense sources (seed and title queries against every track's
behavior vector) and the title lookup (the title's MiniLM vector against every training
playlist's title) search an :class:`AnnIndex` instead, which reads ``nprobe`` of its ``nlist``
inverted lists: a few percent of the rows, exact inner products for the rows it reads.

Inner product is not a metric, and ALS vectors differ in norm, so the index holds each vector
augmented to one common norm (``[x, sqrt(M^2 - |x|^2)]``, M the largest norm; a query gets a
0 there): the nearest by angle in that space are exactly the largest inner products, and the
k-means lists cluster well. ``nprobe`` is chosen at build time: the smallest power of two whose
recall of the exact top-k, over probe queries drawn from what will query the index (the
training playlists' vectors for the behavior index: a seed query is a playlist's fold-in;
titles for the title index), reaches ``target_recall``; the recall reached is kept with the
index.

Files (beside the model, ``ann/NAME.faiss`` + ``ann/NAME.json``): the faiss index, and
``{"rows", "dim", "nlist", "nprobe", "k", "recall", "max_norm"}``. The index is loaded with
faiss's ``IO_FLAG_MMAP``, so worker processes share its pages.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from llarapp.models.npz import replace_file

log = logging.getLogger(__name__)

#: catalogues (and title sets) with more rows than this use an index (model config
#: ``ann_threshold``)
DEFAULT_THRESHOLD = 250_000
ANN_DIR = "ann"


def _faiss():
    import faiss

    faiss.omp_set_num_threads(1)  # one query at a time: a thread pool only spins
    return faiss


class AnnIndex:
    """Approximate top-k by inner product over ``rows`` fixed vectors.

    Args:
        index: a faiss ``IndexIVFFlat`` over the augmented vectors (:func:`build`).
        meta: its ``rows``, ``dim``, ``nlist``, ``nprobe``, ``k``, ``recall``, ``max_norm``.
    """

    def __init__(self, index, meta: dict) -> None:
        self.index, self.meta = index, meta
        self.index.nprobe = int(meta["nprobe"])

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        k: int,
        queries: np.ndarray | None = None,
        target_recall: float = 0.99,
        probes: int = 64,
        seed: int = 0,
    ) -> AnnIndex:
        """Index ``vectors`` (n, d) for top-``k`` queries; ``nprobe`` tuned on ``probes`` rows
        of ``queries`` (default: of ``vectors``) to reach ``target_recall`` of the exact
        top-``k`` (all lists at most).

        Raises:
            ValueError: fewer than 2 rows, ``k`` < 1, or a target outside (0, 1].
        """
        faiss = _faiss()
        n, d = vectors.shape
        if n < 2 or k < 1 or not 0.0 < target_recall <= 1.0:
            raise ValueError(
                f"AnnIndex.build: {n} rows, k={k}, target_recall={target_recall}; expected "
                "at least 2 rows, k >= 1 and a target in (0, 1]"
            )
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
        max_norm = float(norms.max())
        nlist = int(min(max(1, n // 256), max(1, round(np.sqrt(n)))))
        quantizer = faiss.IndexFlatIP(d + 1)
        index = faiss.IndexIVFFlat(quantizer, d + 1, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        sample = rng.choice(n, min(n, 40 * nlist), replace=False)
        index.train(_augment(vectors[np.sort(sample)], max_norm))
        for start in range(0, n, 65_536):  # augmented a block at a time: bounded memory
            index.add(_augment(vectors[start : start + 65_536], max_norm))
        pool = vectors if queries is None else queries
        queries = np.asarray(pool[np.sort(rng.choice(len(pool), min(probes, len(pool))))])
        queries = queries.astype(np.float32)
        exact = [_exact_top(vectors, q, k) for q in queries]
        meta = {"rows": n, "dim": d, "nlist": nlist, "k": k, "max_norm": max_norm}
        nprobe = 1
        while True:
            ann = cls(index, meta | {"nprobe": nprobe, "recall": 0.0})
            found = ann.search(queries, k)[1]
            recall = float(np.mean([recall_of(f, e) for f, e in zip(found, exact, strict=True)]))
            if recall >= target_recall or nprobe >= nlist:
                break
            nprobe = min(2 * nprobe, nlist)
        ann.meta["recall"] = recall
        log.info(
            "ann index: %d x %d, %d lists, nprobe %d, recall@%d %.4f (%.1f s)",
            n,
            d,
            nlist,
            nprobe,
            k,
            recall,
            time.perf_counter() - started,
        )
        return ann

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(q, k')`` with ``k' = min(k, rows)``, best first;
        exact inner products of the rows found (rows ``-1`` and scores ``-inf`` past the end
        when the probed lists hold fewer than ``k``)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.meta["dim"])
        scores, rows = self.index.search(_augment(q, None), min(k, self.rows))
        scores[rows < 0] = -np.inf
        return scores, rows

    def save(self, folder: Path | str, name: str) -> Path:
        """Write ``folder/NAME.faiss`` and ``folder/NAME.json``; returns the index file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.faiss"
        faiss = _faiss()
        replace_file(
            path, lambda f: faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))
        )
        (folder / f"{name}.json").write_text(json.dumps(self.meta, indent=2))
        return path

    @classmethod
    def load(cls, folder: Path | str, name: str, shape: tuple[int, int]) -> AnnIndex | None:
        """The index ``folder/NAME.faiss``, memory-mapped; None when there is none, or when it
        indexes another ``(rows, dim)`` than ``shape`` (a catalogue grown since: logged)."""
        folder = Path(folder)
        path = folder / f"{name}.faiss"
        if not path.is_file():
            return None
        meta = json.loads((folder / f"{name}.json").read_text())
        if (meta["rows"], meta["dim"]) != tuple(shape):
            log.warning(
                "%s: an index of %d x %d vectors for %d x %d ones: not used",
                path, meta["rows"], meta["dim"], *shape,
            )  # fmt: skip
            return None
        faiss = _faiss()
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        return cls(index, meta)


def _augment(x: np.ndarray, max_norm: float | None) -> np.ndarray:
    """``[x, sqrt(max_norm^2 - |x|^2)]``, or ``[x, 0]`` for queries (``max_norm`` None)."""
    x = np.asarray(x, dtype=np.float32)
    extra = np.zeros((len(x), 1), np.float32)
    if max_norm is not None:
        sq = max_norm * max_norm - np.einsum("ij,ij->i", x, x)
        extra[:, 0] = np.sqrt(np.maximum(sq, 0.0))
    return np.ascontiguousarray(np.hstack([x, extra]))


def _exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = np.concatenate(
        [vectors[s : s + 262_144] @ query for s in range(0, len(vectors), 262_144)]
    )
    k = min(k, len(scores))
    return np.argpartition(-scores, k - 1)[:k]


def recall_of(found: np.ndarray, exact: np.ndarray) -> float:
    """The share of ``exact`` (indices) that ``found`` holds."""
    return len(np.intersect1d(found, exact)) / max(len(exact), 1)
