"""Export stage: the LLaRA++ ranker (and the MiniLM encoder) to ONNX, optimized and quantized.

``export_onnx(model_dir, data_dir, split_dir)`` runs the whole stage:

1. **Export** ``ranker/`` with the dynamo exporter (``torch.onnx.export(dynamo=True)``, opset
   18): ``torch.export`` captures ``forward`` exactly (no tracing of Python control flow), and
   dynamic ``batch`` / ``seeds`` / ``candidates`` axes are declared as ``torch.export.Dim``.
   Opset 18 is the lowest the dynamo exporter emits and one every onnxruntime quantization
   tool in use here handles. Weights go in the one file unless they pass 1 GiB.
2. **Variants**: ``pytorch_fp32`` (the reference, not served), ``onnx_fp32``, ``onnx_optimized``
   (onnxruntime extended-level graph optimization, saved: the layout-independent level, so the
   file runs on any CPU), ``onnx_qint8_dynamic`` (``quantize_dynamic``, per-channel int8 weights)
   and ``onnx_qint8_static`` (QDQ, per-channel int8 weights, uint8 activations calibrated
   (MinMax) on ranker cases drawn from *training* playlists).
3. **Parity** on the validation cases, each variant against ``pytorch_fp32`` on the same inputs:
   max |score difference| (real candidates), top-100 overlap, NDCG@500 of the candidate order.
4. **Timing** on CPU with ``intra_op_num_threads`` pinned (PyTorch gets the same thread count),
   interleaved: ``timing_repeats`` rounds, each running every variant in turn (the order
   rotated by one per round) on the same validation cases, so load that comes and goes hits
   every variant alike. p50 / p95 / p99 ms at batch 1 over all rounds, the p50 of each round
   (``round_p50_ms``), and throughput (cases/s) at batch 64.
5. **Choose** (:func:`choose_variant`, a pure function of the recorded figures, so the same
   figures always give the same choice): ONNX variants are taken from the most exact to the
   most approximate (:data:`ONNX_VARIANTS`); the first within the quality budget (validation
   NDCG within ``ndcg_tolerance``, 1%, of PyTorch fp32) is served unless a later one in budget
   is at least ``choice_margin`` (15%) faster -- the median over rounds of its p50 ratio to the
   served one -- *and* faster in every round; it then becomes the one to beat. Ties and noise
   within the margin keep the more exact variant. ``ExportConfig.variant`` pins the served
   variant instead (it must be in budget). The encoder follows the same rule over fp32 and
   QInt8, QInt8 in budget only when its cosine with fp32 is at least 0.99 on every check text.
6. **Serving graph**: candidate vectors depend on the track alone, so servers compute them once
   per catalogue track; ``ranker.serving.onnx`` is the chosen variant's recipe applied to the
   rest of ``forward`` (query tokens, transformer, scoring) with ``cand_vectors`` as an input.
   It is checked against PyTorch fp32 and timed like the variants (``manifest["serving"]``).

Files in: ``MODEL_DIR`` (a trained LLaRA++ folder); ``tracks.parquet``,
``playlists.parquet``, ``interactions.parquet`` of the ingest folder and ``folds.parquet``,
``cases.parquet`` of the split folder it was trained on.

Files out (``MODEL_DIR/onnx/``)::

    ranker.onnx, ranker.optimized.onnx, ranker.qint8_dynamic.onnx, ranker.qint8_static.onnx
    ranker.serving.onnx  the chosen variant's recipe applied to the query side + scoring over
                    precomputed candidate vectors (``cand_vectors``), what the ranker server runs
    encoder.onnx, encoder.qint8.onnx, tokenizer/
    manifest.json   {"chosen", "rule", "choice": {pinned, reason, comparisons},
                    "ranker": {file, provider, intra_op_num_threads, inputs, outputs, opset,
                    exporter}, "encoder": {file, tokenizer, max_length, choice, ...}, "parity",
                    "variants": {NAME: {file, size_mb, ndcg, p50_ms, round_p50_ms, ...}},
                    "serving": {file, from_variant, inputs, max_abs_diff, p50_ms, ...}, ...}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from llarapp.evaluation.metrics import ndcg
from llarapp.export.runtime import MANIFEST_FILE, ONNX_DIR, save_cand_vectors
from llarapp.models.llara import INPUT_NAMES, LlaraForCandidateScoring
from llarapp.text import make_session

log = logging.getLogger(__name__)

REFERENCE = "pytorch_fp32"
#: From the most exact to the most approximate: the order :func:`choose_variant` walks.
ONNX_VARIANTS = ("onnx_fp32", "onnx_optimized", "onnx_qint8_dynamic", "onnx_qint8_static")
VARIANT_FILES = {
    "onnx_fp32": "ranker.onnx",
    "onnx_optimized": "ranker.optimized.onnx",
    "onnx_qint8_dynamic": "ranker.qint8_dynamic.onnx",
    "onnx_qint8_static": "ranker.qint8_static.onnx",
}
OUTPUT_NAMES = ("scores",)
SERVING_INPUT_NAMES = (*INPUT_NAMES[:6], "cand_vectors", "cand_features", "cand_mask")
SERVING_FILE = "ranker.serving.onnx"
EXTERNAL_DATA_BYTES = 1 << 30  # weights beyond this go to an external .data file
TOP_OVERLAP = 100

Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ExportConfig:
    """Knobs of the export stage (defaults are what ``llarapp benchmark export`` runs)."""

    opset: int = 18  # dynamo exporter: 18 is its floor and every ORT quantizer handles it
    threads: int = 1  # intra_op_num_threads of every CPU session (torch.set_num_threads too)
    provider: str = "CPUExecutionProvider"
    max_valid_cases: int | None = 400  # validation cases for parity, NDCG and batch-1 timing
    calibration_playlists: int = 64  # training playlists whose cases calibrate static QInt8
    max_calibration_cases: int = 64  # each keeps its MatMul inputs in memory while calibrating
    warmup_runs: int = 10  # untimed runs per variant before timing
    # timed batch-1 runs per variant (cycling the validation cases), split evenly over the
    # rounds (rounded up: at least one run per round)
    latency_runs: int = 200
    # interleaved timing rounds: each times every variant in turn on the same cases, so the
    # choice compares variants round by round (paired) rather than across time
    timing_repeats: int = 5
    throughput_batch: int = 64
    throughput_runs: int = 10  # timed runs of one batch of ``throughput_batch`` cases
    ndcg_tolerance: float = 0.01  # a variant is in budget when NDCG >= (1 - tol) * fp32 NDCG
    # a more approximate variant replaces a more exact one only when it is at least this much
    # faster (median over rounds of its per-round p50 ratio <= 1 - margin) and faster in every
    # round; below that, timing noise could flip the choice from one run to the next
    choice_margin: float = 0.15
    # serve this ONNX variant whatever the timings say (it must still be in the NDCG budget);
    # None: the rule chooses. Tests pin it so that no result depends on wall-clock timing.
    variant: str | None = None
    encoder: bool = True  # also export / quantize / time the MiniLM encoder
    encoder_check_texts: int = 1000  # track texts the encoder variants are compared on
    min_encoder_cosine: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if self.opset < 18:
            raise ValueError(f"opset={self.opset}: the dynamo exporter needs opset >= 18")
        positive = ("threads", "latency_runs", "timing_repeats", "throughput_batch")
        for name in (*positive, "throughput_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExportConfig.{name}={getattr(self, name)}: expected >= 1")
        for name in ("ndcg_tolerance", "choice_margin"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"ExportConfig.{name}={getattr(self, name)}: expected 0 <= x < 1")
        if self.variant is not None and self.variant not in ONNX_VARIANTS:
            raise ValueError(
                f"ExportConfig.variant={self.variant!r}: expected None or one of {ONNX_VARIANTS}"
            )


# --------------------------------------------------------------------------------------------
# Export and variants
# --------------------------------------------------------------------------------------------
def ranker_io_spec(ranker: LlaraForCandidateScoring) -> tuple[list[dict], list[dict]]:
    """Input and output ``{"name", "shape", "dtype"}`` lists (named axes are dynamic)."""
    c = ranker.config
    shapes = {
        "title_vec": ["batch", c.text_dim],
        "title_mask": ["batch"],
        "seed_text": ["batch", "seeds", c.text_dim],
        "seed_behavior": ["batch", "seeds", c.behavior_dim],
        "seed_use_behavior": ["batch", "seeds"],
        "seed_mask": ["batch", "seeds"],
        "cand_text": ["batch", "candidates", c.text_dim],
        "cand_behavior": ["batch", "candidates", c.behavior_dim],
        "cand_use_behavior": ["batch", "candidates"],
        "cand_features": ["batch", "candidates", c.n_features],
        "cand_mask": ["batch", "candidates"],
    }
    inputs = [{"name": n, "shape": shapes[n], "dtype": "float32"} for n in INPUT_NAMES]
    outputs = [{"name": "scores", "shape": ["batch", "candidates"], "dtype": "float32"}]
    return inputs, outputs


def serving_io_spec(ranker: LlaraForCandidateScoring) -> tuple[list[dict], list[dict]]:
    """The serving graph's inputs: the query side of ``forward`` plus ``cand_vectors``
    (:meth:`~LlaraForCandidateScoring.candidate_vectors`, precomputed per catalogue track)."""
    inputs, outputs = ranker_io_spec(ranker)
    by_name = {spec["name"]: spec for spec in inputs}
    by_name["cand_vectors"] = {
        "name": "cand_vectors",
        "shape": ["batch", "candidates", ranker.config.hidden_size],
        "dtype": "float32",
    }
    return [by_name[n] for n in SERVING_INPUT_NAMES], outputs


class _Positional(torch.nn.Module):
    """``forward(*INPUT_NAMES) -> scores``: the ranker with a tensor-only signature."""

    def __init__(self, ranker: LlaraForCandidateScoring) -> None:
        super().__init__()
        self.ranker = ranker

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.ranker(**dict(zip(INPUT_NAMES, inputs, strict=True)), return_dict=True).scores


class _Serving(_Positional):
    """``forward(*SERVING_INPUT_NAMES) -> scores``: ``forward`` with the candidate tower
    hoisted out (the same scores when ``cand_vectors`` are the tower's output)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        query = self.ranker.query_vectors(*inputs[:6])
        return self.ranker.score(query, *inputs[6:])


def example_inputs(specs: list[dict], b: int = 2, s: int = 3, n: int = 5):
    """Random inputs for ``specs`` at ``(B, S, N) = (b, s, n)``; sizes >= 2 so no axis is
    specialised."""
    gen = torch.Generator().manual_seed(0)
    sizes = {"batch": b, "seeds": s, "candidates": n}
    out = []
    for spec in specs:
        shape = [sizes.get(d, d) for d in spec["shape"]]
        if spec["name"].endswith(("_mask", "_use_behavior")):
            out.append(torch.ones(shape))
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)


