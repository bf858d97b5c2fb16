"""Thread pools sized to the CPUs this process may actually use.

In a pod, PyTorch, onnxruntime, OpenMP (``implicit``) and BLAS see the node's cores, not the
container's CPU limit: two threads per core of the node on a 2-CPU quota spin against the
throttle (measured: a ranker's training at 0.4 batches/s beside another PyTorch job, 3.75
alone). :func:`usable_cpus` is the smaller of the CPU affinity mask and the cgroup's CPU
quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the tightest of the
process's cgroup and its ancestors), rounded down, at least 1; ``LLARAPP_THREADS=N`` overrides
it. :func:`apply_thread_limits` sizes every pool from it, once, at process start (``llarapp``,
the model servers, each pipeline stage).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: the override: a positive integer
ENV = "LLARAPP_THREADS"
#: OpenMP (torch, implicit), OpenBLAS, MKL: read once, when each library loads
POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``["a/b", "a", ""]`` (relative to a hierarchy's mount point)."""
    parts = [p for p in path.strip().split("/") if p]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    """CPUs allowed by ``folder/cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``)."""
    file = folder / "cpu.max"
    if not file.is_file():
        return None
    fields = file.read_text().split()
    if len(fields) != 2:
        raise ValueError(f"{file}: {' '.join(fields)!r}, expected 'QUOTA PERIOD' or 'max PERIOD'")
    if fields[0] == "max":
        return None
    return _ratio(file, fields[0], fields[1])


def _v1_quota(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none)."""
    quota, period = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
    if not (quota.is_file() and period.is_file()):
        return None
    q = quota.read_text().strip()
    if q == "-1":
        return None
    return _ratio(quota, q, period.read_text().strip())


def _ratio(file: Path, quota: str, period: str) -> float:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        raise ValueError(f"{file}: quota {quota!r}, period {period!r}: expected integers") from None
    if q <= 0 or p <= 0:
        raise ValueError(f"{file}: quota {q}, period {p}: expected positive integers")
    return q / p


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the cgroup quota allows this process (e.g. 1.5), or None when unlimited.

    The tightest quota on the path from the process's cgroup up to the hierarchy's root (a
    parent's limit binds its children). v2 (``0::PATH``) is read from ``root/PATH/cpu.max``;
    v1 (a ``cpu`` controller line) from ``root/cpu/PATH`` or ``root/cpu,cpuacct/PATH``. Inside
    a container's cgroup namespace PATH is ``/``, so the files at the mount point are read.
    """
    if not proc_cgroup.is_file():
        return None
    limits: list[float] = []
    for line in proc_cgroup.read_text().splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2 unified hierarchy
            bases, read = [root], _v2_quota
        elif "cpu" in controllers.split(","):
            bases, read = [root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"], _v1_quota
        else:
            continue
        for base in bases:
            for rel in _ancestors(path):
                quota = read(base / rel)
                if quota is not None:
                    limits.append(quota)
    return min(limits) if limits else None


def usable_cpus(
    env: Mapping[str, str] | None = None,
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
) -> int:
    """The threads a pool should have: ``$LLARAPP_THREADS`` if set, else min(affinity mask,
    cgroup quota rounded down), at least 1."""
    env = os.environ if env is None else env
    override = env.get(ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"{ENV}={override!r}: expected a positive integer (threads)")
        return int(override)
    # macOS has no affinity masks
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def apply_thread_limits(threads: int | None = None) -> int:
    """Size every thread pool of this process to ``threads`` (default :func:`usable_cpus`).

    Sets ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` where not set
    already (libraries loaded later read them; a value the caller set on purpose, such as the
    model server's ``OMP_NUM_THREADS=1``, is kept), limits the BLAS / OpenMP pools of libraries
    already loaded (threadpoolctl), and torch's intra-op pool to ``OMP_NUM_THREADS`` if torch
    is loaded. onnxruntime sessions get their count where they are made
    (:func:`llarapp.text.runtime.session_options`).

    Returns:
        ``threads``.
    """
    threads = usable_cpus() if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads={threads}: expected >= 1")
    for var in POOL_VARS:
        os.environ.setdefault(var, str(threads))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(os.environ["OMP_NUM_THREADS"]), user_api="openmp")
    threadpool_limits(limits=threads, user_api="blas")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    log.debug("thread pools: %d threads (OMP_NUM_THREADS=%s)", threads, os.environ[POOL_VARS[0]])
    return threads
