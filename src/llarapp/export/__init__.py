"""Export stage: ONNX ranker and encoder, optimized and quantized, with parity checks.

* :mod:`llarapp.export.onnx_export` — the stage (:func:`~.onnx_export.export_onnx`): export,
  variants, parity, timing, the serving choice and ``MODEL_DIR/onnx/manifest.json``.
* :mod:`llarapp.export.encoder` — the MiniLM encoder to ONNX and its QInt8 variant.
* :mod:`llarapp.export.runtime` — what model servers use: :func:`load_ranker_session`,
  :func:`load_serving_session`, :class:`OnnxTextEncoder`, :func:`load_manifest` (numpy +
  onnxruntime + tokenizers; no torch).

Only the runtime names are imported here, so ``import llarapp.export`` stays torch-free.
"""

from llarapp.export.runtime import (
    MANIFEST_FILE,
    ONNX_DIR,
    OnnxTextEncoder,
    load_manifest,
    load_ranker_session,
    load_serving_session,
    make_session,
    session_options,
)

__all__ = [
    "MANIFEST_FILE",
    "ONNX_DIR",
    "OnnxTextEncoder",
    "load_manifest",
    "load_ranker_session",
    "load_serving_session",
    "make_session",
    "session_options",
]
