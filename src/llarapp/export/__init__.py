"""Export stage: ONNX ranker and encoder, optimized and quantized, with parity checks.

* :mod:`llarapp.export.onnx_export` — the stage (:func:`~.onnx_export.export_onnx`): export,
  variants, parity, timing, the serving choice and ``MODEL_DIR/onnx/manifest.json``.
* :mod:`llarapp.export.runtime` — what model servers use: :func:`load_ranker_session`,
  :func:`load_serving_session`, :func:`load_cand_vectors`, :func:`load_text_encoder`,
  :func:`load_manifest` (numpy + onnxruntime + tokenizers; no torch).
* :mod:`llarapp.export.profile` — onnxruntime's per-operator profile of a ranker variant.

The MiniLM encoder's ONNX build and sessions live in :mod:`llarapp.text`. Only the runtime
names are imported here, so ``import llarapp.export`` stays torch-free.
"""

from llarapp.export.runtime import (
    MANIFEST_FILE,
    ONNX_DIR,
    load_cand_vectors,
    load_manifest,
    load_ranker_session,
    load_serving_session,
    load_text_encoder,
)

__all__ = [
    "MANIFEST_FILE",
    "ONNX_DIR",
    "load_cand_vectors",
    "load_manifest",
    "load_ranker_session",
    "load_serving_session",
    "load_text_encoder",
]
