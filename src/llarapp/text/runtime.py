"""onnxruntime sessions and the ONNX text encoder (numpy, onnxruntime and tokenizers; no torch).

A model server can use it on its own::

    encoder = OnnxTextEncoder(folder / "encoder.qint8.onnx", folder / "tokenizer", max_length=256)
    vectors = encoder.encode(["Hey Jude by The Beatles"])  # (1, 384) float32, unit norm
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def session_options(threads: int = 1, optimization: str = "all"):
    """``onnxruntime.SessionOptions`` with ``intra_op_num_threads`` pinned.

    Args:
        threads: ``intra_op_num_threads`` (``inter_op_num_threads`` is 1; execution sequential).
        optimization: Graph optimization level: ``"disable"``, ``"basic"``, ``"extended"`` or
            ``"all"``.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization={optimization!r}: expected one of {sorted(levels)}")
    if threads < 1:
        raise ValueError(f"threads={threads}: expected >= 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[optimization]
    return opts


def make_session(
    path: Path | str,
    threads: int = 1,
    provider: str = "CPUExecutionProvider",
    optimization: str = "all",
):
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``provider``."""
    import onnxruntime as ort

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no ONNX model there (run the export stage first)")
    return ort.InferenceSession(
        str(path), sess_options=session_options(threads, optimization), providers=[provider]
    )


class OnnxTextEncoder:
    """Tokenise with ``tokenizers`` and embed with an ONNX encoder (:mod:`llarapp.text.build`).

    Args:
        path: ``encoder*.onnx``.
        tokenizer_dir: Folder holding ``tokenizer.json``.
        max_length: Truncation length in tokens (sentence-transformers' ``max_seq_length``).
        threads: ``intra_op_num_threads``.
        batch_size: Texts per session run.
        provider: onnxruntime execution provider.
        workers: Python threads running batches at once on the one session (its ``run``
            releases the GIL). On the 2-core dev machine, 2 workers of 1 thread each embed
            track texts 1.3x faster than 1 worker of 2 threads.
    """

    def __init__(
        self,
        path: Path | str,
        tokenizer_dir: Path | str,
        max_length: int = 256,
        threads: int = 1,
        batch_size: int = 64,
        provider: str = "CPUExecutionProvider",
        workers: int = 1,
    ) -> None:
        from tokenizers import Tokenizer

        if workers < 1:
            raise ValueError(f"workers={workers}: expected >= 1")

        tok_file = Path(tokenizer_dir) / "tokenizer.json"
        if not tok_file.exists():
            raise FileNotFoundError(f"{tok_file}: no tokenizer.json for the ONNX encoder")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest
        self.session = make_session(path, threads=threads, provider=provider)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.batch_size = batch_size
        self.workers = workers
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised, in the order of ``texts``.

        Texts are batched by length (shortest first), so a batch pads to little more than its
        own texts. A QInt8 encoder quantizes activations per batch, so with ``batch_size > 1``
        a vector moves a little with its batch (mean cosine 0.993 between batches of 8 and one
        text at a time, on real track texts); the same texts in any order give the same
        vectors.
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [
            [texts[i] for i in order[start : start + self.batch_size]]
            for start in range(0, len(order), self.batch_size)
        ]
        if self.workers > 1 and len(batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:
                parts = list(pool.map(self._run, batches))
        else:
            parts = [self._run(batch) for batch in batches]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if parts:
            out[order] = np.concatenate(parts)
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        return self.session.run(None, feeds)[0].astype(np.float32, copy=False)
