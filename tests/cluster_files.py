"""What the cluster runs, read from the repository: the rendered kustomizations, the modules
their containers and the compiled components run, the Docker build context of the image."""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
#: every kustomization a person applies (docs/cluster.md); base is only ever applied through these
TARGETS = ("overlays/staging", "overlays/production", "overlays/canary", "platform")
FIRST_PARTY = ("llarapp", "llarapp_kserve", "components", "pipelines")


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    """The objects ``kubectl kustomize manifests/TARGET`` renders (raises on a kustomize error)."""
    proc = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize manifests/{target}: {proc.stderr}")
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def pod_specs(doc: dict) -> list[dict]:
    """The pod specs of a workload or an InferenceService predictor (empty for other kinds)."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "InferenceService":
        return [spec["predictor"]]
    return []


def manifest_modules() -> dict[str, str]:
    """``{module: where}`` of every ``python -m MODULE`` a rendered container runs."""
    found = {}
    for target in TARGETS:
        for doc in render(target):
            for pod in pod_specs(doc):
                for c in pod.get("initContainers", []) + pod["containers"]:
                    command = c.get("command") or []
                    if command[:2] == ["python", "-m"]:
                        found.setdefault(command[2], f"{target}: {doc['kind']}/{c['name']}")
    return found


def component_imports() -> dict[str, set[str]]:
    """``{module: names}`` the compiled components' code imports (first-party only).

    A compiled component runs ``python3 -m kfp.dsl.executor_main`` on its function's source,
    inlined in the pipeline YAML; the function imports the library inside its body.
    """
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        spec = next(d for d in yaml.safe_load_all(path.read_text()) if d)
        for name, executor in spec["deploymentSpec"]["executors"].items():
            container = executor["container"]
            assert "kfp.dsl.executor_main" in " ".join(container["command"]), f"{path}: {name}"
            program = container["command"][-1]
            source = program[program.index("\nfrom kfp import dsl") :]  # the inlined module
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and node.module:
                    if node.module.split(".")[0] in FIRST_PARTY:
                        found.setdefault(node.module, set()).update(a.name for a in node.names)
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.split(".")[0] in FIRST_PARTY:
                            found.setdefault(a.name, set())
    return found


# ---------------------------------------------------------------------------- docker context
def _dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(exception, regex) of each line, in order (Docker's syntax: ``*``, ``?``, ``**``, ``!``)."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exception, re.compile(regex)))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not exception
    return excluded


def build_context(dockerfile: Path, out: Path) -> list[str]:
    """Copy the files the build context of ``dockerfile`` admits (``DOCKERFILE.dockerignore``)
    to ``out``, links as links; returns their paths, relative."""
    rules = _dockerignore_rules(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    exceptions = [r for exc, r in rules if exc]
    admitted = []
    for folder, dirs, files in os.walk(ROOT):
        rel_dir = os.path.relpath(folder, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # a folder excluded with no exception pattern that could reach inside is not walked
        dirs[:] = [
            d for d in dirs
            if d != ".git" and (not _excluded(rel_dir + d, rules) or any(
                r.pattern.startswith(re.escape(rel_dir + d)) for r in exceptions))
        ]  # fmt: skip
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            rel = rel_dir + name
            if not _excluded(rel, rules):
                admitted.append(rel)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, out / rel, follow_symlinks=False)
    return sorted(admitted)


def apply_copies(dockerfile: Path, context: Path, workdir: Path) -> list[str]:
    """Run the Dockerfile's ``COPY SRC... DEST`` lines (DEST relative to its WORKDIR) from
    ``context`` into ``workdir``, as the build would; returns the sources."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        *srcs, dest = args
        for src in srcs:
            origin = context / src
            if not origin.exists() and not origin.is_symlink():
                raise AssertionError(f"{dockerfile.name}: COPY {src}: not in the build context")
            target = workdir / dest / (origin.name if dest.endswith("/") else "")
            if origin.is_dir():
                shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target, follow_symlinks=False)
            sources.append(src)
    return sources
