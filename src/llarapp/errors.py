"""Errors a user can cause, as one line saying what went wrong and how to fix it.

``llarapp`` (:mod:`llarapp.cli`) and the local server (``python -m llarapp_kserve``, which
``llarapp serve`` becomes) print :func:`one_line` of such an error instead of a traceback: a
missing model or a bad path (``FileNotFoundError``, ``ValueError``), a port in use
(:class:`PortError`), an S3 endpoint or MLflow server that does not answer or refuses. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

#: the environment variables that say where S3 / MLflow are
_S3_VARS = "AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
_MAX_CHARS = 400


class PortError(OSError):
    """The port a server should listen on is taken (or not ours to take)."""


def _flat(text: str) -> str:
    """``text`` on one line, at most :data:`_MAX_CHARS` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 1] + "…"


def _origin(exc: BaseException) -> str:
    return type(exc).__module__.split(".")[0]


def one_line(exc: BaseException) -> str | None:
    """What went wrong and how to fix it, on one line; None for an error no user causes."""
    origin = _origin(exc)
    if origin == "mlflow":
        where = os.environ.get("MLFLOW_TRACKING_URI") or "the default ./mlruns"
        first = _flat(str(exc).split("\n", 1)[0])
        return (
            f"MLflow at {where}: {first} — check that MLFLOW_TRACKING_URI names a running "
            "tracking server and the model name / alias exists"
        )
    if origin == "minio":  # S3Error: the endpoint answered and refused
        code, resource = getattr(exc, "code", "?"), getattr(exc, "resource", None) or ""
        return (
            f"S3 refused {resource or 'the request'}: {code} {_flat(getattr(exc, 'message', ''))}"
            f" — check the s3:// URI and the keys in {_S3_VARS}"
        )
    if origin == "urllib3" or isinstance(exc, ConnectionError):
        pool = getattr(exc, "pool", None)  # urllib3's MaxRetryError: the host it tried
        where = f"{pool.scheme}://{pool.host}:{pool.port}" if pool is not None else "the server"
        return (
            f"cannot reach {where} ({type(exc).__name__}) — is it running, and do {_S3_VARS} "
            "or MLFLOW_TRACKING_URI point at it?"
        )
    if isinstance(exc, PortError | FileNotFoundError | ValueError | RuntimeError):
        return _flat(str(exc))
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError):
        return _flat(f"{exc} — check the path")
    return None
