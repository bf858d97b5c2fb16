"""The canary on a cluster: the InferenceGraph's root Splitter, moved with ``kubectl patch``.

``manifests/base/inference-graph.yaml`` routes every request through a root ``Splitter``
whose steps are two whole models: ``champion`` (encoder -> retriever -> ranker) and, while a
canary runs (``manifests/overlays/canary``), ``challenger`` (the ``*-challenger``
InferenceServices, loading the new model's folder). Their ``weight``\\ s are the traffic shares.

- :func:`split_patch` -- the JSON patch giving the challenger ``percent`` of the traffic;
- rollback: the challenger's share to 0 (the champion serves everything again);
- promote: the challenger's share to 100, then each champion InferenceService's
  ``STORAGE_URI`` to its challenger's (:func:`storage_patch`), wait until their predictor
  Deployments (RawDeployment, as the manifests set) have rolled out on the new model (KServe's
  storage initializer loading the new folder), then the share back to 0: the champion services
  now serve the promoted model and the challenger's can be deleted. Traffic never reaches a
  service that is not ready.

:func:`move_traffic` does this with ``kubectl``; ``llarapp rollout --kubectl-namespace NS``
passes it to :func:`llarapp.pipeline.rollout.act`. The patches carry JSON-patch ``test`` ops,
so a graph or service of another shape is refused, not half-patched.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from llarapp.serving.graph import CHALLENGER, CHAMPION, SUFFIX, sequence

GRAPH = "llarapp"  # the InferenceGraph
ROOT_STEPS = "/spec/nodes/root/steps"


def split_patch(percent: int) -> list[dict[str, Any]]:
    """JSON patch of the InferenceGraph: challenger ``percent``, champion ``100 - percent``.

    Raises:
        ValueError: ``percent`` is not an integer in 0..100 (the Splitter's weights are).
    """
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"split_patch: percent {percent!r}; expected an integer 0..100")
    return [
        {"op": "test", "path": f"{ROOT_STEPS}/0/nodeName", "value": CHAMPION},
        {"op": "test", "path": f"{ROOT_STEPS}/1/nodeName", "value": CHALLENGER},
        {"op": "replace", "path": f"{ROOT_STEPS}/0/weight", "value": 100 - percent},
        {"op": "replace", "path": f"{ROOT_STEPS}/1/weight", "value": percent},
    ]


def _storage_index(isvc: dict) -> int:
    env = isvc["spec"]["predictor"]["containers"][0].get("env") or []
    names = [e.get("name") for e in env]
    if "STORAGE_URI" not in names:
        raise ValueError(
            f"InferenceService {isvc['metadata']['name']}: no STORAGE_URI in its container's "
            f"env ({names}); expected the model folder it loads"
        )
    return names.index("STORAGE_URI")


def storage_uri(isvc: dict) -> str:
    """The model folder an InferenceService loads (its container's ``STORAGE_URI``)."""
    return isvc["spec"]["predictor"]["containers"][0]["env"][_storage_index(isvc)]["value"]


def storage_patch(isvc: dict, uri: str) -> list[dict[str, Any]]:
    """JSON patch pointing InferenceService ``isvc`` (its current object) at folder ``uri``."""
    path = f"/spec/predictor/containers/0/env/{_storage_index(isvc)}"
    return [
        {"op": "test", "path": f"{path}/name", "value": "STORAGE_URI"},
        {"op": "replace", "path": f"{path}/value", "value": uri},
    ]


class Kubectl:
    """``kubectl`` on one namespace (its current context, or ``context``)."""

    def __init__(self, namespace: str, kubectl: str = "kubectl", context: str | None = None):
        self.base = [kubectl, "-n", namespace] + (["--context", context] if context else [])

    def run(self, *args: str) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.base + list(args))}: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.run("get", kind, name, "-o", "json"))

    def patch(self, kind: str, name: str, ops: list[dict[str, Any]]) -> None:
        self.run("patch", kind, name, "--type", "json", "-p", json.dumps(ops))


def move_traffic(
    action: str, namespace: str, *, kubectl: Kubectl | None = None, timeout: str = "15m"
) -> dict[str, Any]:
    """Carry out ``promote`` or ``rollback`` (module docstring) on the cluster; returns what
    moved, for the audit record.

    Raises:
        ValueError: Another action.
        RuntimeError: kubectl failed (the graph or a service is missing, a patch's test failed,
            the promoted services did not become Ready within ``timeout``).
    """
    if action not in ("promote", "rollback"):
        raise ValueError(f"move_traffic: action {action!r}; expected 'promote' or 'rollback'")
    k = kubectl or Kubectl(namespace)
    if action == "rollback":
        k.patch("inferencegraph", GRAPH, split_patch(0))
        return {"namespace": namespace, "weights": {CHAMPION: 100, CHALLENGER: 0}}
    k.patch("inferencegraph", GRAPH, split_patch(100))
    services = [s.service for s in sequence(k.get("inferencegraph", GRAPH), CHAMPION, GRAPH)]
    storage = {}
    for name in services:
        storage[name] = storage_uri(k.get("inferenceservice", name + SUFFIX))
        k.patch("inferenceservice", name, storage_patch(k.get("inferenceservice", name),
                                                        storage[name]))  # fmt: skip
    for name in services:  # RawDeployment: the predictor Deployment rolls to the new folder
        deployment = f"deployment/{name}-predictor"
        initializer = '.spec.template.spec.initContainers[?(@.name=="storage-initializer")]'
        k.run("wait", deployment, f"--timeout={timeout}",
              f"--for=jsonpath={{{initializer}.args[0]}}={storage[name]}")  # fmt: skip
        k.run("rollout", "status", deployment, f"--timeout={timeout}")
    k.patch("inferencegraph", GRAPH, split_patch(0))
    return {"namespace": namespace, "weights": {CHAMPION: 100, CHALLENGER: 0},
            "storage_uri": storage}  # fmt: skip
