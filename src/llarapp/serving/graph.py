"""Read the serving graph from the InferenceGraph manifest, so local and cluster cannot drift.

File in: a Kubernetes YAML file (one or more documents) holding one
``serving.kserve.io/v1alpha1`` ``InferenceGraph``. Its ``spec.nodes.root`` is either

- a ``Sequence`` of steps, each a ``serviceName`` (an InferenceService, and the model name it
  serves), with ``dependency: Hard`` and ``data`` ``$request`` (first step) or ``$response``
  (the previous step's response); or
- a ``Splitter`` (the canary: ``manifests/base/inference-graph.yaml``) whose steps name the
  node ``champion`` (and, during a canary, ``challenger``) with ``weight``\\ s summing to 100;
  each such node is a Sequence as above, and the challenger's services are the champion's with
  ``-challenger`` appended (a whole model -- encoder, retriever, ranker -- against another:
  their catalogue indices only make sense within one model).

The local server walks the champion's Sequence, and the challenger's (its own
:class:`~llarapp.serving.canary.CanarySplit`, sticky per playlist) when given ``--challenger``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CHAMPION, CHALLENGER = "champion", "challenger"  # the Splitter's nodes
SUFFIX = "-challenger"  # a challenger service is its champion's name + this


@dataclass(frozen=True)
class GraphStep:
    """One step of a Sequence."""

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


def _steps(where: str, nodes: dict, name: str) -> list[GraphStep]:
    """The checked steps of Sequence node ``name``."""
    node = nodes.get(name)
    if not node or node.get("routerType") != "Sequence":
        raise ValueError(f"{where}: spec.nodes.{name} must be a routerType Sequence")
    steps = []
    for i, s in enumerate(node.get("steps") or []):
        at = f"{where}: {name} step {i}"
        if not s.get("serviceName"):
            raise ValueError(f"{at}: expected a serviceName (an InferenceService)")
        if s.get("dependency") != "Hard":
            raise ValueError(f"{at}: dependency {s.get('dependency')!r}; expected 'Hard'")
        data = s.get("data", "$request")
        expected = "$request" if i == 0 else "$response"
        if data != expected:
            raise ValueError(f"{at}: data {data!r}; expected {expected!r}")
        steps.append(GraphStep(s.get("name", s["serviceName"]), s["serviceName"], data, "Hard"))
    if not steps:
        raise ValueError(f"{where}: the Sequence {name} has no steps")
    return steps


def split_weights(graph: dict, where: str = "InferenceGraph") -> dict[str, int]:
    """The root Splitter's weights by node (``{"champion": 100}``, or with ``"challenger"``);
    a root Sequence is the champion alone.

    Raises:
        ValueError: The root is neither a Sequence nor a Splitter over ``champion`` (first)
            and optionally ``challenger``, with integer weights summing to 100.
    """
    root = (graph.get("spec") or {}).get("nodes", {}).get("root") or {}
    if root.get("routerType") == "Sequence":
        return {CHAMPION: 100}
    if root.get("routerType") != "Splitter":
        raise ValueError(f"{where}: spec.nodes.root must be a routerType Sequence or Splitter")
    steps = root.get("steps") or []
    names = [s.get("nodeName") for s in steps]
    if names not in ([CHAMPION], [CHAMPION, CHALLENGER]):
        raise ValueError(
            f"{where}: root Splitter steps name nodes {names}; expected "
            f"[{CHAMPION!r}] or [{CHAMPION!r}, {CHALLENGER!r}]"
        )
    weights = {s["nodeName"]: s.get("weight") for s in steps}
    valid = all(isinstance(w, int) and 0 <= w <= 100 for w in weights.values())
    if not valid or sum(weights.values()) != 100:
        raise ValueError(f"{where}: root Splitter weights {weights}; expected 0..100, sum 100")
    return weights


def sequence(graph: dict, node: str = CHAMPION, where: str = "InferenceGraph") -> list[GraphStep]:
    """The steps of the champion's (or the challenger's) Sequence of ``graph``, checked.

    Raises:
        ValueError: The root is not a Sequence or a Splitter over Sequences
            (:func:`split_weights`), a step is not a Hard dependency on a service, its data is
            not ``$request`` first / ``$response`` after, or the challenger's services are not
            the champion's + ``-challenger``.
    """
    nodes = (graph.get("spec") or {}).get("nodes", {})
    split = split_weights(graph, where)
    if node not in split:
        raise ValueError(f"{where}: the root Splitter has no {node!r} node; it has {list(split)}")
    if nodes["root"]["routerType"] == "Sequence":
        return _steps(where, nodes, "root")
    steps = _steps(where, nodes, node)
    if node == CHALLENGER:
        champion = [s.service + SUFFIX for s in _steps(where, nodes, CHAMPION)]
        if [s.service for s in steps] != champion:
            raise ValueError(
                f"{where}: challenger services {[s.service for s in steps]}; expected {champion}"
            )
    return steps


def read_sequence(path: Path | str, node: str = CHAMPION) -> list[GraphStep]:
    """:func:`sequence` of the InferenceGraph in file ``path``."""
    return sequence(load_graph_document(path), node, str(path))