def export_ranker(
    ranker: LlaraForCandidateScoring, path: Path | str, opset: int = 18, serving: bool = False
) -> Path:
    """Export ``ranker`` to ``path`` (dynamo exporter, dynamic batch / seeds / candidates);
    ``serving``: the graph over precomputed candidate vectors (:func:`serving_io_spec`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = (_Serving if serving else _Positional)(ranker.eval()).eval()
    inputs, _ = (serving_io_spec if serving else ranker_io_spec)(ranker)
    batch = torch.export.Dim("batch", min=1)
    seeds = torch.export.Dim("seeds", min=0)
    cands = torch.export.Dim("candidates", min=1)
    axes = {"batch": batch, "seeds": seeds, "candidates": cands}
    dynamic = tuple(
        {i: axes[d] for i, d in enumerate(spec["shape"]) if isinstance(d, str)} for spec in inputs
    )
    external = sum(p.numel() * p.element_size() for p in ranker.parameters()) > EXTERNAL_DATA_BYTES
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            example_inputs(inputs),
            dynamo=True,
            opset_version=opset,
            input_names=[spec["name"] for spec in inputs],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=(dynamic,),
            external_data=external,
        )
    program.save(str(path), external_data=external)
    return path


def optimize_saved(src: Path, dst: Path, threads: int = 1, level: str = "extended") -> Path:
    """Run onnxruntime graph optimization on ``src`` and save the optimized graph as ``dst``."""
    import onnxruntime as ort

    from llarapp.text import session_options

    opts = session_options(threads, level)
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return dst


def quantize_ranker_dynamic(src: Path, dst: Path) -> dict:
    """Dynamic QInt8: int8 per-channel weights, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )
    return {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True}


