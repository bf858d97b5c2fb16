"""Start the local server as a subprocess, wait for it, and replay requests against it.

The library never imports kserve: the server runs as ``python -m llarapp_kserve`` (the package
under ``kserve/`` in this repository; installed with the project, or found next to ``src/``
in a source checkout).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REPO_KSERVE = Path(__file__).resolve().parents[3] / "kserve"


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """Raise :class:`llarapp.errors.PortError` when ``host:port`` cannot be listened on (the
    server's own bind, SO_REUSEADDR included, tried before the minutes of loading a model)."""
    import errno

    from llarapp.errors import PortError

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortError(
                    f"port {port} on {host} is in use (another `llarapp serve`?): stop it, or "
                    f"pass --port {free_port()}"
                ) from exc
            if exc.errno == errno.EACCES:
                raise PortError(f"port {port} needs root: pass --port 8080 or above") from exc
            raise PortError(
                f"cannot listen on {host}:{port} ({exc.strerror}): check --host"
            ) from exc


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``python -m llarapp_kserve``: PYTHONPATH gains ``kserve/`` when the
    package is not installed (a source checkout)."""
    env = dict(os.environ if env is None else env)
    if (_REPO_KSERVE / "llarapp_kserve").is_dir():  # a source checkout: these servers first
        parts = [str(_REPO_KSERVE), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    elif importlib.util.find_spec("llarapp_kserve") is None:
        raise RuntimeError(
            "the model servers (package llarapp_kserve) are neither installed nor at "
            f"{_REPO_KSERVE}; install the project (pip install -e .)"
        )
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def server_command(model: str, port: int, host: str = "127.0.0.1", *extra: str) -> list[str]:
    return [sys.executable, "-m", "llarapp_kserve", "--model", str(model), "--host", host,
            "--port", str(port), *extra]  # fmt: skip


def start_server(
    model: str,
    port: int | None = None,
    *extra: str,
    log_file: Path | str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start the local server; returns (process, base URL). Stop it with :func:`stop_server`."""
    port = port or free_port()
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        server_command(model, port, "127.0.0.1", *extra),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=server_env(env),
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 300.0) -> None:
    """Poll ``/v2/health/ready`` until 200; raise if the process dies or time runs out."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server at {url} not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (graceful: drains in-flight requests), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class LoadResult:
    latencies_ms: list[float]
    errors: int
    seconds: float

    def summary(self) -> dict[str, float]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        done = len(self.latencies_ms)
        return {
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "rps": round(done / self.seconds, 2) if self.seconds > 0 else 0.0,
            "errors": self.errors,
            "requests": done + self.errors,
        }


def replay(
    url: str, bodies: list[bytes], concurrency: int, path: str = "/v1/recommend"
) -> LoadResult:
    """Send every body once, ``concurrency`` at a time (one keep-alive connection per worker).

    Latency is the client-side time of one request, connection reuse included; errors are
    non-200 answers and failed connections.
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=bodies[i], headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
            ms = (time.perf_counter() - start) * 1000
            with lock:
                if ok:
                    latencies.append(ms)
                else:
                    errors[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(latencies, errors[0], time.perf_counter() - start)


def get(url: str, path: str, timeout: float = 60.0) -> tuple[int, str]:
    """GET ``path``; returns (status, body as text)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def post_json(url: str, path: str, body, timeout: float = 60.0) -> tuple[int, dict]:
    """POST ``body`` (bytes sent as is, else JSON-encoded); returns (status, decoded JSON)."""
    host, port = url.removeprefix("http://").split(":")
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return response.status, {"raw": raw.decode("utf-8", "replace")}
