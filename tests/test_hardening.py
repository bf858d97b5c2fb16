"""Hardening: the API and ingest fuzzed, damaged model files, a split killed mid-write, S3
down, a short soak (``llarapp benchmark hardening`` runs the same checks, longer)."""

from __future__ import annotations

import json
import shutil
import socket
import threading

import pytest

from llarapp.benchmark.hardening import (
    check_ingest,
    damaged_copy,
    fuzz_api,
    fuzz_ingest,
    killed_split,
    reload_damaged,
    request_bodies,
    soak,
)
from llarapp.data import storage
from llarapp.errors import one_line
from llarapp.serving.client import get, post_json, start_server, stop_server, wait_ready
from llarapp.serving.engine import ModelLoadError, ServingEngine, damaged_file


def test_ingest_fuzz_keeps_or_quarantines_every_record(tmp_path):
    result = fuzz_ingest(tmp_path, max_examples=40)
    assert result["ok"], result["problems"]
    assert result["examples"] == 40 and result["crashes"] == 0


def test_check_ingest_counts_what_a_file_holds(tmp_path):
    """The fuzz's oracle: a kept playlist, a quarantined one, a truncated file."""
    track = {"track_uri": "spotify:track:" + "a" * 22, "track_name": "t", "artist_name": "a"}
    doc = {"info": {}, "playlists": [{"name": "x", "pid": 1, "tracks": [track]}, {"pid": 2}]}
    raw = json.dumps(doc).encode()
    files = [("mpd.slice.0-999.json", raw), ("mpd.slice.1000-1999.json", raw[:40])]
    assert check_ingest(files, tmp_path / "w") == []
    report = json.loads((tmp_path / "w" / "out" / "ingest_report.json").read_text())
    assert (report["playlists_ok"], report["playlists_quarantined"]) == (1, 1)
    assert report["files_quarantined"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "file",
    ["arrays.npz", "track_projector.safetensors", "ranker/model.safetensors", "model.json"],
)
def test_a_damaged_model_file_is_refused_with_its_name(tiny, tmp_path, file):
    model_dir = tiny[2]
    for how in ("truncated", "header"):
        copy = damaged_copy(model_dir, tmp_path / how, file, how)
        with pytest.raises(ModelLoadError) as info:
            ServingEngine.load(str(copy))
        message = str(info.value)
        assert str(copy / file) in message and "corrupt or truncated" in message
        assert "\n" not in message and one_line(info.value) == message


def test_damaged_file_reads_onnx_and_passes_whole_files(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    save(helper.make_model(graph), tmp_path / "ranker.onnx")
    assert damaged_file(tmp_path) is None
    raw = (tmp_path / "ranker.onnx").read_bytes()
    (tmp_path / "ranker.onnx").write_bytes(raw[: len(raw) // 2])
    assert str(tmp_path / "ranker.onnx") in damaged_file(tmp_path)


@pytest.mark.slow
def test_a_split_killed_mid_write_leaves_inputs_intact_and_reruns(tiny, tmp_path):
    data_copy = shutil.copytree(tiny[0], tmp_path / "data")
    result = killed_split(data_copy, tmp_path)
    assert result["killed"] and result["inputs_intact"], result
    assert result["half_written"] == [] and "split.json" not in result["left_after_kill"]
    assert result["rerun_equals_reference"], result


def test_s3_down_fails_after_bounded_retries(monkeypatch):
    """An endpoint that accepts and hangs up at once: 1 + RETRIES tries, then one line."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    tries = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            tries.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    try:
        with pytest.raises(Exception) as info:
            storage.read_bytes("s3://models/llarapp/model.json", storage.s3_client(env))
    finally:
        server.close()
    assert len(tries) == storage.RETRIES + 1
    assert one_line(info.value).startswith(f"cannot reach http://127.0.0.1:{port}")


@pytest.mark.slow
@pytest.mark.integration
def test_the_server_survives_fuzzing_a_damaged_reload_and_a_short_soak(tiny, tmp_path):
    data_dir, split_dir, model_dir, _ = tiny
    model = shutil.copytree(model_dir, tmp_path / "model")
    proc, url = start_server(
        str(model), None, "--events", str(tmp_path / "events.db"),
        log_file=tmp_path / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        status, text = get(url, "/openapi.json")
        paths = json.loads(text)["paths"]
        assert status == 200
        assert "requestBody" in paths["/v1/recommend"]["post"]
        assert {"get", "post"} <= set(paths["/v1/canary"])
        assert not [p for p in paths if p.startswith("/v2/repository") or "/versions/" in p]
        status, answer = post_json(url, "/v2/repository/models/llarapp-ranker/unload", {})
        assert status == 404 and "not served" in answer["error"]
        assert get(url, "/v2/health/ready")[0] == 200  # nothing was unloaded
        fuzzed = fuzz_api(url, max_examples=3)
        assert fuzzed["ok"], fuzzed["server_errors"]
        assert fuzzed["operations"] >= 10
        bodies = request_bodies(data_dir, split_dir)
        reload = reload_damaged(url, model, tmp_path, bodies[0])
        assert reload["ok"], reload
        soaked = soak(url, proc, bodies, requests=200, concurrency=8)
        assert soaked["ok"] and soaked["errors"] == 0, soaked
        assert soaked["rss_mb"] and all(len(v) == 11 for v in soaked["rss_mb"].values())
    finally:
        assert stop_server(proc) == 0


def test_unserved_stock_routes_are_named_and_pruned():
    from llarapp_kserve.openapi import prune_unserved, unserved

    assert "repository" in unserved("/v2/repository/models/x/unload", b"")
    assert "versions" in unserved("/v2/models/x/ready", b"model_version=2")
    assert unserved("/v2/models/x/ready", b"") is None
    assert unserved("/v1/recommend", b"model_version=2") is None  # ours: no such parameter
    version = {"name": "model_version", "in": "query"}
    doc = {
        "paths": {
            "/v2/repository/models/{model_name}/load": {"post": {}},
            "/v2/models/{model_name}/versions/{model_version}/ready": {"get": {}},
            "/v2/models/{model_name}/ready": {"get": {"parameters": [version]}},
        }
    }
    assert prune_unserved(doc) == {
        "paths": {"/v2/models/{model_name}/ready": {"get": {"parameters": []}}}
    }
