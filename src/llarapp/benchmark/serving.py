"""Serving benchmark: the local server under load, against the numpy floor.

``llarapp benchmark serving --model DIR --mpd DIR --out FILE.json``:

1. ingests and splits ``--mpd`` (the split seed the model was trained with) and builds one
   request per validation case with a title and at least ``seeds`` seed tracks: the title plus
   the first ``seeds`` seeds (name, artist, URI), ``k`` recommendations;
2. starts the local server (``python -m llarapp_kserve --workers W``, default 2: one process
   a core on this 2-core machine) on 127.0.0.1, sends ``warmup``
   requests, then replays ``requests`` requests at concurrency 1 and at 8 (keep-alive
   connections; client-side latency);
3. times the floor: the bare catalogue scoring of the same queries in numpy — one matrix-vector
   product over every catalogue track (behavior vectors, the seeds' mean) and an exact top-k
   (``argpartition`` + sort of the k).

Files out: ``--out`` JSON ``{"c1": {"p50_ms", "p95_ms", "p99_ms", "rps", "errors",
"requests"}, "c8": {...}, "floor_ms", "catalog_size", "p50_over_floor", "k", "seeds",
"workers", "ranker" (onnx | torch), "distinct_titles", "model", "chart"}``, and beside it
``FILE.png``: the latency histogram of each concurrency. Titles repeat across
requests (and across the c1 / c8 passes), as they do in the MPD; the encoder caches title
vectors, so repeated titles skip MiniLM.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from llarapp.export.runtime import MANIFEST_FILE, ONNX_DIR

log = logging.getLogger(__name__)


def build_requests(data_dir: Path, split_dir: Path, seeds: int, k: int) -> list[dict]:
    """Request bodies from validation cases: title + the first ``seeds`` seeds."""
    from llarapp.data.dataset import load_cases

    cases = load_cases(data_dir, split_dir, "valid")
    out = []
    for ec in cases:
        c = ec.case
        if not c.title or len(c.seeds) < seeds:
            continue
        tracks = [
            {"track_name": t.track_name, "artist_name": t.artist_name, "track_uri": t.track_uri}
            for t in c.seeds[:seeds]
        ]
        out.append({"name": c.title, "tracks": tracks, "k": k})
    if not out:
        raise ValueError(f"no validation case has a title and >= {seeds} seeds")
    return out


def numpy_floor(model_dir: Path, bodies: list[dict], k: int) -> tuple[float, int]:
    """Median ms of catalogue scoring + exact top-k for the requests' seeds; catalogue size."""
    with np.load(model_dir / "arrays.npz", allow_pickle=False) as z:
        behavior = np.ascontiguousarray(z["behavior"], dtype=np.float32)
        uris = z["track_uris"].astype(str)
    index = {u: i for i, u in enumerate(uris.tolist())}
    queries = []
    for b in bodies:
        idx = [index[t["track_uri"]] for t in b["tracks"] if t.get("track_uri") in index]
        queries.append(behavior[idx].mean(axis=0) if idx else behavior[0])
    k = min(k, len(behavior))
    times = []
    for q in queries:
        start = time.perf_counter()
        scores = behavior @ q
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000), len(behavior)


def run_serving_benchmark(
    model_dir: Path | str,
    mpd: str,
    out: Path | str,
    *,
    requests: int = 500,
    warmup: int = 50,
    concurrency: tuple[int, ...] = (1, 8),
    seeds: int = 10,
    k: int = 500,
    split_seed: int = 0,
    max_playlists: int | None = None,
    work_dir: Path | str | None = None,
    workers: int = 2,
) -> dict:
    """Run the benchmark (see the module docstring) and write ``out``."""
    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split
    from llarapp.evaluation.charts import latency_histogram
    from llarapp.serving.client import replay, start_server, stop_server, wait_ready

    model_dir = Path(model_dir)
    ranker = "onnx" if (model_dir / ONNX_DIR / MANIFEST_FILE).is_file() else "torch"
    if ranker == "torch":
        log.warning(
            "%s has no ONNX export: the ranker serves from PyTorch (slower); run "
            "`llarapp benchmark export --model %s ...` first to time what a deployment serves",
            model_dir,
            model_dir,
        )
    with tempfile.TemporaryDirectory(prefix="llarapp-bench-serving-") as tmp:
        work = Path(work_dir or tmp)
        ingest(mpd, work / "data", max_playlists=max_playlists)
        split(work / "data", work / "split", SplitConfig(seed=split_seed))
        bodies = build_requests(work / "data", work / "split", seeds, k)
        rng = np.random.default_rng(0)
        picks = rng.choice(len(bodies), requests + warmup, replace=True)
        encoded = [json.dumps(bodies[i]).encode() for i in picks]
        proc, url = start_server(
            str(model_dir), None, "--events", str(work / "events.db"),
            "--workers", str(workers), log_file=work / "server.log",
        )  # fmt: skip
        try:
            wait_ready(url, proc)
            replay(url, encoded[:warmup], 1)
            result: dict = {}
            latencies: dict[str, list[float]] = {}
            for c in concurrency:
                run = replay(url, encoded[warmup:], c)
                result[f"c{c}"] = run.summary()
                latencies[f"concurrency {c}"] = run.latencies_ms
                log.info("serving c%d: %s", c, result[f"c{c}"])
        finally:
            stop_server(proc)
    floor_ms, catalog_size = numpy_floor(model_dir, [bodies[i] for i in picks[warmup:]], k)
    result.update(
        {
            "floor_ms": round(floor_ms, 4),
            "catalog_size": catalog_size,
            "p50_over_floor": round(result["c1"]["p50_ms"] / floor_ms, 1) if floor_ms else None,
            "k": k,
            "seeds": seeds,
            "workers": workers,
            "ranker": ranker,
            "distinct_titles": len({bodies[i]["name"] for i in picks[warmup:]}),
            "model": str(model_dir),
        }
    )
    title = f"/v1/recommend latency: k={k}, {seeds} seeds, {workers} worker(s), ranker {ranker}"
    chart = latency_histogram(latencies, Path(out).with_suffix(".png"), title)
    result["chart"] = str(chart)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    rows = [
        "| concurrency | p50 ms | p95 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(k for k in result if k.startswith("c") and k[1:].isdigit()):
        r = result[key]
        rows.append(
            f"| {key[1:]} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['rps']:.1f} | {r['errors']} |"
        )
    rows.append(
        f"\nnumpy floor (scoring {result['catalog_size']} tracks + top-{result['k']}): "
        f"{result['floor_ms']:.3f} ms; our c1 p50 = {result['p50_over_floor']}x the floor; "
        f"{result.get('workers', 1)} server process(es), ranker {result.get('ranker', '?')}"
    )
    return "\n".join(rows)
