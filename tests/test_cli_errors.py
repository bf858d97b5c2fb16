"""Every error a user can cause at the command line is one line saying what and how to fix it
(never a traceback), from a real ``llarapp`` process; and ``llarapp demo``'s closing lines."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llarapp.errors import one_line
from llarapp.serving.client import free_port, server_env
from llarapp.serving.request import parse_recommend

SRC = Path(__file__).resolve().parents[1] / "src"


def _llarapp(*args: str, cwd: Path | None = None, env: dict | None = None, module="llarapp"):
    """Run ``python -m MODULE ARGS``; returns (exit code, stderr's lines)."""
    env = server_env({**server_env(), **(env or {})})
    env["PYTHONPATH"] = f"{SRC}:{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stderr.strip().splitlines()


def _one_error_line(lines: list[str], prefix: str = "llarapp: error: ") -> str:
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert lines and lines[-1].startswith(prefix), "\n".join(lines)
    return lines[-1]


def test_bugs_keep_their_traceback_user_errors_are_one_line():
    assert one_line(KeyError("x")) is None
    assert one_line(FileNotFoundError("a\n  b")) == "a b"
    assert "check the path" in one_line(PermissionError(13, "Permission denied", "/x"))


def test_serve_without_a_model_says_how_to_get_one(tmp_path):
    code, lines = _llarapp("serve", cwd=tmp_path)
    assert code == 2 and "no model to serve" in _one_error_line(lines)


def test_serve_a_bad_path_is_one_line(tmp_path):
    code, lines = _llarapp("serve", "--model", str(tmp_path / "nope"))
    assert code == 2 and "nope: no such folder" in _one_error_line(lines)
    (tmp_path / "empty").mkdir()
    code, lines = _llarapp("serve", "--model", str(tmp_path / "empty"))
    assert code == 2 and "no model.json" in _one_error_line(lines)


@pytest.mark.slow
def test_serve_on_a_port_in_use_is_one_line(tiny):
    model_dir = tiny[2]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, lines = _llarapp("serve", "--model", str(model_dir), "--port", port)
        assert code == 2 and f"port {port} on 127.0.0.1 is in use" in _one_error_line(lines)
        # the server itself (as a container runs it) says the same, before loading the model
        code, lines = _llarapp("--model", str(model_dir), "--port", port, module="llarapp_kserve")
        assert code == 1 and "--port" in _one_error_line(lines, "llarapp serve: error: port")


@pytest.mark.slow
def test_serve_from_unreachable_s3_or_mlflow_is_one_line():
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    s3 = {"AWS_ENDPOINT_URL": nobody, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    code, lines = _llarapp("serve", "--model", "s3://models/llarapp", env=s3)
    line = _one_error_line(lines, "llarapp serve: error: ")
    assert code == 1 and f"cannot reach {nobody}" in line and "AWS_ENDPOINT_URL" in line
    mlflow = {"MLFLOW_TRACKING_URI": nobody, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    code, lines = _llarapp("serve", "--model", "models:/llarapp@champion", env=mlflow)
    line = _one_error_line(lines, "llarapp serve: error: ")
    assert code == 1 and f"MLflow at {nobody}" in line and "MLFLOW_TRACKING_URI" in line


def test_demo_ends_with_the_commands_to_query_it(tmp_path, monkeypatch):
    from llarapp.cli import next_steps
    from llarapp.pipeline.deploy import POINTER, write_pointer

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "runs" / "serving"
    assert "nothing deployed" in next_steps(target)
    undeployed = next_steps(target, trained="runs/demo/model").splitlines()
    assert "the gate said no" in undeployed[0]
    assert undeployed[1].split() == ["llarapp", "serve", "--model", "runs/demo/model"]
    write_pointer(target, POINTER, {"storage_uri": str(tmp_path / "exported")})
    lines = next_steps(target).splitlines()
    assert lines[1].split() == ["llarapp", "serve"]  # serves what the pointer names
    curl = shlex.split(lines[2])
    assert curl[:3] == ["curl", "-s", "http://127.0.0.1:8080/v1/recommend"]
    assert parse_recommend(json.loads(curl[curl.index("-d") + 1])).name
    assert lines[3].endswith("http://127.0.0.1:8080/")
