"""Tests for llarapp.data.storage and S3 ingest, against a real S3 server (nanio).

The ``s3_server`` fixture starts ``nanio serve`` (a small S3-compatible server from PyPI) on
127.0.0.1 on a free port with its own temporary data folder, and stops it by PID at teardown.
Tests that need it are marked ``integration``; the URI and environment checks are plain unit
tests.
"""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from llarapp.data import schema, storage
from llarapp.data.ingest import NoSourceFilesError, ingest, iter_sources

ACCESS_KEY = "llarapp-test"
SECRET_KEY = "llarapp-test-secret-0123456789"
ALPHABET = string.digits + string.ascii_letters
S3_VARS = (
    "AWS_ENDPOINT_URL",
    "MLFLOW_S3_ENDPOINT_URL",
    "S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
)


def tid(i: int) -> str:
    digits = []
    for _ in range(22):
        i, r = divmod(i, 62)
        digits.append(ALPHABET[r])
    return "spotify:track:" + "".join(reversed(digits))


def write_slice(folder: Path, start: int, pids: list[int], *, corrupt: bool = False) -> Path:
    playlists: list[Any] = [
        {
            "name": f"Playlist {pid}",
            "pid": pid,
            "num_followers": 10,
            "tracks": [
                {"artist_name": "A", "track_uri": tid(pid + k), "track_name": f"T{pid + k}"}
                for k in (0, 1, 2, 1)  # one duplicate per playlist
            ],
        }
        for pid in pids
    ]
    if corrupt:
        playlists[0]["tracks"][0]["track_uri"] = "spotify:track:short"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mpd.slice.{start}-{start + 999}.json"
    path.write_text(
        json.dumps({"info": {"slice": f"{start}-{start + 999}"}, "playlists": playlists})
    )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Run nanio on a free local port; yield the S3 environment variables that reach it."""
    pytest.importorskip("nanio")
    root = tmp_path_factory.mktemp("nanio")
    data_dir = root / "data"
    data_dir.mkdir()
    log_path = root / "nanio.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANIO_")}
    env.update(NANIO_ACCESS_KEY=ACCESS_KEY, NANIO_SECRET_KEY=SECRET_KEY)
    cmd = [sys.executable, "-m", "nanio", "serve", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    s3_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    try:
        client = storage.s3_client(s3_env)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nanio exited with {proc.returncode}: {log_path.read_text()}")
            try:
                client.list_buckets()
                break
            except Exception as exc:  # not up yet: connection refused / reset
                if time.monotonic() > deadline:
                    pytest.fail(f"nanio did not answer in 30 s ({exc}): {log_path.read_text()}")
                time.sleep(0.1)
        yield s3_env
    finally:
        _stop(proc)


@pytest.fixture
def s3_env(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the process environment at the test server."""
    for name in S3_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    return s3_server


def _tables(out: Path) -> dict[str, Any]:
    return {
        name: pq.read_table(out / name)
        for name in (schema.PLAYLISTS_FILE, schema.TRACKS_FILE, schema.INTERACTIONS_FILE)
    }


# ----------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.json", ("bucket", "a/b.json")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/prefix/", ("my.bucket-1", "prefix/")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert storage.parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["bucket/key", "http://bucket/key", "s3://", "s3:///key", "s3://B/key", "s3://ab/k", ""]
)
def test_parse_s3_uri_rejects_malformed(uri: str) -> None:
    with pytest.raises(ValueError, match="S3 URI"):
        storage.parse_s3_uri(uri)


def test_s3_client_missing_env_names_variables() -> None:
    with pytest.raises(ValueError) as info:
        storage.s3_client({})
    message = str(info.value)
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        assert name in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message

    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY") as info:
        storage.s3_client({"S3_ENDPOINT_URL": "http://h:9000", "AWS_ACCESS_KEY_ID": "k"})
    assert "ENDPOINT" not in str(info.value)

    with pytest.raises(ValueError, match="not a URL"):
        storage.s3_client(
            {
                "AWS_ENDPOINT_URL": "minio:9000",
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
            }
        )


