"""Small S3 / MinIO helpers built on the ``minio`` client.

Data contract:

- URIs are ``s3://bucket/key-or-prefix``; :func:`parse_s3_uri` splits them.
- The connection comes from the environment (:func:`s3_client`): the endpoint from
  ``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL`` or ``S3_ENDPOINT_URL`` (first one set; a URL
  such as ``http://127.0.0.1:9000`` whose scheme decides TLS), keys from ``AWS_ACCESS_KEY_ID``
  and ``AWS_SECRET_ACCESS_KEY``, and an optional ``AWS_REGION``.
- A prefix is treated like a folder: ``s3://b/data`` covers ``data`` itself and everything under
  ``data/``, never ``data2/...``.

Every function takes an optional ``client``; without one it builds one with :func:`s3_client`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

logger = logging.getLogger(__name__)

ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "S3_ENDPOINT_URL")
ACCESS_KEY_VAR = "AWS_ACCESS_KEY_ID"
SECRET_KEY_VAR = "AWS_SECRET_ACCESS_KEY"
REGION_VAR = "AWS_REGION"

#: an S3 request is tried 1 + RETRIES times (connection refused, timeouts, 5xx), then fails
RETRIES = 3
CONNECT_TIMEOUT_S = 5.0  # per connection attempt
READ_TIMEOUT_S = 120.0  # per read of an answer (large objects stream in many reads)

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split an ``s3://bucket/prefix`` URI.

    Args:
        uri: An S3 URI such as ``s3://data/mpd/raw`` or ``s3://data``.

    Returns:
        ``(bucket, prefix)``; the prefix has no leading slash and may be empty.

    Raises:
        ValueError: If ``uri`` is not a string starting with ``s3://`` followed by a valid
            bucket name (3-63 characters of lowercase letters, digits, dots and hyphens).
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r}; expected 's3://bucket[/prefix]'")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket; expected 's3://bucket[/prefix]'")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"S3 URI {uri!r} has an invalid bucket name {bucket!r}; expected 3-63 characters "
            "of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
        )
    return bucket, prefix.lstrip("/")


def s3_client(env: Mapping[str, str] | None = None) -> Minio:
    """Build a :class:`minio.Minio` client from environment variables.

    Args:
        env: Variables to read; defaults to ``os.environ``.

    Returns:
        A client for the configured endpoint.

    Raises:
        ValueError: If no endpoint or no keys are set, or the endpoint is not an
            ``http://`` / ``https://`` URL. The message names the variables expected.
    """
    env = os.environ if env is None else env
    endpoint = next((env[name] for name in ENDPOINT_VARS if env.get(name)), None)
    missing = []
    if not endpoint:
        missing.append(" or ".join(ENDPOINT_VARS))
    missing += [name for name in (ACCESS_KEY_VAR, SECRET_KEY_VAR) if not env.get(name)]
    if missing:
        raise ValueError(
            "S3 is not configured: set "
            + "; ".join(missing)
            + f" (endpoint as a URL such as http://127.0.0.1:9000; optional {REGION_VAR})"
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"S3 endpoint {endpoint!r} is not a URL; expected http://host:port or "
            f"https://host[:port] in {' / '.join(ENDPOINT_VARS)}"
        )
    if parts.path not in ("", "/"):
        raise ValueError(f"S3 endpoint {endpoint!r} must not have a path")
    return Minio(
        parts.netloc,
        access_key=env[ACCESS_KEY_VAR],
        secret_key=env[SECRET_KEY_VAR],
        secure=parts.scheme == "https",
        region=env.get(REGION_VAR) or None,
        http_client=_http_client(),
    )


def _http_client() -> urllib3.PoolManager:
    """minio's own pool (certifi, ``SSL_CERT_FILE``) with bounded waits: an endpoint that is
    down fails after :data:`RETRIES` retries (backoff 0.5, 1, 2 s) and at most
    :data:`CONNECT_TIMEOUT_S` per connection attempt, not minio's 5 minutes per attempt."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=RETRIES, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]
        ),
    )


def _is_missing(exc: S3Error) -> bool:
    return exc.code in _MISSING_CODES


def _under(key: str, prefix: str) -> bool:
    """Whether ``key`` is ``prefix`` itself or lies under it as a folder."""
    if not prefix:
        return True
    if prefix.endswith("/"):
        return key.startswith(prefix)
    return key == prefix or key.startswith(prefix + "/")


