"""Compile, run locally (``kfp.local``) and submit the pipelines. ``llarapp pipeline ...`` calls
these; they live here, beside the pipelines, because the library never imports ``kfp``.

The local run is the embedded default: the compiled YAML runs with
``kfp.local.SubprocessRunner(use_venv=False)`` (each stage a subprocess of this Python),
task outputs under ``WORK/kfp/<pipeline>-<timestamp>/<task>/``, the local cache under
``WORK/kfp/.kfp_cache`` (a rerun with the same inputs reuses finished stages), and
``$LLARAPP_PIPELINE_STATUS`` = ``WORK/status/<run>.jsonl`` (each stage's time, or why it failed).
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any

PIPELINES = {
    "training": "training_pipeline",
    "retraining": "retraining_pipeline",
    "continuous": "continuous_pipeline",
}


def package_path(name: str) -> Path:
    """The compiled YAML of pipeline ``name`` (a key of :data:`PIPELINES`)."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; expected one of {sorted(PIPELINES)}")
    return Path(__file__).resolve().with_name(f"{PIPELINES[name]}.yaml")


def compile_pipeline(name: str, out: Path | str | None = None) -> Path:
    """Compile pipeline ``name`` to ``out`` (default: the YAML beside its ``.py``)."""
    from kfp import compiler

    module = importlib.import_module(f"pipelines.{PIPELINES[name]}")
    out = Path(out) if out else package_path(name)
    compiler.Compiler().compile(getattr(module, PIPELINES[name]), str(out))
    return out


def run_local(
    name: str,
    arguments: dict[str, Any],
    work: Path | str,
    *,
    cache: bool = True,
) -> dict[str, Any]:
    """Run the compiled pipeline ``name`` on this machine.

    Returns:
        ``{"ok", "pipeline", "package", "run_dir", "status_file", "seconds", "outputs"
        ({name: local path or value}), "error" (kfp's message, on failure)}``. A failed stage
        does not raise: its earlier stages' outputs stay under ``run_dir`` and the status
        file says which stage failed and why.
    """
    from kfp import local
    from kfp.components import load_component_from_file

    from llarapp.pipeline.status import STATUS_VAR

    work = Path(work).resolve()
    root = work / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    package = package_path(name)
    if not package.is_file():
        raise FileNotFoundError(f"{package} not found: run `llarapp pipeline compile` first")
    status = work / "status" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    status.parent.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=cache,
    )
    pipeline = load_component_from_file(str(package))
    previous = os.environ.get(STATUS_VAR)
    os.environ[STATUS_VAR] = str(status)
    start = time.perf_counter()
    result: dict[str, Any] = {"ok": True, "error": "", "outputs": {}}
    try:
        task = pipeline(**arguments)
        result["outputs"] = {
            key: getattr(value, "path", value) for key, value in (task.outputs or {}).items()
        }
    except RuntimeError as exc:
        result.update(ok=False, error=str(exc))
    finally:
        if previous is None:
            os.environ.pop(STATUS_VAR, None)
        else:
            os.environ[STATUS_VAR] = previous
    new = sorted(p for p in root.iterdir() if p.name not in before and p.is_dir())
    result.update(
        pipeline=name,
        package=str(package),
        run_dir=str(new[-1]) if new else "",
        status_file=str(status),
        seconds=round(time.perf_counter() - start, 1),
    )
    return result


def submit(
    name: str,
    arguments: dict[str, Any],
    host: str,
    *,
    experiment: str = "llarapp",
    run_name: str | None = None,
    cache: bool = True,
) -> str:
    """Submit the compiled pipeline to Kubeflow Pipelines at ``host``; returns the run id."""
    import kfp

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        str(package_path(name)),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        enable_caching=cache,
    )
    return run.run_id
