"""Load exported models for serving: onnxruntime sessions from ``MODEL_DIR/onnx/manifest.json``.

It needs only numpy, onnxruntime and tokenizers (with :mod:`llarapp.text.runtime`; no torch),
so a model server can use it on its own::

    session, manifest = load_ranker_session(model_dir)
    scores = session.run(["scores"], feeds)[0]          # feeds: manifest["ranker"]["inputs"]
    encoder = load_text_encoder(model_dir)
    vectors = encoder.encode(["Hey Jude by The Beatles"])  # (1, 384) float32, unit norm
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llarapp.cpu import usable_cpus
from llarapp.models.npz import load_npz, save_npz
from llarapp.text.runtime import OnnxTextEncoder, make_session

ONNX_DIR = "onnx"
MANIFEST_FILE = "manifest.json"
#: the catalogue's candidate vectors, beside the serving graph (``manifest["serving"]``)
CAND_VECTORS_FILE = "cand_vectors.npz"


def load_manifest(model_dir: Path | str) -> dict:
    """``MODEL_DIR/onnx/manifest.json`` as a dict."""
    path = Path(model_dir) / ONNX_DIR / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no export manifest (run `llarapp benchmark export`)")
    return json.loads(path.read_text())


def load_ranker_session(model_dir: Path | str, variant: str | None = None):
    """The chosen (or named) ranker variant as an onnxruntime session.

    Args:
        model_dir: A trained LLaRA++ folder with an ``onnx/`` export.
        variant: A key of ``manifest["variants"]``; default the chosen one.

    Returns:
        ``(session, manifest)``. Feed ``session.run(None, feeds)`` a dict with every name of
        ``manifest["ranker"]["inputs"]`` (float32 arrays of the listed shapes); the output is
        ``scores`` ``(batch, candidates)``.
    """
    manifest = load_manifest(model_dir)
    ranker = manifest["ranker"]
    file = ranker["file"]
    if variant is not None:
        if variant not in manifest["variants"] or not manifest["variants"][variant].get("file"):
            onnx_variants = [k for k, v in manifest["variants"].items() if v.get("file")]
            raise ValueError(f"variant={variant!r}: expected one of {onnx_variants}")
        file = manifest["variants"][variant]["file"]
    session = make_session(
        Path(model_dir) / ONNX_DIR / file,
        threads=session_threads(ranker),
        provider=ranker["provider"],
    )
    return session, manifest


def session_threads(entry: dict) -> int:
    """A manifest entry's (ranker, encoder) ``intra_op_num_threads``: the export's choice, at
    most the CPUs this process may use (:func:`llarapp.cpu.usable_cpus`; one in a forked
    ``--workers`` server, whose workers cannot inherit a thread pool)."""
    return min(int(entry["intra_op_num_threads"]), usable_cpus())


def load_serving_session(model_dir: Path | str):
    """The serving graph (``manifest["serving"]``: scores from the query side and precomputed
    ``cand_vectors``) as a session, or None for an export that predates it."""
    manifest = load_manifest(model_dir)
    serving, ranker = manifest.get("serving"), manifest["ranker"]
    if not serving:
        return None
    return make_session(
        Path(model_dir) / ONNX_DIR / serving["file"],
        threads=session_threads(ranker),
        provider=ranker["provider"],
    )


def save_cand_vectors(out: Path | str, vectors: np.ndarray) -> str:
    """Save the candidate vectors of every catalogue track (catalogue order) in the export
    folder ``out``; returns the file's name (``manifest["serving"]["cand_vectors_file"]``)."""
    save_npz(Path(out) / CAND_VECTORS_FILE, cand_vectors=np.asarray(vectors, np.float32))
    return CAND_VECTORS_FILE


def load_cand_vectors(model_dir: Path | str, rows: int) -> np.ndarray | None:
    """The export's candidate vectors, memory-mapped (server processes share the pages), if
    they cover a catalogue of ``rows`` tracks; None for an export without them or a catalogue
    that grew since (``llarapp catalog add``): then the server computes them."""
    name = (load_manifest(model_dir).get("serving") or {}).get("cand_vectors_file")
    if not name:
        return None
    vectors = load_npz(Path(model_dir) / ONNX_DIR / name)["cand_vectors"]
    return vectors if len(vectors) == rows else None


def load_text_encoder(model_dir: Path | str, **kwargs) -> OnnxTextEncoder:
    """The text encoder the manifest of ``model_dir`` chose (``manifest["encoder"]``).

    Args:
        model_dir: A trained LLaRA++ folder with an ``onnx/`` export.
        **kwargs: :class:`~llarapp.text.runtime.OnnxTextEncoder` arguments; ``threads`` and
            ``provider`` default to the manifest's.

    Raises:
        KeyError: the export has no encoder (``encoder=False``).
    """
    enc = load_manifest(model_dir)["encoder"]
    if enc is None:  # exported with encoder=False (a quick export)
        raise KeyError(f"{model_dir}: the ONNX export has no text encoder")
    root = Path(model_dir) / ONNX_DIR
    kwargs.setdefault("threads", session_threads(enc))
    kwargs.setdefault("provider", enc["provider"])
    return OnnxTextEncoder(root / enc["file"], root / enc["tokenizer"], enc["max_length"], **kwargs)