def test_s3_client_endpoint_precedence_and_scheme() -> None:
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    client = storage.s3_client(
        {**keys, "MLFLOW_S3_ENDPOINT_URL": "https://mlflow:9443", "S3_ENDPOINT_URL": "http://x:1"}
    )
    assert client._base_url.host == "mlflow:9443"
    assert client._base_url.is_https
    client = storage.s3_client({**keys, "S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert not client._base_url.is_https


def test_ingest_from_s3_without_env_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in S3_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL"):
        ingest("s3://some-bucket/mpd", tmp_path / "out")


# ----------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_s3_ingest_matches_local_ingest(tmp_path: Path, s3_env: dict[str, str]) -> None:
    src = tmp_path / "slices"
    write_slice(src, 0, [0, 1, 2])
    write_slice(src, 1000, [3, 4, 2], corrupt=True)  # pid 2 repeats, one bad URI
    write_slice(src, 10000, [5])
    (src / "mpd.slice.2000-2999.json").write_text('{"info": {}, "playlists": [{"name": "x", "p')
    uploaded = storage.upload_dir(src, "s3://llarapp-ingest/raw/mpd")
    assert len(uploaded) == 4
    # a sibling prefix that must not be picked up
    storage.upload_file(src / "mpd.slice.0-999.json", "s3://llarapp-ingest/raw/mpd2/")

    sources = iter_sources("s3://llarapp-ingest/raw/mpd")
    assert sources == [
        "s3://llarapp-ingest/raw/mpd/mpd.slice.0-999.json",
        "s3://llarapp-ingest/raw/mpd/mpd.slice.1000-1999.json",
        "s3://llarapp-ingest/raw/mpd/mpd.slice.2000-2999.json",
        "s3://llarapp-ingest/raw/mpd/mpd.slice.10000-10999.json",
    ]

    local = ingest(src, tmp_path / "local")
    remote = ingest("s3://llarapp-ingest/raw/mpd", tmp_path / "remote")
    for name, table in _tables(tmp_path / "local").items():
        assert table.equals(_tables(tmp_path / "remote")[name]), name
    skip = {"source", "out_dir", "seconds", "peak_rss_mb"}
    local_counts = {k: v for k, v in local.to_dict().items() if k not in skip}
    remote_counts = {k: v for k, v in remote.to_dict().items() if k not in skip}
    assert local_counts == remote_counts
    assert remote.playlists_ok == 6
    assert remote.reasons == {
        "duplicate_track": 6,
        "bad_track_uri": 1,
        "duplicate_pid": 1,
        "truncated_file": 1,
    }
    sources_in_quarantine = {
        json.loads(line)["source"]
        for line in (tmp_path / "remote" / schema.QUARANTINE_FILE).read_text().splitlines()
    }
    assert "s3://llarapp-ingest/raw/mpd/mpd.slice.2000-2999.json" in sources_in_quarantine

    single = ingest("s3://llarapp-ingest/raw/mpd/mpd.slice.10000-10999.json", tmp_path / "one")
    assert single.files_read == 1 and single.playlists_ok == 1


@pytest.mark.integration
def test_s3_empty_prefix_and_missing_bucket(tmp_path: Path, s3_env: dict[str, str]) -> None:
    storage.upload_file(write_slice(tmp_path / "s", 0, [1]), "s3://llarapp-empty/has/one.json")
    with pytest.raises(NoSourceFilesError, match="matches no files"):
        ingest("s3://llarapp-empty/nothing-here", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest("s3://llarapp-no-such-bucket/mpd", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.read_bytes("s3://llarapp-empty/has/missing.json")


@pytest.mark.integration
def test_upload_download_dir_round_trip(tmp_path: Path, s3_env: dict[str, str]) -> None:
    src = tmp_path / "model"
    (src / "nested" / "deeper").mkdir(parents=True)
    files = {
        "config.json": b'{"a": 1}',
        "weights.bin": bytes(range(256)) * 4000,
        "nested/notes.txt": "héllo".encode(),
        "nested/deeper/empty.dat": b"",
    }
    for rel, content in files.items():
        (src / rel).write_bytes(content)

    uris = storage.upload_dir(src, "s3://llarapp-dirs/runs/1/")
    assert sorted(uris) == sorted(f"s3://llarapp-dirs/runs/1/{rel}" for rel in files)
    assert storage.list_objects("s3://llarapp-dirs/runs/1", pattern="*.json") == [
        "s3://llarapp-dirs/runs/1/config.json"
    ]
    assert storage.read_bytes("s3://llarapp-dirs/runs/1/nested/notes.txt") == "héllo".encode()

    dest = tmp_path / "back"
    paths = storage.download_dir("s3://llarapp-dirs/runs/1", dest)
    assert len(paths) == len(files)
    for rel, content in files.items():
        assert (dest / rel).read_bytes() == content

    one = storage.download_file("s3://llarapp-dirs/runs/1/config.json", tmp_path / "x" / "c.json")
    assert one.read_bytes() == files["config.json"]
    storage.upload_file(one, "s3://llarapp-dirs/single/c2.json")
    assert storage.list_objects("s3://llarapp-dirs/single", pattern=None) == [
        "s3://llarapp-dirs/single/c2.json"
    ]


@pytest.mark.integration
def test_explicit_client_argument(tmp_path: Path, s3_server: dict[str, str]) -> None:
    client = storage.s3_client(s3_server)  # no process environment needed
    path = write_slice(tmp_path, 0, [9])
    uri = storage.upload_file(path, "s3://llarapp-client/x/", client=client)
    assert uri == "s3://llarapp-client/x/mpd.slice.0-999.json"
    assert storage.read_bytes(uri, client=client) == path.read_bytes()
