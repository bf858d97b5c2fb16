"""``llarapp benchmark export``: every ranker variant side by side, and the export it chooses.

Re-creates the model's split (ingest + split with the model's seed, as ``llarapp train`` does),
runs the export stage (:func:`llarapp.export.onnx_export.export_onnx`, which writes
``MODEL_DIR/onnx/`` and its ``manifest.json``), prints the table and writes JSON to ``out``::

    {"variants": {NAME: {"size_mb", "ndcg", "p50_ms", "p95_ms", "p99_ms", "throughput",
                         "provider", "max_abs_diff", "top100_overlap", "round_p50_ms"}},
     "chosen": NAME, "choice": {"pinned", "reason", "comparisons"},
     "serving": {"file", "from_variant", "size_mb", "max_abs_diff", "top100_overlap", "p50_ms",
                 "p95_ms", "p99_ms", "throughput"},
     "encoder": {NAME: {"size_mb", "cosine_mean", "cosine_min", "p50_ms", ..., "throughput"}},
     "encoder_chosen": NAME, "manifest": PATH, "dataset": {...}, "seconds": {...}}

``p*_ms`` are per call at batch 1 (one playlist, all its retrieved candidates), timed in
interleaved rounds (``round_p50_ms``: the p50 of each round); ``throughput`` is playlists
(encoder: texts) per second at batch 64. ``choice`` says why ``chosen`` is served (the rule of
:func:`~llarapp.export.onnx_export.choose_variant`, with each comparison's time ratios).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from llarapp.benchmark.timing import timed
from llarapp.export.onnx_export import REFERENCE, ExportConfig, export_onnx
from llarapp.export.runtime import MANIFEST_FILE, ONNX_DIR

log = logging.getLogger(__name__)

TABLE_KEYS = ("size_mb", "ndcg", "p50_ms", "p95_ms", "p99_ms", "throughput")
EXTRA_KEYS = ("provider", "max_abs_diff", "top100_overlap", "batch_max_abs_diff", "round_p50_ms")
SERVING_KEYS = ("file", "from_variant", "size_mb", "max_abs_diff", "top100_overlap", "p50_ms",
                "p95_ms", "p99_ms", "throughput")  # fmt: skip


def run_export_benchmark(
    model_dir: Path | str,
    mpd: str,
    out: Path | str,
    *,
    seed: int | None = None,
    max_playlists: int | None = None,
    work_dir: Path | str | None = None,
    config: ExportConfig | None = None,
) -> dict:
    """Export ``model_dir`` against the split of ``mpd`` it was trained on; write JSON to ``out``.

    Args:
        model_dir: A trained LLaRA++ folder.
        mpd: The MPD slices it was trained on (folder, glob or ``s3://``).
        out: JSON result file.
        seed: Split seed (default: the model's training seed, as ``llarapp train`` splits).
        max_playlists: As given to ``llarapp train``.
        work_dir: Keep the ingest / split tables here (default: a temporary folder).
        config: Export knobs.
    """
    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split
    from llarapp.models.base import Recommender

    model_dir = Path(model_dir)
    model = Recommender.load(model_dir)
    seed = int(model.config.get("seed", 0)) if seed is None else seed
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="llarapp-export-") as tmp:
        work = Path(work_dir or tmp)
        with timed(seconds, "ingest"):
            ingest(mpd, work / "data", max_playlists=max_playlists)
        with timed(seconds, "split"):
            split_report = split(work / "data", work / "split", SplitConfig(seed=seed))
        _check_catalogue(model, work / "data", mpd)
        with timed(seconds, "export"):
            manifest = export_onnx(model_dir, work / "data", work / "split", config, model=model)
        with timed(seconds, "profile"):
            profile = _profile(model, model_dir, work, manifest)
    result = {
        "variants": {
            name: {k: row.get(k) for k in (*TABLE_KEYS, *EXTRA_KEYS)}
            for name, row in manifest["variants"].items()
        },
        "chosen": manifest["chosen"],
        "choice": manifest["choice"],
        "serving": {k: manifest["serving"].get(k) for k in SERVING_KEYS},
        "encoder": (manifest["encoder"] or {}).get("variants", {}),
        "encoder_chosen": (manifest["encoder"] or {}).get("variant"),
        "manifest": str(model_dir / ONNX_DIR / MANIFEST_FILE),
        "dataset": {
            "source": str(mpd),
            "seed": seed,
            "validation_cases": manifest["validation_cases"],
            "calibration_cases": manifest["calibration_cases"],
            "folds": split_report["playlists"],
        },
        "threads": manifest["ranker"]["intra_op_num_threads"],
        "profile": profile,
        "seconds": {**seconds, **{f"export:{k}": v for k, v in manifest["seconds"].items()}},
        "versions": manifest["versions"],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def _profile(model, model_dir: Path, work: Path, manifest: dict, cases: int = 30) -> dict:
    """Per-operator kernel time of every ONNX variant on the first validation cases."""
    from llarapp.export.onnx_export import to_feeds, validation_inputs
    from llarapp.export.profile import profile_ops

    candidates, _ = validation_inputs(model, work / "data", work / "split", cases)
    feeds = [to_feeds(model, [c]) for c in candidates]
    threads = manifest["ranker"]["intra_op_num_threads"]
    return {
        name: profile_ops(model_dir / ONNX_DIR / row["file"], feeds, threads)
        for name, row in manifest["variants"].items()
        if row.get("file")
    }


def _check_catalogue(model, data_dir: Path, mpd: str) -> None:
    """Raise when ``mpd`` is not the data the model was trained on (same track catalogue)."""
    import pyarrow.parquet as pq

    from llarapp.data.schema import TRACKS_FILE

    uris = pq.read_table(data_dir / TRACKS_FILE, columns=["track_uri"]).column(0).to_numpy()
    ours = np.sort(model.track_uris.astype(str))
    if len(ours) != len(uris) or not np.array_equal(ours, np.sort(uris.astype(str))):
        raise ValueError(
            f"{mpd}: its {len(uris)} tracks are not the model's catalogue of {len(ours)}; "
            "pass the MPD slices (and --max-playlists) the model was trained on"
        )


def format_table(result: dict) -> str:
    """Markdown: variant x provider -> size, NDCG, parity, latency at batch 1, throughput."""
    ref = result["variants"].get(REFERENCE, {}).get("p50_ms")
    lines = [
        f"ranker, {result['threads']} thread(s); latency per playlist at batch 1, "
        "throughput in playlists/s at batch 64",
        "",
        "| variant | provider | size MB | NDCG | max abs diff | top-100 | p50 ms | p95 ms "
        "| p99 ms | x p50 | batch-64 /s |",
        "|---" * 11 + "|",
    ]
    for name, r in result["variants"].items():
        mark = " (chosen)" if name == result["chosen"] else ""
        speed = f"{ref / r['p50_ms']:.2f}" if ref and r["p50_ms"] else "-"
        lines.append(
            f"| {name}{mark} | {r['provider']} | {r['size_mb']:.2f} | {r['ndcg']:.4f} "
            f"| {r['max_abs_diff']:.2e} | {r['top100_overlap']:.4f} | {r['p50_ms']:.3f} "
            f"| {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {speed} | {r['throughput']:.1f} |"
        )
    serving = result.get("serving")
    if serving:
        lines += [
            "",
            f"served: {serving['file']} ({serving['from_variant']}'s recipe; candidate vectors "
            "precomputed per track, so unlike the rows above no candidate tower per call): "
            f"max abs diff {serving['max_abs_diff']:.2e}, top-100 "
            f"{serving['top100_overlap']:.4f}, p50 {serving['p50_ms']:.3f} ms, p99 "
            f"{serving['p99_ms']:.3f} ms, {serving['throughput']:.1f} playlists/s at batch 64",
        ]
    if result.get("encoder"):
        lines += [
            "",
            "encoder (MiniLM), cosine vs fp32 ONNX on track texts; latency per text at batch 1, "
            "throughput in texts/s at batch 64",
            "",
            "| variant | size MB | cosine mean | cosine min | p50 ms | p95 ms | p99 ms "
            "| batch-64 /s |",
            "|---" * 8 + "|",
        ]
        for name, r in result["encoder"].items():
            mark = " (chosen)" if name == result["encoder_chosen"] else ""
            lines.append(
                f"| {name}{mark} | {r['size_mb']:.1f} | {r['cosine_mean']:.4f} "
                f"| {r['cosine_min']:.4f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['throughput']:.1f} |"
            )
    if result.get("profile"):
        lines += [
            "",
            "ONNX kernel time per call at batch 1 (onnxruntime profiler), top operators:",
            "",
        ]
        lines += ["| variant | kernel ms | top operators (ms) |", "|---|---|---|"]
        for name, prof in result["profile"].items():
            ops = ", ".join(f"{op} {v['ms']:.2f}" for op, v in prof["ops"].items())
            lines.append(f"| {name} | {prof['kernel_ms']:.2f} | {ops} |")
    lines += [
        "",
        f"chosen: {result['chosen']}  manifest: {result['manifest']}",
        f"why: {result['choice']['reason']}",
    ]
    return "\n".join(lines)
