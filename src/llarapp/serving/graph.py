"""Read the serving graph from the InferenceGraph manifest, so local and cluster cannot drift.

File in: a Kubernetes YAML file (one or more documents) holding one
``serving.kserve.io/v1alpha1`` ``InferenceGraph`` whose ``spec.nodes.root`` is a ``Sequence``
of steps, each a ``serviceName`` (an InferenceService, and the model name it serves), with
``dependency: Hard`` and ``data`` ``$request`` (first step) or ``$response`` (the previous
step's response). The local server walks the same list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class GraphStep:
    """One step of the root Sequence."""

    name: str  # step name
    service: str  # InferenceService name == model name
    data: str  # "$request" or "$response"
    dependency: str  # "Hard"


def load_graph_document(path: Path | str) -> dict:
    """The InferenceGraph document of ``path``."""
    path = Path(path)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    graphs = [d for d in docs if d.get("kind") == "InferenceGraph"]
    if len(graphs) != 1:
        raise ValueError(f"{path}: expected exactly one InferenceGraph, found {len(graphs)}")
    return graphs[0]


def read_sequence(path: Path | str) -> list[GraphStep]:
    """The steps of the graph's root ``Sequence``, in order, checked.

    Raises:
        ValueError: The root is not a Sequence, a step is not a Hard dependency on a service,
            or its data is not ``$request`` first / ``$response`` after.
    """
    graph = load_graph_document(path)
    root = (graph.get("spec") or {}).get("nodes", {}).get("root")
    if not root or root.get("routerType") != "Sequence":
        raise ValueError(f"{path}: spec.nodes.root must be a routerType Sequence")
    steps = []
    for i, s in enumerate(root.get("steps") or []):
        where = f"{path}: root step {i}"
        if not s.get("serviceName"):
            raise ValueError(f"{where}: expected a serviceName (an InferenceService)")
        if s.get("dependency") != "Hard":
            raise ValueError(f"{where}: dependency {s.get('dependency')!r}; expected 'Hard'")
        data = s.get("data", "$request")
        expected = "$request" if i == 0 else "$response"
        if data != expected:
            raise ValueError(f"{where}: data {data!r}; expected {expected!r}")
        steps.append(GraphStep(s.get("name", s["serviceName"]), s["serviceName"], data, "Hard"))
    if not steps:
        raise ValueError(f"{path}: the root Sequence has no steps")
    return steps
