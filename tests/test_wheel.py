"""The image holds everything that runs in it.

The wheel is built from exactly what the image's build gets: the files its build context
admits (``Dockerfile.component.dockerignore``), then its ``COPY`` lines. Every module a
rendered manifest runs (``python -m ...``) and every first-party module a compiled component
imports must be in it and start from it -- installed outside the source tree, from a temporary
working directory -- and ``llarapp serve``'s graph must be its package data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from cluster_files import (
    FIRST_PARTY,
    MANIFESTS,
    ROOT,
    apply_copies,
    build_context,
    component_imports,
    manifest_modules,
)

from llarapp.serving.client import free_port, post_json, stop_server, wait_ready

DOCKERFILE = ROOT / "Dockerfile.component"
GRAPH = "llarapp_kserve/inference-graph.yaml"

pytestmark = pytest.mark.skipif(
    subprocess.run(["kubectl", "version", "--client"], capture_output=True).returncode != 0,
    reason="kubectl (kustomize) not installed",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel's file names, a folder the wheel is installed in, an environment using it)."""
    tmp = tmp_path_factory.mktemp("image")
    context, workdir = tmp / "context", tmp / "opt-llarapp"
    context.mkdir()
    workdir.mkdir()
    build_context(DOCKERFILE, context)
    apply_copies(DOCKERFILE, context, workdir)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(workdir),
         "-w", str(tmp / "dist")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next((tmp / "dist").glob("llarapp-*.whl"))
    site = tmp / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
    )
    # the installed wheel, then this environment's dependencies; no source checkout on the path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    names = zipfile.ZipFile(wheel).namelist()
    return names, site, env


def _in_wheel(module: str, names: list[str]) -> bool:
    path = module.replace(".", "/")
    return bool({f"{path}.py", f"{path}/__init__.py"} & set(names))


def test_every_module_the_cluster_runs_is_in_the_wheel(installed):
    names, _, _ = installed
    runs = manifest_modules()
    imports = component_imports()
    assert "llarapp_kserve.ranker" in runs and "pipelines.publish" in runs  # the reader works
    assert any(m.startswith("llarapp.pipeline") for m in imports)
    missing = [
        f"{module} (run by {where})"
        for module, where in runs.items()
        if module.split(".")[0] in FIRST_PARTY
        and not _in_wheel(module + ".__main__", names)
        and not _in_wheel(module, names)
    ] + [f"{m} (imported by a compiled component)" for m in imports if not _in_wheel(m, names)]
    assert not missing, (
        f"not in the wheel built from the image's build context: {missing}; "
        f"{len(names)} files in it"
    )


def test_graph_is_package_data_and_the_deployed_file(installed):
    names, site, _ = installed
    assert GRAPH in names
    deployed = MANIFESTS / "base" / "inference-graph.yaml"
    assert (site / GRAPH).read_bytes() == deployed.read_bytes()


def test_every_module_starts_from_the_installed_wheel(installed, tmp_path):
    """``python -m MODULE --help`` of each manifest's module, and every name each compiled
    component imports, from a working directory outside the source tree."""
    _, site, env = installed
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for module in manifest_modules()
    }
    lines = [
        "import importlib, sys",
        f"assert all(m.__file__.startswith({str(site)!r}) for m in map(importlib.import_module, "
        f"{list(FIRST_PARTY)!r})), 'not the installed wheel'",
    ]
    for module, names in sorted(component_imports().items()):
        lines.append(f"m = importlib.import_module({module!r})")
        lines += [f"getattr(m, {n!r})" for n in sorted(names)]
    check = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)], cwd=tmp_path, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    for module, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage" in out.lower(), f"{module} --help:\n{out[-3000:]}"


@pytest.mark.slow
@pytest.mark.integration
def test_llarapp_serve_from_the_installed_wheel(installed, tiny, tmp_path):
    """The local server, installed, finds its graph (package data) and answers."""
    _, _, env = installed
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llarapp_kserve", "--model", str(tiny[2]), "--port", str(port),
         "--events", str(tmp_path / "events.db")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        status, out = post_json(url, "/v1/recommend", {"name": "summer", "k": 5})
        assert status == 200 and len(out["recommended_tracks"]) == 5, out
    finally:
        stop_server(proc)
        log.close()
    assert '"steps": ["encoder", "retriever", "ranker"]' in (tmp_path / "server.log").read_text()
