"""Where a served model comes from: a model URI -> a local LLaRA++ model folder.

Accepted URIs:

- a local folder (``runs/model``, ``file:///...``), including ``/mnt/models`` as the KServe
  storage initializer lays it out (the folder itself, or a ``model/`` folder inside it);
- ``s3://bucket/prefix`` — downloaded with :mod:`llarapp.data.storage` (MinIO env vars);
- ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` — an MLflow registered model, downloaded
  with MLflow (``MLFLOW_TRACKING_URI``); its artifacts hold the model folder at the artifact
  root or under ``model/``.

Downloads go to ``cache_dir`` (default ``$LLARAPP_CACHE/models`` or ``~/.cache/llarapp/models``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llarapp.models.base import MODEL_FILE

log = logging.getLogger(__name__)

_MLFLOW_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder on local disk and what it was resolved from."""

    path: Path  # holds model.json
    uri: str  # as given
    version: str  # registry version, or a content hash (content_version)


def default_cache_dir() -> Path:
    root = os.environ.get("LLARAPP_CACHE") or Path.home() / ".cache" / "llarapp"
    return Path(root) / "models"


def find_model_folder(root: Path, uri: str) -> Path:
    """``root`` or ``root/model`` — whichever holds ``model.json``."""
    for candidate in (root, root / "model"):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    found = sorted(p.name for p in root.iterdir())[:20] if root.is_dir() else "nothing"
    raise FileNotFoundError(
        f"{uri}: no {MODEL_FILE} in {root} or {root / 'model'} (found {found}); expected a "
        "LLaRA++ model folder as `llarapp train --out` writes it"
    )


#: what an unregistered folder's version hashes: its config and its learned weights (a few
#: MB), so two trainings with one config (a retrained challenger) get two versions
VERSIONED_FILES = (MODEL_FILE, "ranker/model.safetensors", "track_projector.safetensors")


def content_version(path: Path) -> str:
    """A short content hash of :data:`VERSIONED_FILES` (a version for unregistered folders)."""
    digest = hashlib.sha1()
    for name in VERSIONED_FILES:
        if (path / name).is_file():
            digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    return "sha1-" + digest.hexdigest()[:12]


def resolve_model_uri(uri: str, cache_dir: Path | str | None = None) -> ResolvedModel:
    """Resolve ``uri`` (see the module docstring) to a local model folder.

    Raises:
        FileNotFoundError: Nothing holding ``model.json`` at the URI.
        ValueError: A malformed ``models:/`` URI.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if uri.startswith("models:/"):
        return _resolve_mlflow(uri, cache)
    if uri.startswith("s3://"):
        from llarapp.data.storage import download_dir

        target = cache / ("s3-" + hashlib.sha1(uri.encode()).hexdigest()[:16])
        download_dir(uri, target)
        path = find_model_folder(target, uri)
        return ResolvedModel(path, uri, content_version(path))
    local = Path(uri.removeprefix("file://")).expanduser()
    if not local.exists():
        raise FileNotFoundError(f"model {uri}: no such folder")
    path = find_model_folder(local, uri)
    return ResolvedModel(path, uri, content_version(path))


def _resolve_mlflow(uri: str, cache: Path) -> ResolvedModel:
    match = _MLFLOW_RE.match(uri)
    if not match:
        raise ValueError(
            f"{uri!r}: expected an MLflow model URI 'models:/NAME@ALIAS' or 'models:/NAME/VERSION'"
        )
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    name = match["name"]
    if match["alias"]:
        mv = client.get_model_version_by_alias(name, match["alias"])
    else:
        mv = client.get_model_version(name, match["version"])
    # the version's source names it: another registry's "v1" is another model
    source = hashlib.sha1(f"{mv.run_id} {mv.source}".encode()).hexdigest()[:12]
    target = cache / f"mlflow-{name}-v{mv.version}-{source}"
    if not (target / ".complete").is_file():
        target.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s (version %s) to %s", uri, mv.version, target)
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(target)
        )
        (target / ".complete").write_text(uri)
    return ResolvedModel(find_model_folder(target, uri), uri, f"{name}/{mv.version}")
