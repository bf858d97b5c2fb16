"""``llarapp benchmark latency``: one case, retrieve + rank, in-process PyTorch, pinned threads.

Reads a trained LLaRA++ MODEL_DIR and the split it was evaluated on (the quality benchmark's
``--work-dir``: ``data/`` and ``split/``). Titles and unknown seeds are encoded first and timed
apart: the ranker's budget is retrieval (ALS fold-in, four sources, fusion) plus ranking.

JSON written to ``out``::

    {"threads": t, "cases": n, "catalog_size": n, "retrieve": {"p50_ms", "p95_ms"},
     "rank": {...}, "retrieve_rank": {...}, "encode": {...}}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def run_latency(
    model_dir: Path | str, work_dir: Path | str, out: Path | str, threads: int = 1, cases: int = 300
) -> dict:
    """Time retrieve and rank for up to ``cases`` test cases of ``work_dir``'s split."""
    import torch
    from threadpoolctl import threadpool_limits

    from llarapp.data.dataset import load_cases
    from llarapp.models.base import Recommender

    torch.set_num_threads(threads)
    work_dir = Path(work_dir)
    model = Recommender.load(model_dir)
    model.stage.retriever.dense_threads = threads
    test = load_cases(work_dir / "data", work_dir / "split", "test", cases)
    _ = model.catalog_vectors  # precomputed at load, as the servers do
    timings: dict[str, list[float]] = {
        "encode": [],
        "retrieve": [],
        "rank": [],
        "retrieve_rank": [],
    }
    with threadpool_limits(threads):
        for i, ec in enumerate(test):
            t0 = time.perf_counter()
            cands = model.candidates(ec.case)  # encode (cached after warm-up) + retrieve
            t1 = time.perf_counter()
            model.rank(cands, 500)
            t2 = time.perf_counter()
            if i < 5:
                continue  # warm-up
            timings["retrieve"].append((t1 - t0) * 1e3)
            timings["rank"].append((t2 - t1) * 1e3)
            timings["retrieve_rank"].append((t2 - t0) * 1e3)
        texts = sorted({ec.case.title for ec in test if ec.case.title})
        for text in texts[:100]:
            t0 = time.perf_counter()
            model.encoder.embed([text])
            timings["encode"].append((time.perf_counter() - t0) * 1e3)
    result = {
        "threads": threads,
        "cases": len(timings["rank"]),
        "catalog_size": len(model.track_uris),
        **{k: _summary(v) for k, v in timings.items() if v},
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    lines = [
        f"{result['cases']} test cases, catalogue {result['catalog_size']:,} tracks, "
        f"{result['threads']} thread(s)",
        "",
        "| step | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for step in ("retrieve", "rank", "retrieve_rank", "encode"):
        if step in result:
            lines.append(f"| {step} | {result[step]['p50_ms']} | {result[step]['p95_ms']} |")
    return "\n".join(lines)
