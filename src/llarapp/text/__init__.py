"""MiniLM text encoding: the low floor that features, export and serving stand on.

* :mod:`llarapp.text.minilm` — the bundled all-MiniLM-L6-v2 weights (:func:`model_path`),
  :data:`DIM` and the cache folders (:func:`default_cache_dir`, :func:`feature_encoder_dir`).
* :mod:`llarapp.text.encoder` — :class:`TextEncoder`: batched sentence vectors with an
  append-only disk cache, on the QInt8 ONNX or the sentence-transformers backend.
* :mod:`llarapp.text.runtime` — onnxruntime sessions (:func:`session_options`,
  :func:`make_session`) and :class:`OnnxTextEncoder` (numpy + onnxruntime + tokenizers).
* :mod:`llarapp.text.build` — the ONNX build of MiniLM and its QInt8 variants (needs torch,
  so it is not imported here).

Below features, export and serving: nothing here imports them (only third-party packages).
"""

from llarapp.text.encoder import TextEncoder
from llarapp.text.minilm import DIM, MODEL_NAME, default_cache_dir, feature_encoder_dir, model_path
from llarapp.text.runtime import OnnxTextEncoder, make_session, session_options

__all__ = [
    "DIM",
    "MODEL_NAME",
    "OnnxTextEncoder",
    "TextEncoder",
    "default_cache_dir",
    "feature_encoder_dir",
    "make_session",
    "model_path",
    "session_options",
]