def list_objects(
    uri: str, pattern: str | None = "*.json", client: Minio | None = None
) -> list[str]:
    """List objects under an S3 prefix, recursively.

    Args:
        uri: ``s3://bucket/prefix``; the prefix is a folder or a single object key.
        pattern: ``fnmatch`` pattern on the object's base name; ``None`` lists everything.
        client: Optional client; built from the environment when omitted.

    Returns:
        Sorted ``s3://`` URIs of the matching objects (folder markers excluded).

    Raises:
        FileNotFoundError: If the bucket does not exist.
    """
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    if not client.bucket_exists(bucket):
        raise FileNotFoundError(f"S3 bucket {bucket!r} does not exist (from {uri})")
    out = []
    for obj in client.list_objects(bucket, prefix=prefix or None, recursive=True):
        key = obj.object_name
        if not key or key.endswith("/") or not _under(key, prefix):
            continue
        if pattern is not None and not fnmatch.fnmatchcase(PurePosixPath(key).name, pattern):
            continue
        out.append(f"s3://{bucket}/{key}")
    return sorted(out)


def read_bytes(uri: str, client: Minio | None = None) -> bytes:
    """Read one object fully into memory.

    Args:
        uri: ``s3://bucket/key``.
        client: Optional client; built from the environment when omitted.

    Returns:
        The object's content.

    Raises:
        FileNotFoundError: If the bucket or key does not exist.
    """
    bucket, key = parse_s3_uri(uri)
    client = client or s3_client()
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if _is_missing(exc):
            raise FileNotFoundError(f"S3 object {uri} does not exist ({exc.code})") from exc
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _ensure_bucket(client: Minio, bucket: str) -> None:
    if not client.bucket_exists(bucket):
        logger.info("creating S3 bucket %s", bucket)
        client.make_bucket(bucket)


def upload_file(path: Path | str, uri: str, client: Minio | None = None) -> str:
    """Upload one local file, creating the bucket if needed.

    Args:
        path: Local file.
        uri: Target ``s3://bucket/key``; a URI ending in ``/`` (or a bare bucket) is a folder
            and the file keeps its name inside it.
        client: Optional client; built from the environment when omitted.

    Returns:
        The URI of the uploaded object.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot upload {path}: not a file")
    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        key = key + path.name
    client = client or s3_client()
    _ensure_bucket(client, bucket)
    client.fput_object(bucket, key, str(path))
    logger.debug("uploaded %s to s3://%s/%s", path, bucket, key)
    return f"s3://{bucket}/{key}"


def download_file(uri: str, path: Path | str, client: Minio | None = None) -> Path:
    """Download one object to a local file (parent folders are created).

    Args:
        uri: ``s3://bucket/key``.
        path: Local destination file.
        client: Optional client; built from the environment when omitted.

    Returns:
        The local path.

    Raises:
        FileNotFoundError: If the bucket or key does not exist.
    """
    bucket, key = parse_s3_uri(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    client = client or s3_client()
    try:
        client.fget_object(bucket, key, str(path))
    except S3Error as exc:
        if _is_missing(exc):
            raise FileNotFoundError(f"S3 object {uri} does not exist ({exc.code})") from exc
        raise
    return path


def upload_dir(directory: Path | str, uri: str, client: Minio | None = None) -> list[str]:
    """Upload every file under a local folder, recursively, keeping relative paths.

    Args:
        directory: Local folder.
        uri: Target ``s3://bucket/prefix``; ``dir/a/b.txt`` goes to ``prefix/a/b.txt``.
        client: Optional client; built from the environment when omitted.

    Returns:
        Sorted URIs of the uploaded objects.

    Raises:
        NotADirectoryError: If ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"cannot upload {directory}: not a folder")
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    client = client or s3_client()
    _ensure_bucket(client, bucket)
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        key = f"{prefix}/{rel}" if prefix else rel
        client.fput_object(bucket, key, str(path))
        out.append(f"s3://{bucket}/{key}")
    logger.info("uploaded %d files from %s to s3://%s/%s", len(out), directory, bucket, prefix)
    return out


def download_dir(uri: str, directory: Path | str, client: Minio | None = None) -> list[Path]:
    """Download every object under an S3 prefix into a local folder, keeping relative paths.

    Args:
        uri: ``s3://bucket/prefix`` (a folder).
        directory: Local destination folder (created if needed).
        client: Optional client; built from the environment when omitted.

    Returns:
        Sorted local paths written.

    Raises:
        FileNotFoundError: If the bucket does not exist.
        ValueError: If an object key would land outside ``directory``.
    """
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    directory = Path(directory)
    client = client or s3_client()
    root = directory.resolve()
    out = []
    for obj_uri in list_objects(f"s3://{bucket}/{prefix}/" if prefix else uri, None, client):
        key = parse_s3_uri(obj_uri)[1]
        rel = key[len(prefix) + 1 :] if prefix else key
        target = (directory / rel).resolve()
        if root not in target.parents:
            raise ValueError(f"refusing to download {obj_uri}: it would land outside {directory}")
        out.append(download_file(obj_uri, target, client))
    logger.info("downloaded %d objects from %s to %s", len(out), uri, directory)
    return sorted(out)
