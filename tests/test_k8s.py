"""k8s/ manifests: core kinds through kubernetes-validate, KubeRay kinds against the v1.7.0 CRD schemas
(strict: an unknown field is an error, not silently pruned), and every entrypoint is a real verb + preset."""

from __future__ import annotations

import copy
import gzip
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "k8s"
SCHEMAS = {kind: REPO / "tests" / "data" / f"kuberay-v1.7.0-{kind.lower()}-v1.schema.json.gz"
           for kind in ("RayCluster", "RayJob")}
CORE_KINDS = {"Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"}


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def strict(schema: dict) -> dict:
    """Close every object that lists its properties (the API server would prune unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and \
                    not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def kuberay_schema(kind: str) -> dict:
    return strict(json.loads(gzip.decompress(SCHEMAS[kind].read_bytes())))


def test_every_manifest_is_a_known_kind():
    kinds = [doc["kind"] for _, doc in manifests()]
    assert {"RayCluster", "RayJob", "Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy"} <= set(kinds)
    assert set(kinds) <= CORE_KINDS | set(SCHEMAS)


@pytest.mark.parametrize("name,doc", [m for m in manifests() if m[1]["kind"] in CORE_KINDS],
                         ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_core_manifests_validate(name, doc):
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.31.0", strict=True)


@pytest.mark.parametrize("name,doc", [m for m in manifests() if m[1]["kind"] in SCHEMAS],
                         ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_kuberay_manifests_validate_against_the_crd_schema(name, doc):
    jsonschema.validate(doc, kuberay_schema(doc["kind"]))


def test_the_strict_schema_catches_a_misspelt_field():
    doc = next(d for _, d in manifests() if d["kind"] == "RayCluster")
    bad = copy.deepcopy(doc)
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(bad, kuberay_schema("RayCluster"))


def pod_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        return [spec["submitterPodTemplate"]["spec"]]
    if doc["kind"] == "Deployment":
        return [spec["template"]["spec"]]
    return []


def test_pods_run_non_root_with_requests_and_limits_and_nothing_is_exposed_publicly():
    for name, doc in manifests():
        for pod in pod_specs(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for container in pod["containers"]:
                assert {"requests", "limits"} <= set(container["resources"]), (name, container["name"])
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", name
        if doc["kind"] == "RayCluster":
            assert doc["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"


def test_nobody_else_gets_in_token_auth_network_policy_and_no_needless_service_account_token():
    docs = manifests()
    token = {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "dreamgen-ray-token", "key": "auth_token"}}}
    ray_pods = [(name, pod) for name, doc in docs if doc["kind"] in ("RayCluster", "RayJob")
                for pod in pod_specs(doc)]
    assert len(ray_pods) >= 4  # head, workers, two submitters
    for name, pod in ray_pods:  # every Ray process and every submitter holds the token: auth is on
        for container in pod["containers"]:
            env = container.get("env", [])
            assert {"name": "RAY_AUTH_MODE", "value": "token"} in env and token in env, (name, container["name"])
    cluster = next(doc for _, doc in docs if doc["kind"] == "RayCluster")
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True  # autoscaler
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    for name, doc in docs:  # no other pod mounts a service-account token
        for pod in pod_specs(doc):
            if pod is not head:
                assert pod.get("automountServiceAccountToken") is False, name
    policies = {doc["spec"]["podSelector"]["matchLabels"].get("ray.io/cluster") or
                doc["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: doc
                for _, doc in docs if doc["kind"] == "NetworkPolicy"}
    assert set(policies) == {"dreamgen", "dreamgen-mlflow"}
    for target, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:  # only named pods: no empty rule, no IP block, no namespace
            assert rule.get("from"), target
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"} and peer["podSelector"]["matchLabels"], target
    submitters = {doc["spec"]["submitterPodTemplate"]["metadata"]["labels"]["app.kubernetes.io/name"]
                  for _, doc in docs if doc["kind"] == "RayJob"}
    admitted = [p["podSelector"]["matchLabels"] for rule in policies["dreamgen"]["spec"]["ingress"] for p in rule["from"]]
    assert {"app.kubernetes.io/name": "dreamgen-submitter"} in admitted and submitters == {"dreamgen-submitter"}


def test_every_entrypoint_names_a_real_verb_and_composes_with_its_preset():
    from hydra import compose, initialize_config_dir

    jobs = [doc for _, doc in manifests() if doc["kind"] == "RayJob"]
    assert jobs
    for doc in jobs:
        words = shlex.split(doc["spec"]["entrypoint"])
        assert words[:2] == ["python", "-m"] and words[2].startswith("jobs.")
        module = REPO / Path(*words[2].split(".")).with_suffix(".py")
        assert module.is_file(), f"{doc['metadata']['name']}: {words[2]} is not a jobs module"
        overrides = words[3:]
        preset = next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment="))
        assert (REPO / "configs" / "experiment" / f"{preset}.yaml").is_file()
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)  # every override names a real key
        assert str(cfg.run_dir).startswith("/data/"), "outputs must land on the shared volume"