class _FeedReader:
    """``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - some calibrators call it
        pass


def quantize_ranker_static(src: Path, dst: Path, calibration: Sequence[dict]) -> dict:
    """Static QInt8 (QDQ): int8 per-channel weights, uint8 activations from MinMax calibration."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise ValueError("quantize_ranker_static: no calibration inputs")
    reader = type("Reader", (_FeedReader, CalibrationDataReader), {})(calibration)
    quantize_static(
        src,
        dst,
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # not CalibMaxIntermediateOutputs: onnxruntime 1.32 drops (not merges) the outputs it
        # collected when that limit is hit; memory is bounded by max_calibration_cases instead
        extra_options={"MatMulConstBOnly": True},
    )
    return {
        "method": "quantize_static",
        "format": "QDQ",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": True,
        "calibration": "MinMax",
        "calibration_inputs": len(calibration),
    }


# --------------------------------------------------------------------------------------------
# Inputs: validation and calibration cases
# --------------------------------------------------------------------------------------------
def to_feeds(model, cases: list) -> dict[str, np.ndarray]:
    """``forward``'s inputs (float32 numpy feeds) for a batch of ``cases`` (``Candidates``),
    built as the servers and training build them (``LlaraPP.ranker_inputs``)."""
    return model.ranker_inputs(cases, full=True)


def validation_inputs(model, data_dir: Path, split_dir: Path, max_cases: int | None):
    """``(candidates, hidden_uris)`` of the validation cases, encoded and retrieved as served
    (``LlaraPP.candidates``)."""
    from llarapp.data.dataset import load_cases

    valid = load_cases(data_dir, split_dir, "valid", max_cases)
    if not valid:
        raise ValueError(f"{split_dir}: no validation cases to check the export on")
    cases = [model.candidates(ec.case) for ec in tqdm(valid, desc="valid cases", leave=False)]
    return cases, [list(ec.hidden) for ec in valid]


