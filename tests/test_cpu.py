"""llarapp.cpu: the threads a pool gets, from fake cgroup files (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llarapp.cpu import cgroup_cpu_limit, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path, cpu_max: str, path: str = "/", parent: str | None = None):
    root = tmp_path / "cgroup"
    folder = root / path.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.max").write_text(cpu_max + "\n")
    if parent is not None:
        (folder.parent / "cpu.max").write_text(parent + "\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def test_v2_quota(tmp_path):
    root, proc = _v2(tmp_path, "150000 100000")
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert usable_cpus({}, root, proc) == min(AFFINITY, 1)  # rounded down


def test_v2_unlimited_is_the_affinity_mask(tmp_path):
    root, proc = _v2(tmp_path, "max 100000")
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cpus({}, root, proc) == AFFINITY


def test_v2_a_parents_tighter_quota_binds(tmp_path):
    root, proc = _v2(tmp_path, "max 100000", path="/kubepods/pod1/c1", parent="100000 100000")
    assert cgroup_cpu_limit(root, proc) == 1.0


def test_v1_cfs_quota(tmp_path):
    folder = tmp_path / "cgroup" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_limit(tmp_path / "cgroup", proc) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "cgroup", proc) is None


def test_no_cgroup_files(tmp_path):
    assert cgroup_cpu_limit(tmp_path, tmp_path / "absent") is None
    assert usable_cpus({}, tmp_path, tmp_path / "absent") == AFFINITY


def test_malformed_cpu_max_names_the_file(tmp_path):
    root, proc = _v2(tmp_path, "lots")
    with pytest.raises(ValueError, match=r"cpu\.max: 'lots', expected 'QUOTA PERIOD'"):
        cgroup_cpu_limit(root, proc)
    root, proc = _v2(tmp_path, "abc 100000")
    with pytest.raises(ValueError, match="expected integers"):
        cgroup_cpu_limit(root, proc)


def test_override(tmp_path):
    root, proc = _v2(tmp_path, "100000 100000")
    assert usable_cpus({"LLARAPP_THREADS": "3"}, root, proc) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=r"LLARAPP_THREADS=.*expected a positive integer"):
            usable_cpus({"LLARAPP_THREADS": bad}, root, proc)


def test_pools_follow_the_limit():
    """Applied before torch loads (as ``llarapp`` does): torch, OpenMP and BLAS get it."""
    code = (
        "import os; from llarapp.cpu import apply_thread_limits; apply_thread_limits();"
        "import torch, numpy; from threadpoolctl import threadpool_info;"
        "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'],"
        " sorted({p['num_threads'] for p in threadpool_info()}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["LLARAPP_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split(None, 2) == ["1", "1", "[1]\n"]


def test_a_bad_override_is_one_line(tmp_path):
    env = {**os.environ, "LLARAPP_THREADS": "many"}
    out = subprocess.run(
        [sys.executable, "-m", "llarapp", "data", "synth", "--help"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0  # --help exits before the limits apply
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llarapp",
            "data",
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--playlists",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "llarapp: error: LLARAPP_THREADS='many': expected a positive integer (threads)"
    )
