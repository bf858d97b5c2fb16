"""The cluster manifests, offline: every overlay and the platform render (kustomize), validate
(Kubernetes schemas; KServe objects against the kserve 0.21 SDK models, and against the KServe
CRDs when vendored), follow the security rules, pass the policy scan (checkov), and every
command of docs/cluster.md renders, applies (``kubectl patch --local``) or parses.

Validated only structurally, and why: PodMonitor and ServiceMonitor (the Prometheus Operator's
CRDs are not vendored here; their fields are checked by :func:`test_monitors_structure`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from cluster_files import MANIFESTS, ROOT, TARGETS, pod_specs, render

from components.image import IMAGE
from llarapp.cli import CANARY_PERCENT
from llarapp.pipeline.cluster import split_patch, storage_patch, storage_uri
from llarapp.serving.graph import read_sequence, sequence, split_weights

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

K8S_VERSION = "1.32.0"  # the Kubernetes minor the manifests are validated against
CRDS = MANIFESTS / "crds"  # KServe v0.21.0 CRDs, vendored (config/crd/full of kserve/kserve)
KSERVE_KINDS = {"InferenceService", "InferenceGraph"}
MONITOR_KINDS = {"PodMonitor", "ServiceMonitor"}
#: checkov checks skipped everywhere, one reason each (per-object skips are annotations on the
#: object, ``checkov.io/skipN``, with their reason; the Dockerfile's is a comment in it)
CHECKOV_SKIPS = {
    "CKV_K8S_43": "images are pinned by release tag (never latest); a digest is set at release "
    "time with the overlay's images: digest field, not in git",
}
CHECKOV = Path(".venv-policy/bin/checkov")


def _all() -> list[tuple[str, dict]]:
    return [(t, d) for t in TARGETS for d in render(t)]


def _where(target: str, doc: dict) -> str:
    return f"{target}: {doc['kind']}/{doc['metadata']['name']}"


# ---------------------------------------------------------------------------- render, validate
@pytest.mark.parametrize("target", TARGETS)
def test_target_renders_into_namespaced_objects(target):
    docs = render(target)
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert len(namespaces) == 1, f"{target}: expected one Namespace, got {namespaces}"
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, _where(target, d)


def test_builtin_objects_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    counts: dict[str, int] = {}
    for target, doc in _all():
        if doc["kind"] in KSERVE_KINDS | MONITOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{_where(target, doc)}: {exc.message} at {exc.path}") from exc
        counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
    # a kind no schema covers would pass unseen: every kind is a built-in one or named above
    assert set(counts) >= {"Deployment", "Job", "NetworkPolicy", "Service", "ServiceAccount"}


def _crd_schemas() -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): openAPIV3Schema}`` of the vendored CRDs."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return schemas


def _unknown_fields(data, schema: dict, path: str) -> list[str]:
    """Fields the API server would prune (not in ``properties``, no unknown fields allowed)."""
    if isinstance(data, list) and "items" in schema:
        item = schema["items"]
        return [u for i, x in enumerate(data) for u in _unknown_fields(x, item, f"{path}[{i}]")]
    if not isinstance(data, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    out = []
    for key, value in data.items():
        if props is not None and key in props:
            out += _unknown_fields(value, props[key], f"{path}.{key}")
        elif isinstance(extra, dict):
            out += _unknown_fields(value, extra, f"{path}.{key}")
        elif props is not None:
            out.append(f"{path}.{key}")
    return out


def test_unknown_fields_are_what_the_api_server_would_prune():
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"b": {}}}},
    }}  # fmt: skip
    doc = {"spec": {"a": 1, "typo": 2}, "free": {"x": 1}, "map": {"k": {"y": 1}},
           "list": [{"b": 1}, {"c": 1}]}  # fmt: skip
    assert _unknown_fields(doc, schema, "") == [".spec.typo", ".map.k.y", ".list[1].c"]


def test_kserve_objects_validate_against_the_kserve_crds():
    import jsonschema

    schemas = _crd_schemas()
    if not {k for _, k in schemas} >= KSERVE_KINDS:
        pytest.skip(
            f"{CRDS.relative_to(ROOT)} holds no KServe v0.21.0 CRDs: vendor "
            "config/crd/full/serving.kserve.io_inferenceservices.yaml and "
            "serving.kserve.io_inferencegraphs.yaml of kserve/kserve at tag v0.21.0 there "
            "(the SDK-model check below validates them meanwhile)"
        )
    for target, doc in _all():
        if doc["kind"] not in KSERVE_KINDS:
            continue
        schema = schemas[(doc["apiVersion"], doc["kind"])]
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
        errors += [f"unknown field {u}" for u in _unknown_fields(doc, schema, "")]
        assert not errors, f"{_where(target, doc)}: {errors}"


def _check(data, klass, path: str) -> None:
    """Every key of ``data`` is a field of the SDK model ``klass`` (recursively), typed right."""
    import kserve.models as ks
    import kubernetes.client.models as k8s

    if isinstance(klass, str):
        if klass.startswith("list["):
            assert isinstance(data, list), f"{path}: expected a list"
            for i, item in enumerate(data):
                _check(item, klass[5:-1], f"{path}[{i}]")
            return
        if klass.startswith("dict("):
            assert isinstance(data, dict), f"{path}: expected a mapping"
            for key, value in data.items():
                _check(value, klass[5:-1].split(", ", 1)[1], f"{path}.{key}")
            return
        natives = {"str": str, "int": int, "bool": bool, "float": (int, float)}
        if klass in natives:
            assert isinstance(data, natives[klass]), f"{path}: expected {klass}, got {data!r}"
            return
        if klass == "object":
            return
        klass = getattr(ks, klass, None) or getattr(k8s, klass)
    if not klass.openapi_types:  # e.g. resource.Quantity
        return
    assert isinstance(data, dict), f"{path}: expected a mapping for {klass.__name__}"
    fields = {v: k for k, v in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{path}: {unknown} are not fields of {klass.__name__}"
    for key, value in data.items():
        _check(value, klass.openapi_types[fields[key]], f"{path}.{key}")


def test_kserve_objects_validate_against_the_kserve_sdk_models():
    """The kserve==0.21.0 SDK's models (generated from KServe's OpenAPI): field names and types."""
    from kserve import V1alpha1InferenceGraph, V1beta1InferenceService

    klass = {"InferenceService": V1beta1InferenceService, "InferenceGraph": V1alpha1InferenceGraph}
    seen = 0
    for target, doc in _all():
        if doc["kind"] in klass:
            _check(doc, klass[doc["kind"]], _where(target, doc))
            seen += 1
    assert seen == 4 + 4 + 7  # staging, production: 3 steps + graph; canary: + 3 challengers


def test_monitors_structure():
    docs = [d for t in TARGETS for d in render(t) if d["kind"] in MONITOR_KINDS]
    assert {d["kind"] for d in docs} == MONITOR_KINDS
    for d in docs:
        assert d["apiVersion"] == "monitoring.coreos.com/v1"
        spec = d["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "podMetricsEndpoints", "endpoints"}
        endpoints = spec.get("podMetricsEndpoints") or spec.get("endpoints")
        assert endpoints and all(set(e) <= {"port", "path", "interval"} for e in endpoints)
        assert spec["selector"]["matchLabels"]


def test_kserve_objects_are_the_graph_and_its_services():
    for target in ("overlays/staging", "overlays/production", "overlays/canary"):
        docs = render(target)
        graph = next(d for d in docs if d["kind"] == "InferenceGraph")
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}
        weights = split_weights(graph, target)
        steps = [s.service for node in weights for s in sequence(graph, node, target)]
        assert sorted(steps) == sorted(services), target  # each step a service, and back
        for name, isvc in services.items():
            pred = isvc["spec"]["predictor"]
            container = pred["containers"][0]
            assert pred["serviceAccountName"] == "llarapp-serving"
            assert container["command"][-1] == f"llarapp_kserve.{name.split('-')[0]}"
            assert container["args"][:2] == ["--model_name", name]
            assert container["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{name}/ready"
            assert pred["labels"]["llarapp.io/step"] == "true"
            assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
                "RawDeployment"
            )
            assert "canaryTrafficPercent" not in pred  # ignored in RawDeployment: the Splitter
        champion = {s: storage_uri(services[s]) for s in ("encoder", "retriever", "ranker")}
        assert len(set(champion.values())) == 1, champion
        if target == "overlays/canary":  # the same default share as `llarapp serve --challenger`
            assert weights == {"champion": 90, "challenger": 10} and CANARY_PERCENT == 10
            assert storage_uri(services["ranker-challenger"]) != champion["ranker"]
        else:
            assert weights == {"champion": 100}


def test_llarapp_serve_reads_the_deployed_graph():
    from llarapp_kserve.local import default_graph_path

    assert default_graph_path().resolve() == (MANIFESTS / "base" / "inference-graph.yaml")
    steps = read_sequence(default_graph_path())
    assert [(s.name, s.service) for s in steps] == [
        ("encode", "encoder"), ("retrieve", "retriever"), ("rank", "ranker")]  # fmt: skip


def _graph_doc(target="overlays/canary") -> dict:
    return next(d for d in render(target) if d["kind"] == "InferenceGraph")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda g: g["spec"]["nodes"]["root"].update(routerType="Ensemble"), "Splitter"),
        (lambda g: g["spec"]["nodes"]["root"]["steps"][1].update(weight=20), "sum 100"),
        (lambda g: g["spec"]["nodes"]["root"]["steps"].reverse(), "expected"),
        (
            lambda g: g["spec"]["nodes"]["challenger"]["steps"][2].update(serviceName="r2"),
            "challenger services",
        ),
        (
            lambda g: g["spec"]["nodes"]["champion"]["steps"][1].update(dependency="Soft"),
            "expected 'Hard'",
        ),
    ],
)
def test_graph_reader_rejects_a_bad_splitter(edit, says):
    graph = json.loads(json.dumps(_graph_doc()))
    edit(graph)
    with pytest.raises(ValueError, match=says):
        [sequence(graph, node) for node in ("champion", "challenger")]


# ---------------------------------------------------------------------------- rollout patches
def _patched(doc: dict, ops: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"{doc['kind']}-{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        ["kubectl", "patch", "--local", "-f", str(path), "--type", "json", "-p", json.dumps(ops),
         "-o", "yaml"],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("percent", [0, 35, 100])
def test_split_patch_moves_the_canary_graph(percent, tmp_path):
    proc = _patched(_graph_doc(), split_patch(percent), tmp_path)
    assert proc.returncode == 0, proc.stderr
    graph = yaml.safe_load(proc.stdout)
    assert split_weights(graph) == {"champion": 100 - percent, "challenger": percent}


def test_split_patch_refuses_a_graph_without_a_challenger(tmp_path):
    proc = _patched(_graph_doc("overlays/production"), split_patch(10), tmp_path)
    assert proc.returncode != 0 and "test" in proc.stderr
    with pytest.raises(ValueError, match=r"integer 0\.\.100"):
        split_patch(101)


def test_promotion_points_the_champion_at_the_challengers_folder(tmp_path):
    docs = {d["metadata"]["name"]: d for d in render("overlays/canary")
            if d["kind"] == "InferenceService"}  # fmt: skip
    for name in ("encoder", "retriever", "ranker"):
        new = storage_uri(docs[f"{name}-challenger"])
        proc = _patched(docs[name], storage_patch(docs[name], new), tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert storage_uri(yaml.safe_load(proc.stdout)) == new
    bare = json.loads(json.dumps(docs["ranker"]))
    bare["spec"]["predictor"]["containers"][0]["env"] = []
    with pytest.raises(ValueError, match="no STORAGE_URI"):
        storage_patch(bare, "s3://x")


# ---------------------------------------------------------------------------- rules
def test_security_rules_for_every_pod():
    for target, doc in _all():
        for pod in pod_specs(doc):
            where = _where(target, doc)
            ctx = pod["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, where
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
            assert pod["automountServiceAccountToken"] is False, where
            writable = {v["name"] for v in pod.get("volumes", [])
                        if "emptyDir" in v or "persistentVolumeClaim" in v}  # fmt: skip
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert c["resources"]["requests"] and c["resources"]["limits"], where
                if doc["kind"] != "Job":
                    assert c["readinessProbe"] and c["livenessProbe"], where
                mounts = [m for m in c.get("volumeMounts", []) if not m.get("readOnly")]
                assert all(m["name"] in writable for m in mounts), where
                repository, _, tag = c["image"].rpartition(":")
                assert repository and tag and tag != "latest" and "/" not in tag, where
                if "llarapp-python" in repository:
                    assert c["image"] == IMAGE, f"{where}: {c['image']}; expected {IMAGE}"


def test_image_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert IMAGE.endswith(f":{version}")


def test_no_literal_credentials_anywhere():
    for target, doc in _all():
        assert doc["kind"] != "Secret", f"{_where(target, doc)}: Secrets are created by hand"
        for pod in pod_specs(doc):
            for c in pod["containers"]:
                for e in c.get("env", []):
                    if re.search(r"KEY|SECRET|PASSWORD|TOKEN", e["name"]) and "value" in e:
                        assert e["name"].endswith("_FILE"), f"{_where(target, doc)}: {e['name']}"
    tracked = subprocess.run(
        ["git", "ls-files", "manifests", "docs", "README.md"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in tracked:
        text = (ROOT / name).read_text(errors="replace")
        assert not re.search(r"minio123|(?:SECRET_ACCESS_KEY|PASSWORD)[\"']?\s*[:=]\s*[\"']?\w",
                             text), name  # fmt: skip


def test_network_policies_isolate_the_steps():
    for target in TARGETS:
        policies = {
            d["metadata"]["name"]: d for d in render(target) if d["kind"] == "NetworkPolicy"
        }
        deny = policies["default-deny"]["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        if target.startswith("overlays/"):
            steps = policies["steps"]["spec"]
            sources = [s for rule in steps["ingress"] for s in rule["from"]]
            assert {"serving.kserve.io/inferencegraph": "llarapp"} in [
                s.get("podSelector", {}).get("matchLabels") for s in sources]  # fmt: skip
            assert all("podSelector" in s or s["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "monitoring"} for s in sources)  # fmt: skip


# ---------------------------------------------------------------------------- policy scan
@pytest.mark.slow
def test_policy_scan_passes(tmp_path):
    checkov = ROOT / CHECKOV if (ROOT / CHECKOV).exists() else shutil.which("checkov")
    if checkov is None:
        pytest.skip("checkov not installed: `make policy-venv` creates .venv-policy with it")
    for target in TARGETS:
        docs = render(target)
        (tmp_path / f"{target.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(docs))
    skips = ",".join(CHECKOV_SKIPS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in (
        ["-d", str(tmp_path), "--framework", "kubernetes", "--skip-check", skips],
        ["-f", str(ROOT / "Dockerfile.component"), "--framework", "dockerfile"],
    ):
        proc = subprocess.run(
            [str(checkov), *args, "--compact", "--quiet", "--skip-download", "-o", "json"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        summary = json.loads(proc.stdout)["summary"] if proc.stdout.strip() else {}
        print(args[1], summary)  # the counts, for the record (-s)


# ---------------------------------------------------------------------------- docs/cluster.md
KINDS = {"inferencegraph": "InferenceGraph", "inferenceservice": "InferenceService",
         "job": "Job", "service": "Service", "configmap": "ConfigMap",
         "deployment": "Deployment"}  # fmt: skip
DOC_ENV = {"MINIO_ROOT_PASSWORD": "x", "S3_SECRET": "x", "PG_PASSWORD": "x"}


def _docs_commands() -> list[str]:
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def _find(namespace: str, kind: str, name: str) -> tuple[str, dict] | None:
    """The rendered object (the canary overlay first: it holds the most)."""
    if kind == "Deployment" and name.endswith("-predictor"):  # KServe makes it from the isvc
        kind, name = "InferenceService", name.removesuffix("-predictor")
    for target in ("overlays/canary", *TARGETS):
        for d in render(target):
            meta = d["metadata"]
            if (d["kind"], meta["name"], meta.get("namespace")) == (kind, name, namespace):
                return target, d
    return None


def _check_kubectl(words: list[str], tmp_path: Path) -> None:
    namespace = words[words.index("-n") + 1] if "-n" in words else None
    rest = [w for i, w in enumerate(words[1:], 1) if w != "-n" and words[i - 1] != "-n"]
    verb = rest[0]
    if (verb == "apply" and rest[1] == "-k") or (verb == "delete" and rest[1] == "-k"):
        assert rest[2].removeprefix("manifests/") in TARGETS, rest[2]
        render(rest[2].removeprefix("manifests/"))
        return
    if verb == "patch":
        kind, name = KINDS[rest[1]], rest[2]
        found = _find(namespace, kind, name)
        assert found, f"{kind}/{name} in {namespace}: not rendered"
        ops = json.loads(rest[rest.index("-p") + 1])
        proc = _patched(found[1], ops, tmp_path)
        assert proc.returncode == 0, proc.stderr
        if kind == "InferenceGraph":
            assert sum(split_weights(yaml.safe_load(proc.stdout)).values()) == 100
        return
    if verb in ("get", "wait", "logs", "port-forward", "delete", "rollout"):
        args = [w for i, w in enumerate(rest[1:], 1)
                if not w.startswith("-") and rest[i - 1] != "-o" and w != "status"]  # fmt: skip
        if args and "/" not in args[0] and args[0] in KINDS:  # KIND NAME [NAME...]
            refs = [(args[0], n) for n in args[1:] if not re.match(r"^\d+:\d+$", n)]
        else:
            refs = [tuple(a.split("/", 1)) for a in args if "/" in a]
        assert refs, words
        for kind, name in refs:
            assert _find(namespace, KINDS[kind], name), f"{kind}/{name} in {namespace}"
        return
    raise AssertionError(f"docs/cluster.md: no check for `{' '.join(words)}`")


def test_docs_commands_render_apply_or_parse(tmp_path):
    from llarapp.cli import build_parser

    commands = _docs_commands()
    checked = 0
    for line in commands:
        segments = [shlex.split(s) for s in line.split(" | ")]
        if len(segments) > 1:  # a pipeline: run it offline, but its last `kubectl apply -f -`
            assert segments[-1] == ["kubectl", "apply", "-f", "-"], line
            proc = subprocess.run(line.rsplit(" | ", 1)[0], shell=True, capture_output=True,
                                  text=True, env={**os.environ, **DOC_ENV})  # fmt: skip
            assert proc.returncode == 0, f"{line}\n{proc.stderr}"
            doc = yaml.safe_load(proc.stdout)
            assert _secret_is_used(doc["metadata"]["namespace"], doc["metadata"]["name"]), line
        elif segments[0][0] == "kubectl" and "create" in segments[0]:
            words = segments[0]
            proc = subprocess.run([*words, "--dry-run=client", "-o", "yaml"], capture_output=True,
                                  text=True)  # fmt: skip
            assert proc.returncode == 0, f"{line}\n{proc.stderr}"
            doc = yaml.safe_load(proc.stdout)
            assert _secret_is_used(doc["metadata"]["namespace"], doc["metadata"]["name"]), line
        elif segments[0][0] == "kubectl":
            _check_kubectl(segments[0], tmp_path)
        elif segments[0][0] == "llarapp":
            build_parser().parse_args(segments[0][1:])
        elif segments[0][:2] in (["docker", "build"], ["docker", "push"]):
            words = segments[0]
            assert IMAGE in words, line
            if words[1] == "build":
                assert (ROOT / words[words.index("-f") + 1]).is_file(), line
        else:
            raise AssertionError(f"docs/cluster.md: no check for `{line}`")
        checked += 1
    assert checked == len(commands) >= 20
    text = " ".join(commands)
    for target in TARGETS:
        assert f"kubectl apply -k manifests/{target}" in text, target
    assert "--kubectl-namespace" in text


def _secret_is_used(namespace: str, name: str) -> bool:
    """A rendered object of ``namespace`` reads Secret ``name`` (by reference only)."""
    for target in TARGETS:
        for d in render(target):
            if d["metadata"].get("namespace") == namespace and f"'{name}'" in repr(d) and (
                re.search(rf"'(secretName|name)': '{name}'", repr(d))):  # fmt: skip
                return True
    return False


def test_cli_rollout_accepts_the_cluster_flag():
    from llarapp.cli import build_parser

    args = build_parser().parse_args(
        ["rollout", "--server", "http://x", "--events", "e.db", "--kubectl-namespace", "llarapp"]
    )
    assert args.kubectl_namespace == "llarapp"


# ---------------------------------------------------------------------------- pipelines publish
def test_publish_reads_the_compiled_pipelines_and_refuses_an_unknown_recurring_run(tmp_path):
    from pipelines.publish import compiled_pipelines, publish

    names = compiled_pipelines()
    assert {"llarapp-training", "llarapp-retraining"} <= set(names)
    with pytest.raises(ValueError, match="no compiled pipeline of that name"):
        publish("http://127.0.0.1:9", recurring="llarapp-nope")  # refused before any call
    (tmp_path / "x.yaml").write_text("pipelineInfo: {}\n")
    with pytest.raises(ValueError, match=r"no pipelineInfo\.name"):
        compiled_pipelines(tmp_path)


def test_the_recurring_run_names_a_compiled_pipeline():
    """The platform's kfp-publish Job schedules a pipeline the image ships."""
    from pipelines.publish import compiled_pipelines

    job = next(d for d in render("platform") if d["metadata"]["name"] == "kfp-publish")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    recurring = args[args.index("--recurring") + 1]
    if not (ROOT / "pipelines" / "continuous_pipeline.yaml").exists():
        pytest.skip(f"{recurring}: pipelines/continuous_pipeline.yaml is not compiled here yet")
    assert recurring in compiled_pipelines()