def calibration_cases(model, data_dir: Path, split_dir: Path, config: ExportConfig) -> list:
    """Candidates of ranker cases (challenge categories) from a sample of *training*
    playlists."""
    from llarapp.data.schema import INTERACTIONS_FILE, PLAYLISTS_FILE
    from llarapp.data.split import FOLDS_FILE
    from llarapp.models.llarapp import Candidates
    from llarapp.training.llara import LlaraTrainConfig, ranker_cases_from_playlists

    folds = pq.read_table(split_dir / FOLDS_FILE, columns=["pid", "fold"]).to_pandas()
    train_pids = np.sort(folds.loc[folds["fold"] == "train", "pid"].to_numpy())
    if len(train_pids) == 0:
        raise ValueError(f"{split_dir / FOLDS_FILE}: no training playlists to calibrate on")
    rng = np.random.default_rng([config.seed, 17])
    n = min(config.calibration_playlists, len(train_pids))
    pids = np.sort(rng.choice(train_pids, n, replace=False))
    pid_set = set(pids.tolist())
    inter = pq.read_table(data_dir / INTERACTIONS_FILE, columns=["pid", "pos", "track_uri"])
    inter = inter.to_pandas()
    inter = inter[inter["pid"].isin(pid_set)].sort_values(["pid", "pos"])
    ordered = inter.groupby("pid")["track_uri"].apply(list)
    names = pq.read_table(data_dir / PLAYLISTS_FILE, columns=["pid", "name"]).to_pandas()
    names = names.set_index("pid")["name"]
    pids = np.array([p for p in pids if p in ordered.index])
    titles = [str(names.get(p, "")) for p in pids]
    train_config = LlaraTrainConfig.from_dict(model.config)
    cases = ranker_cases_from_playlists(
        model.stage, [ordered[p] for p in pids], titles, model.encoder.encode(titles), train_config
    )
    order = rng.permutation(len(cases))[: config.max_calibration_cases]
    return [
        Candidates(cases[i].query, cases[i].candidates, cases[i].features, cases[i].seed_idx)
        for i in order
    ]


# --------------------------------------------------------------------------------------------
# Parity and timing
# --------------------------------------------------------------------------------------------
def torch_scorer(ranker: LlaraForCandidateScoring) -> Scorer:
    """PyTorch fp32 reference: feeds -> ``(B, N)`` scores."""

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            return ranker(**inputs, return_dict=True).scores.numpy()

    return run


def onnx_scorer(session) -> Scorer:
    """An onnxruntime session: feeds -> ``(B, N)`` scores."""
    return lambda feeds: session.run(["scores"], feeds)[0]


def max_abs_diff(scores: list[np.ndarray], reference: list[np.ndarray], cases: list) -> float:
    """Largest |variant - reference| score over the real candidates of every case."""
    diffs = [
        float(np.abs(s[: len(rc.candidates)] - r[: len(rc.candidates)]).max(initial=0.0))
        for s, r, rc in zip(scores, reference, cases, strict=True)
    ]
    return max(diffs, default=0.0)


def top_overlap(
    scores: list[np.ndarray], reference: list[np.ndarray], cases: list, k: int = TOP_OVERLAP
) -> float:
    """Mean share of the reference top-``k`` candidates that the variant's top-``k`` keeps."""
    values = []
    for s, r, rc in zip(scores, reference, cases, strict=True):
        n = len(rc.candidates)
        if n == 0:
            continue
        kk = min(k, n)
        a = np.argsort(-s[:n], kind="stable")[:kk]
        b = np.argsort(-r[:n], kind="stable")[:kk]
        values.append(len(np.intersect1d(a, b)) / kk)
    return float(np.mean(values)) if values else 1.0


def validation_ndcg(
    scores: list[np.ndarray], cases: list, hidden: list[list[str]], track_uris: np.ndarray
) -> float:
    """Mean NDCG@500 of the candidate order each case's scores give."""
    values = []
    for s, rc, hid in zip(scores, cases, hidden, strict=True):
        n = len(rc.candidates)
        order = rc.candidates[np.argsort(-s[:n], kind="stable")][:500]
        values.append(ndcg(track_uris[order].tolist(), hid, k=500))
    return float(np.mean(values)) if values else 0.0


