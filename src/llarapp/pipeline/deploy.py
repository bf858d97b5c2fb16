"""The "deployed model" pointer: what the deploy stage writes and the model server reads.

``TARGET/current.json`` (the champion being served; written only when the registered version
became champion) or ``TARGET/challenger.json`` (a passing version waiting behind a live canary)::

    {
      "model_name": "llarapp",          # registered model
      "version": "3",                   # registered version
      "alias": "champion",              # or "challenger"
      "model_uri": "models:/llarapp/3", # MLflow URI (the server may load from it)
      "storage_uri": "...",             # MODEL_DIR (+ onnx/) to load: a local folder, or
                                        # s3://.../models/v3 when TARGET is on S3
      "onnx_manifest": "onnx/manifest.json",  # relative to storage_uri
      "mlflow_run_id": "...", "tracking_uri": "...",
      "metric": "ndcg", "score": 0.41,  # the gate's figures
      "deployed_at": "2026-01-01T12:00:00+00:00"
    }

``TARGET`` is a local folder (default ``runs/serving``; ``llarapp serve`` reads
``runs/serving/current.json``) or ``s3://bucket/prefix`` (the model folder is uploaded to
``prefix/models/v<version>/`` and the pointer to ``prefix/current.json``: a KServe
``storageUri``). Files are replaced atomically (write + rename), so a reader never sees half a
pointer.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

POINTER = "current.json"
CHALLENGER_POINTER = "challenger.json"


def pointer(
    model_dir: Path | str,
    registration: dict,
    gate: dict | None = None,
    artifact_uri: str = "",
) -> dict:
    """The pointer for a registered, exported MODEL_DIR.

    ``storage_uri`` is ``artifact_uri`` when it is remote (``s3://``, ``minio://``: the KFP
    artifact store on a cluster), else the local folder.
    """
    model_dir = Path(model_dir).resolve()
    storage_uri = artifact_uri if "://" in artifact_uri else str(model_dir)
    gate = gate or {}
    return {
        "model_name": registration["model_name"],
        "version": str(registration["version"]),
        "alias": "champion" if registration.get("promoted") else "challenger",
        "model_uri": registration.get("model_uri", ""),
        "storage_uri": storage_uri,
        "onnx_manifest": "onnx/manifest.json",
        "mlflow_run_id": registration.get("run_id", ""),
        "tracking_uri": registration.get("tracking_uri", ""),
        "metric": gate.get("metric"),
        "score": gate.get("candidate"),
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def deploy(
    model_dir: Path | str,
    registration: dict,
    target: str,
    gate: dict | None = None,
    artifact_uri: str = "",
) -> dict:
    """Point the model server at a registered model.

    Args:
        model_dir: The exported MODEL_DIR that was registered.
        registration: What :func:`llarapp.pipeline.registry.register_model` returned.
        target: A local folder, ``s3://bucket/prefix``, or ``""`` (only return the pointer).
        gate: The gate decision, for the figures in the pointer.
        artifact_uri: The KFP artifact URI of ``model_dir`` (used as ``storage_uri`` when
            remote).

    Returns:
        The pointer as written, plus ``"written_to"`` (a path or URI, or ``""``).
    """
    data = pointer(model_dir, registration, gate, artifact_uri)
    name = POINTER if data["alias"] == "champion" else CHALLENGER_POINTER
    if not target:
        return {**data, "written_to": ""}
    if target.startswith("s3://"):
        from llarapp.data import storage

        data["storage_uri"] = f"{target.rstrip('/')}/models/v{data['version']}"
        storage.upload_dir(model_dir, data["storage_uri"])
    written = write_pointer(target, name, data)
    log.info("deployed %s v%s as %s -> %s", data["model_name"], data["version"], name, written)
    return {**data, "written_to": written}


def write_pointer(target: str | Path, name: str, data: dict) -> str:
    """Replace the pointer ``name`` under ``target`` (local folder or ``s3://``) atomically;
    returns where it went."""
    target = str(target)
    if target.startswith("s3://"):
        from llarapp.data import storage

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            _write_atomic(local, data)
            return storage.upload_file(local, f"{target.rstrip('/')}/{name}")
    path = Path(target) / name
    _write_atomic(path, data)
    return str(path.resolve())


def read_pointer(target: str | Path, name: str = POINTER) -> dict | None:
    """The pointer under ``target`` (local folder or ``s3://``), or None when there is none."""
    target = str(target)
    if target.startswith("s3://"):
        from llarapp.data import storage

        try:
            return json.loads(storage.read_bytes(f"{target.rstrip('/')}/{name}"))
        except FileNotFoundError:
            return None
    path = Path(target) / name
    return json.loads(path.read_text()) if path.is_file() else None
