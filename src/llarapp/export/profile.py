"""Where a ranker variant spends its time: onnxruntime's per-operator profile at batch 1.

Used by ``llarapp benchmark export`` to show why a quantized variant is or is not faster:
each variant runs the same validation feeds with the profiler on, and kernel time is summed
per operator type (``MatMul``, ``DynamicQuantizeMatMul``, ...).
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def profile_ops(
    path: Path | str, feeds: Sequence[dict[str, np.ndarray]], threads: int = 1, top: int = 6
) -> dict:
    """Kernel time per operator type of the ONNX model at ``path`` over ``feeds`` (batch 1).

    Returns:
        ``{"kernel_ms": per call, "ops": {OP: {"ms": per call, "share": fraction}}}`` with the
        ``top`` operator types by time.
    """
    import onnxruntime as ort

    from llarapp.text import session_options

    if not feeds:
        raise ValueError(f"profile_ops({path}): no feeds to run")
    with tempfile.TemporaryDirectory(prefix="llarapp-ortprof-") as tmp:
        options = session_options(threads, "all")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        for feed in feeds:
            session.run(None, {k: v for k, v in feed.items() if k in names})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]  # microseconds
    total = sum(per_op.values())
    calls = len(feeds)
    return {
        "kernel_ms": round(total / calls / 1e3, 3),
        "ops": {
            op: {"ms": round(us / calls / 1e3, 3), "share": round(us / max(total, 1), 3)}
            for op, us in per_op.most_common(top)
        },
    }