def time_variants(
    calls: dict[str, Callable[[Any], object]],
    single: Sequence[Any],
    batch: Any,
    batch_size: int,
    config: ExportConfig,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """Time every call at batch 1 and on ``batch``, interleaved across calls.

    ``config.warmup_runs`` untimed runs of each call first; then ``config.timing_repeats``
    rounds, each timing every call in turn (the order rotated by one per round) for
    ``ceil(latency_runs / timing_repeats)`` runs on the same inputs of ``single``, then the
    ``throughput_runs`` batch runs, also a call at a time.

    Args:
        calls: ``{NAME: call}``; a call takes one item of ``single`` or ``batch``.
        single: Batch-1 inputs, cycled.
        batch: One input of ``batch_size`` items (throughput).
        batch_size: Items in ``batch``.
        config: Run counts.
        clock: Seconds (tests pass a fake clock).

    Returns:
        ``{NAME: {"p50_ms", "p95_ms", "p99_ms" (over all rounds), "round_p50_ms" (one per
        round), "throughput" (items/s)}}``.
    """
    names = list(calls)
    for name in names:
        for i in range(config.warmup_runs):
            calls[name](single[i % len(single)])
    per_round = -(-config.latency_runs // config.timing_repeats)
    latency: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(config.timing_repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            ms = []
            for i in range(per_round):
                inputs = single[(r * per_round + i) % len(single)]
                start = clock()
                calls[name](inputs)
                ms.append((clock() - start) * 1000.0)
            latency[name].append(ms)
    elapsed = dict.fromkeys(names, 0.0)
    for name in names:
        calls[name](batch)
    for r in range(config.throughput_runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            calls[name](batch)
            elapsed[name] += clock() - start
    out = {}
    for name in names:
        p50, p95, p99 = np.percentile(np.concatenate(latency[name]), [50, 95, 99])
        out[name] = {
            "p50_ms": round(float(p50), 4),
            "p95_ms": round(float(p95), 4),
            "p99_ms": round(float(p99), 4),
            "round_p50_ms": [round(float(np.median(ms)), 4) for ms in latency[name]],
            "throughput": round(batch_size * config.throughput_runs / elapsed[name], 2),
        }
    return out


@dataclass(frozen=True)
class VariantChoice:
    """What :func:`choose_stable` (or :func:`choose_variant`) serves, and why."""

    variant: str
    reason: str
    #: each challenger against the variant it had to beat: ``{"variant", "against",
    #: "round_ratios", "median_ratio", "won"}`` (time ratios, challenger / incumbent)
    comparisons: tuple[dict[str, Any], ...] = ()


def _ratio(a: float, b: float) -> float:
    """``a / b`` for times, with 0 / 0 a tie and x / 0 (x > 0) slower."""
    if b > 0:
        return a / b
    return 1.0 if a <= 0 else float("inf")


def choose_stable(
    order: Sequence[str],
    round_ms: dict[str, Sequence[float]],
    in_budget: Sequence[str],
    margin: float,
) -> VariantChoice:
    """The most exact variant in budget, unless a more approximate one is clearly faster.

    Walks ``order`` (most exact first) over the variants in budget: the first is the incumbent;
    each later one replaces it only when the median over rounds of its per-round time ratio to
    the incumbent is at most ``1 - margin`` *and* it is faster in every round. A pure function:
    the same figures give the same choice, ties and noise within the margin keep the incumbent.

    Args:
        order: Variant names, most exact first.
        round_ms: ``{NAME: per-round p50 ms}``, the same number of rounds for every variant in
            budget (round ``i`` of every variant timed side by side).
        in_budget: Names that meet the quality budget.
        margin: Relative speed-up a later variant needs, ``0 <= margin < 1``.

    Raises:
        ValueError: No variant of ``order`` is in budget, or round counts differ or are zero.
    """
    if not 0 <= margin < 1:
        raise ValueError(f"choose_stable: margin={margin}, expected 0 <= margin < 1")
    candidates = [name for name in order if name in set(in_budget)]
    if not candidates:
        raise ValueError(f"choose_stable: none of {list(order)} is within the quality budget")
    rounds = {name: [float(x) for x in round_ms[name]] for name in candidates}
    counts = {name: len(v) for name, v in rounds.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(f"choose_stable: rounds per variant {counts}, expected equal and >= 1")
    incumbent = candidates[0]
    comparisons = []
    for challenger in candidates[1:]:
        ratios = [_ratio(c, i) for c, i in zip(rounds[challenger], rounds[incumbent], strict=True)]
        median = float(np.median(ratios))
        won = median <= 1.0 - margin and max(ratios) < 1.0
        comparisons.append(
            {
                "variant": challenger,
                "against": incumbent,
                "round_ratios": [round(r, 4) for r in ratios],
                "median_ratio": round(median, 4),
                "won": won,
            }
        )
        if won:
            incumbent = challenger
    out_of_budget = [name for name in order if name not in candidates]
    steps = "; ".join(
        f"{c['variant']} / {c['against']} time ratio {c['median_ratio']:.3f} (median), "
        f"{max(c['round_ratios']):.3f} (slowest round): " + ("replaces it" if c["won"] else "kept")
        for c in comparisons
    )
    reason = (
        f"{incumbent}: a later variant replaces the one before it only when >= {margin:.0%} "
        f"faster in the median of {counts[candidates[0]]} interleaved rounds and faster in every "
        f"round"
        + (f"; {steps}" if steps else "")
        + (f"; out of the quality budget: {', '.join(out_of_budget)}" if out_of_budget else "")
    )
    return VariantChoice(incumbent, reason, tuple(comparisons))


def choose_variant(
    variants: dict[str, dict],
    tolerance: float = 0.01,
    margin: float = 0.15,
    pinned: str | None = None,
) -> VariantChoice:
    """The ONNX ranker variant to serve, from its recorded NDCG and per-round timings.

    In budget: NDCG within ``tolerance`` of ``pytorch_fp32``; among those,
    :func:`choose_stable` over :data:`ONNX_VARIANTS` (``onnx_fp32`` first) with ``margin``.

    Args:
        variants: ``{NAME: {"ndcg", "round_p50_ms", ...}}`` holding ``pytorch_fp32`` (the
            reference) and ONNX variants (those with a ``file``).
        tolerance: Relative NDCG loss allowed against ``pytorch_fp32``.
        margin: Speed-up a more approximate variant needs (see :func:`choose_stable`).
        pinned: Serve this variant instead of the rule's choice (it must be in budget).

    Raises:
        ValueError: No reference, no ONNX variant in budget, or ``pinned`` is not in budget.
    """
    if REFERENCE not in variants:
        raise ValueError(f"choose_variant: no {REFERENCE!r} reference in {sorted(variants)}")
    floor = (1.0 - tolerance) * variants[REFERENCE]["ndcg"]
    order = [n for n in ONNX_VARIANTS if n in variants and variants[n].get("file")]
    in_budget = [n for n in order if variants[n]["ndcg"] >= floor - 1e-12]
    if not in_budget:
        found = {n: v["ndcg"] for n, v in variants.items()}
        raise ValueError(f"no ONNX variant keeps NDCG >= {floor:.5f}; found {found}")
    round_ms = {n: variants[n]["round_p50_ms"] for n in in_budget}
    rule = choose_stable(order, round_ms, in_budget, margin)
    if pinned is None:
        return rule
    if pinned not in in_budget:
        raise ValueError(
            f"ExportConfig.variant={pinned!r}: not within the NDCG budget "
            f"(NDCG >= {floor:.5f}); in budget: {in_budget}"
        )
    reason = f"{pinned}: pinned by ExportConfig.variant; the rule alone serves {rule.reason}"
    return VariantChoice(pinned, reason, rule.comparisons)


def rule_text(config: ExportConfig) -> str:
    """The choice rule of :func:`choose_variant` in words, with ``config``'s figures."""
    text = (
        f"ONNX variants from the most exact to the most approximate ({', '.join(ONNX_VARIANTS)}):"
        f" the first whose validation NDCG@500 is within {config.ndcg_tolerance:.0%} of "
        f"{REFERENCE} is served unless a later one within it is >= {config.choice_margin:.0%} "
        f"faster (median over {config.timing_repeats} interleaved rounds of its p50 ms ratio at "
        f"batch 1, {config.provider}, {config.threads} thread(s)) and faster in every round; "
        "that one is then the one to beat"
    )
    if config.variant:
        text += f"; pinned by ExportConfig.variant={config.variant!r}"
    return text


def size_mb(path: Path) -> float:
    """Size of an ONNX file plus its external data file, if any, in MB."""
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.exists():
        total += data.stat().st_size
    return round(total / 1e6, 4)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def export_onnx(
    model_dir: Path | str,
    data_dir: Path | str,
    split_dir: Path | str,
    config: ExportConfig | None = None,
    model=None,
) -> dict[str, Any]:
    """Export, optimize, quantize, check, time and choose; write ``MODEL_DIR/onnx/``.

    Args:
        model_dir: A trained LLaRA++ folder (``llarapp train``).
        data_dir: The ingest folder it was trained on.
        split_dir: The split folder it was trained on (validation cases, training playlists).
        config: Export knobs.
        model: The loaded :class:`~llarapp.models.llarapp.LlaraPP` (default: load it).

    Returns:
        The manifest written to ``MODEL_DIR/onnx/manifest.json`` (see the module docstring).
    """
    from llarapp.models.base import Recommender
    from llarapp.models.llarapp import LlaraPP

    config = config or ExportConfig()
    model_dir, data_dir, split_dir = Path(model_dir), Path(data_dir), Path(split_dir)
    model = model or Recommender.load(model_dir)
    if not isinstance(model, LlaraPP):
        raise ValueError(f"{model_dir}: expected a llara++ model, found {model.name!r}")
    out = model_dir / ONNX_DIR
    out.mkdir(parents=True, exist_ok=True)
    ranker = model.ranker.eval()
    seconds: dict[str, float] = {}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        # ---- inputs
        t = time.perf_counter()
        cases, hidden = validation_inputs(model, data_dir, split_dir, config.max_valid_cases)
        single = [to_feeds(model, [c]) for c in cases]
        fill = [cases[i % len(cases)] for i in range(config.throughput_batch)]
        big = to_feeds(model, fill)
        calib_cases = calibration_cases(model, data_dir, split_dir, config)
        calibration = [to_feeds(model, [c]) for c in calib_cases]
        seconds["inputs"] = time.perf_counter() - t

        # ---- export and variants
        t = time.perf_counter()
        files = {name: out / VARIANT_FILES[name] for name in ONNX_VARIANTS}
        export_ranker(ranker, files["onnx_fp32"], config.opset)
        seconds["export"] = time.perf_counter() - t
        t = time.perf_counter()
        optimize_saved(files["onnx_fp32"], files["onnx_optimized"], config.threads)
        recipes = {
            "onnx_fp32": {"method": "torch.onnx.export", "exporter": "dynamo"},
            "onnx_optimized": {"method": "onnxruntime graph optimization", "level": "extended"},
            "onnx_qint8_dynamic": quantize_ranker_dynamic(
                files["onnx_fp32"], files["onnx_qint8_dynamic"]
            ),
            "onnx_qint8_static": quantize_ranker_static(
                files["onnx_fp32"], files["onnx_qint8_static"], calibration
            ),
        }
        seconds["variants"] = time.perf_counter() - t

        # ---- parity and timing
        t = time.perf_counter()
        scorers: dict[str, Scorer] = {REFERENCE: torch_scorer(ranker)}
        load_ms = {}
        for name in ONNX_VARIANTS:
            start = time.perf_counter()
            session = make_session(files[name], config.threads, config.provider)
            load_ms[name] = round((time.perf_counter() - start) * 1000.0, 2)
            scorers[name] = onnx_scorer(session)
        ref_scores = [scorers[REFERENCE](f)[0] for f in single]
        ref_batch = scorers[REFERENCE](big)
        big_mask = big["cand_mask"] > 0
        variants: dict[str, dict] = {}
        for name, run in tqdm(scorers.items(), desc="variants", leave=False):
            scores = ref_scores if name == REFERENCE else [run(f)[0] for f in single]
            row: dict[str, Any] = {
                "file": VARIANT_FILES.get(name),
                "provider": "torch-cpu" if name == REFERENCE else config.provider,
                "intra_op_num_threads": config.threads,
                "size_mb": _torch_size_mb(ranker) if name == REFERENCE else size_mb(files[name]),
                "ndcg": round(validation_ndcg(scores, cases, hidden, model.track_uris), 6),
                "max_abs_diff": max_abs_diff(scores, ref_scores, cases),
                "top100_overlap": round(top_overlap(scores, ref_scores, cases), 6),
                "batch_max_abs_diff": float(
                    np.abs(run(big) - ref_batch)[big_mask].max(initial=0.0)
                ),
            }
            if name in load_ms:
                row["load_ms"] = load_ms[name]
                row["recipe"] = recipes[name]
            variants[name] = row
        timings = time_variants(scorers, single, big, len(big["cand_mask"]), config)
        for name, row in variants.items():
            row.update(timings[name])
            log.info(
                "%s: ndcg %.4f  max|diff| %.2e  top100 %.3f  p50 %.3f ms  %.0f cases/s",
                name,
                row["ndcg"],
                row["max_abs_diff"],
                row["top100_overlap"],
                row["p50_ms"],
                row["throughput"],
            )
        choice = choose_variant(
            variants, config.ndcg_tolerance, config.choice_margin, config.variant
        )
        chosen = choice.variant
        seconds["parity_timing"] = time.perf_counter() - t
        t = time.perf_counter()
        serving = _serving_section(ranker, out, chosen, single, big, ref_scores, cases, config)
        serving["cand_vectors_file"] = save_cand_vectors(out, model.catalog_vectors)
        seconds["serving"] = time.perf_counter() - t

        # ---- encoder
        encoder = None
        if config.encoder:
            t = time.perf_counter()
            encoder = _encoder_section(out, data_dir, config)
            seconds["encoder"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads_before)

    inputs, outputs = ranker_io_spec(ranker)
    manifest = {
        "format": "llarapp-onnx/1",
        "chosen": chosen,
        "rule": rule_text(config),
        "choice": {
            "pinned": config.variant,
            "reason": choice.reason,
            "comparisons": list(choice.comparisons),
        },
        "ranker": {
            "variant": chosen,
            "file": VARIANT_FILES[chosen],
            "provider": config.provider,
            "intra_op_num_threads": config.threads,
            "inputs": inputs,
            "outputs": outputs,
            "opset": config.opset,
            "exporter": "torch.onnx.export(dynamo=True)",
            "masked_score": -1e4,
        },
        "serving": serving,
        "encoder": encoder,
        "parity": {
            name: {k: v[k] for k in ("max_abs_diff", "top100_overlap", "ndcg")}
            for name, v in variants.items()
        },
        "variants": variants,
        "validation_cases": len(cases),
        "calibration_cases": len(calibration),
        "config": dataclasses.asdict(config),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "versions": _versions(),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    log.info("export: chose %s -> %s", chosen, out / MANIFEST_FILE)
    return manifest


def serving_feeds(ranker: LlaraForCandidateScoring, feeds: dict[str, np.ndarray]) -> dict:
    """Full-graph feeds -> serving-graph feeds (candidate text / behavior -> their vectors)."""
    with torch.inference_mode():
        vectors = ranker.candidate_vectors(
            *(
                torch.from_numpy(feeds[k])
                for k in ("cand_text", "cand_behavior", "cand_use_behavior")
            )
        )
    return {
        **{k: feeds[k] for k in SERVING_INPUT_NAMES if k in feeds},
        "cand_vectors": vectors.numpy(),
    }


def _serving_section(
    ranker: LlaraForCandidateScoring,
    out: Path,
    chosen: str,
    single: list[dict],
    big: dict,
    ref_scores: list[np.ndarray],
    cases: list,
    config: ExportConfig,
) -> dict[str, Any]:
    """Export the serving graph, made the way ``chosen`` was, and check it against PyTorch."""
    import tempfile

    dst = out / SERVING_FILE
    with tempfile.TemporaryDirectory() as tmp:
        raw = export_ranker(ranker, Path(tmp) / "serving.onnx", config.opset, serving=True)
        if chosen == "onnx_optimized":
            optimize_saved(raw, dst, config.threads)
            recipe: dict[str, Any] = {
                "method": "onnxruntime graph optimization",
                "level": "extended",
            }
        elif chosen.startswith("onnx_qint8"):  # calibration-free either way
            recipe = quantize_ranker_dynamic(raw, dst)
        else:
            dst.write_bytes(raw.read_bytes())
            recipe = {"method": "torch.onnx.export", "exporter": "dynamo"}
    run = onnx_scorer(make_session(dst, config.threads, config.provider))
    feeds = [serving_feeds(ranker, f) for f in single]
    scores = [run(f)[0] for f in feeds]
    inputs, outputs = serving_io_spec(ranker)
    row = {
        "file": SERVING_FILE,
        "from_variant": chosen,
        "recipe": recipe,
        "inputs": inputs,
        "outputs": outputs,
        "cand_vectors": "LlaraForCandidateScoring.candidate_vectors of every catalogue track "
        "(cand_vectors_file; a server whose catalogue grew since computes them at load)",
        "max_abs_diff": max_abs_diff(scores, ref_scores, cases),
        "top100_overlap": round(top_overlap(scores, ref_scores, cases), 6),
        "size_mb": size_mb(dst),
    }
    big_feeds = serving_feeds(ranker, big)
    row.update(
        time_variants({"serving": run}, feeds, big_feeds, len(big["cand_mask"]), config)["serving"]
    )
    log.info("serving graph: max|diff| %.2e  p50 %.3f ms", row["max_abs_diff"], row["p50_ms"])
    return row


def _encoder_section(out: Path, data_dir: Path, config: ExportConfig) -> dict[str, Any]:
    """Export the encoder, compare its variants on track texts, time them, pick one."""
    from llarapp.data.dataset import track_texts
    from llarapp.data.schema import TRACKS_FILE
    from llarapp.text import OnnxTextEncoder
    from llarapp.text.build import export_encoder

    tracks = pq.read_table(data_dir / TRACKS_FILE).to_pandas()
    texts = track_texts(tracks)
    rng = np.random.default_rng([config.seed, 23])
    pick = rng.choice(len(texts), min(config.encoder_check_texts, len(texts)), replace=False)
    texts = [texts[i] for i in np.sort(pick)]
    result = export_encoder(
        out, texts, threads=config.threads, min_cosine=config.min_encoder_cosine
    )
    paths = {"encoder_fp32": result.fp32, "encoder_qint8": result.qint8}
    encode = {
        name: OnnxTextEncoder(
            path, result.tokenizer, result.max_length, threads=config.threads
        ).encode
        for name, path in paths.items()
    }
    single = [[t] for t in texts]
    big = [texts[i % len(texts)] for i in range(config.throughput_batch)]
    # fewer runs than the ranker's: one encoder call costs several ranker calls
    light = dataclasses.replace(
        config,
        warmup_runs=min(config.warmup_runs, 5),
        latency_runs=min(config.latency_runs, 100),
        throughput_runs=min(config.throughput_runs, 3),
    )
    timings = time_variants(encode, single, big, len(big), light)
    rows = {
        name: {"file": path.name, "size_mb": size_mb(path), **timings[name]}
        for name, path in paths.items()
    }
    rows["encoder_fp32"].update(cosine_mean=1.0, cosine_min=1.0)
    rows["encoder_qint8"].update(
        cosine_mean=round(result.cosine_mean, 6), cosine_min=round(result.cosine_min, 6)
    )
    # the ranker's rule: QInt8 is in budget when it meets the cosine bound, and is served only
    # when clearly and consistently faster than fp32
    in_budget = ["encoder_fp32"] + (["encoder_qint8"] if result.quantization["passed"] else [])
    choice = choose_stable(
        list(paths),
        {name: rows[name]["round_p50_ms"] for name in paths},
        in_budget,
        config.choice_margin,
    )
    serve = choice.variant
    return {
        "variant": serve,
        "file": rows[serve]["file"],
        "tokenizer": result.tokenizer.name,
        "max_length": result.max_length,
        "provider": config.provider,
        "intra_op_num_threads": config.threads,
        "inputs": [
            {"name": n, "shape": ["batch", "sequence"], "dtype": "int64"}
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        "outputs": [{"name": "sentence_embedding", "shape": ["batch", 384], "dtype": "float32"}],
        "normalized": True,
        "fp32_vs_torch_max_abs": result.fp32_vs_torch_max_abs,
        "check_texts": len(texts),
        "quantization": {k: v for k, v in result.quantization.items() if k != "excluded_nodes"},
        "quantization_tried": result.tried,
        "variants": rows,
        "choice": {"reason": choice.reason, "comparisons": list(choice.comparisons)},
    }


def _torch_size_mb(ranker: torch.nn.Module) -> float:
    """fp32 parameter bytes of the PyTorch model, in MB (what ``save_pretrained`` writes)."""
    return round(sum(p.numel() * p.element_size() for p in ranker.parameters()) / 1e6, 4)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
