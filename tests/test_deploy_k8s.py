"""The Kubernetes deployment (deploy/k8s/, deploy/dagster.yaml): no cluster here, so the manifests
are rendered with kustomize and validated against the Kubernetes schemas (kubernetes-validate);
the ExternalSecret custom resources, whose schema is the operator's, are checked structurally; the
Helm values are checked against the instance file and the rendered manifests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
INSTANCE = ROOT / "deploy" / "dagster.yaml"
VALUES = K8S / "helm" / "values.yaml"
PLATFORM_NS, SANDBOX_NS = "campaign-platform", "campaign-sandboxes"
RUN_SA = "campaign-run-worker"
PG_ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
          "DAGSTER_PG_PASSWORD": "x", "DAGSTER_PG_DB": "dagster"}  # fmt: skip


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    """`kubectl kustomize deploy/k8s`, as objects."""
    kubectl = shutil.which("kubectl")
    require(kubectl is not None, "kubectl is not installed (it renders the kustomization)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                         check=True, timeout=120).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return yaml.safe_load(INSTANCE.read_text())


def test_every_manifest_validates_against_the_kubernetes_schema(rendered: list[dict]):
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    kinds = {o["kind"] for o in rendered}
    assert kinds >= {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "Role",
                     "RoleBinding", "ServiceAccount", "PodDisruptionBudget", "ExternalSecret",
                     "PersistentVolumeClaim", "ConfigMap", "Deployment", "Service"}  # fmt: skip
    validated = 0
    for obj in rendered:
        if obj["apiVersion"].startswith("external-secrets.io/"):
            continue  # a custom resource: checked below
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the field path
        validated += 1
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "campaign-platform"
    assert validated == len(rendered) - 2


def test_external_secrets_feed_the_secrets_the_pods_read(rendered: list[dict], values: dict):
    """ExternalSecret is the external-secrets operator's CRD (not in the Kubernetes schemas that
    kubernetes-validate ships): checked for the fields the operator requires."""
    secrets = find(rendered, "ExternalSecret")
    targets = set()
    for es in secrets:
        assert es["apiVersion"] == "external-secrets.io/v1"
        spec = es["spec"]
        assert spec["secretStoreRef"]["kind"] in ("SecretStore", "ClusterSecretStore")
        assert spec["secretStoreRef"]["name"] and spec["target"]["name"]
        for item in spec["data"]:
            assert item["secretKey"] and item["remoteRef"]["key"]
        targets.add(spec["target"]["name"])
        assert es["metadata"]["namespace"] == PLATFORM_NS
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {s["name"] for s in launcher["envSecrets"]} <= targets
    assert values["global"]["postgresqlSecretName"] in targets
    assert values["generatePostgresqlPasswordSecret"] is False
    keys = {i["secretKey"] for es in secrets for i in es["spec"]["data"]}
    assert {"ANTHROPIC_API_KEY", "GITHUB_TOKEN", "postgresql-password"} <= keys
    # no secret value anywhere in the manifests or the values
    assert not find(rendered, "Secret")
    assert values["postgresql"]["postgresqlPassword"] == ""


def test_sandbox_egress_is_dns_model_endpoint_and_code_host_only(rendered: list[dict]):
    policies = [
        p for p in find(rendered, "NetworkPolicy") if p["metadata"]["namespace"] == SANDBOX_NS
    ]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    allowed = {p["metadata"]["name"]: p["spec"] for p in policies if p["spec"] is not deny}
    assert set(allowed) == {"allow-dns", "allow-model-endpoint", "allow-code-host"}
    for spec in allowed.values():
        assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    dns_ports = {(p["protocol"], p["port"]) for p in allowed["allow-dns"]["egress"][0]["ports"]}
    assert dns_ports == {("UDP", 53), ("TCP", 53)}
    model = allowed["allow-model-endpoint"]["egress"][0]
    assert [p["port"] for p in model["ports"]] == [443] and "ipBlock" in model["to"][0]
    host = allowed["allow-code-host"]["egress"][0]
    assert {p["port"] for p in host["ports"]} == {443, 22}
    assert all("ipBlock" in t and "0.0.0.0/0" not in t["ipBlock"]["cidr"] for t in host["to"])


def test_run_pods_manage_sandboxes_in_the_sandbox_namespace_only(
    rendered: list[dict], values: dict, instance_yaml: dict
):
    assert not find(rendered, "ClusterRole") and not find(rendered, "ClusterRoleBinding")
    (role,) = find(rendered, "Role")
    assert role["metadata"]["namespace"] == SANDBOX_NS
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}  # fmt: skip
    assert rules[("", "pods")] >= {"create", "delete"}
    assert rules[("", "pods/exec")] >= {"create"}
    assert rules[("extensions.agents.x-k8s.io", "sandboxclaims")] >= {"create", "delete"}
    assert not any(r == "secrets" for _, r in rules) and all("*" not in v for v in rules.values())
    (binding,) = find(rendered, "RoleBinding")
    assert binding["metadata"]["namespace"] == SANDBOX_NS
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RUN_SA,
                                    "namespace": PLATFORM_NS}]  # fmt: skip
    assert find(rendered, "ServiceAccount", RUN_SA)[0]["metadata"]["namespace"] == PLATFORM_NS
    # the run pods really run as that account: in the chart's values and in the instance file
    pod_spec = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert pod_spec["serviceAccountName"] == RUN_SA
    assert instance_yaml["run_launcher"]["config"]["service_account_name"] == RUN_SA


def test_quota_and_disruption_budgets(rendered: list[dict]):
    (quota,) = find(rendered, "ResourceQuota")
    assert quota["metadata"]["namespace"] == SANDBOX_NS
    hard = quota["spec"]["hard"]
    assert {"pods", "requests.cpu", "limits.memory"} <= set(hard)
    assert "count/sandboxclaims.extensions.agents.x-k8s.io" in hard
    (limits,) = find(rendered, "LimitRange")  # pods without requests are still admitted
    assert limits["spec"]["limits"][0]["defaultRequest"]["cpu"]
    pdbs = {p["metadata"]["name"]: p["spec"] for p in find(rendered, "PodDisruptionBudget")}
    assert pdbs["dagster-webserver"]["selector"]["matchLabels"]["component"] == "dagster-webserver"
    assert pdbs["dagster-daemon"]["selector"]["matchLabels"]["component"] == "dagster-daemon"
    assert all(p["minAvailable"] == 1 for p in pdbs.values())


def test_k8s_instance_config_validates_with_k8s_run_launcher(instance_yaml: dict, monkeypatch):
    from orchestrator_assets.assets.dagster_private import (
        class_from_code_pointer,
        dagster_instance_config,
        process_config,
        resolve_to_config_type,
    )

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(INSTANCE.parent))  # reads deploy/dagster.yaml
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres."), key
    # both off by default in Dagster: set explicitly
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert config["run_retries"] == {"enabled": True, "max_retries": 1,
                                     "retry_on_asset_or_op_failure": False}  # fmt: skip
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["concurrency"] == local["concurrency"]
    for key in ("run_launcher", "run_storage"):
        section = instance_yaml[key]
        cls = class_from_code_pointer(section["module"], section["class"])
        result = process_config(resolve_to_config_type(cls.config_type()), section["config"])
        assert result.success, result.errors
    limits = instance_yaml["run_launcher"]["config"]["resources"]["limits"]
    assert limits["cpu"] and limits["memory"]
    handler = config["python_logs"]["dagster_handler_config"]["handlers"]["json"]["class"]
    module, _, name = handler.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name)


def test_helm_values_match_the_instance_file_and_manifests(
    values: dict, instance_yaml: dict, rendered: list[dict]
):
    """What the chart renders and deploy/dagster.yaml say the same thing, and every name the
    values use exists in the manifests."""
    images = [values["dagsterWebserver"]["image"], values["dagsterDaemon"]["image"],
              *[d["image"] for d in values["dagster-user-deployments"]["deployments"]]]  # fmt: skip
    assert all(i["repository"].endswith("/campaign-platform") for i in images)
    assert len({i["tag"] for i in images}) == 1
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "orchestrator_assets.definitions"]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s, launched = launcher["config"]["k8sRunLauncher"], instance_yaml["run_launcher"]["config"]
    assert k8s["resources"] == launched["resources"]
    assert k8s["jobNamespace"] == launched["job_namespace"] == PLATFORM_NS
    assert [s["name"] for s in k8s["envSecrets"]] == launched["env_secrets"]
    assert launched["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    daemon = values["dagsterDaemon"]
    monitoring = {"enabled": "enabled", "startTimeoutSeconds": "start_timeout_seconds",
                  "cancelTimeoutSeconds": "cancel_timeout_seconds",
                  "maxResumeRunAttempts": "max_resume_run_attempts",
                  "pollIntervalSeconds": "poll_interval_seconds"}  # fmt: skip
    for camel, snake in monitoring.items():
        assert daemon["runMonitoring"][camel] == instance_yaml["run_monitoring"][snake]
    assert daemon["runRetries"]["maxRetries"] == instance_yaml["run_retries"]["max_retries"]
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]
    runs = values["concurrency"]["runs"]
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"]["defaultLimit"] == local["pools"]["default_limit"]
    assert runs["maxConcurrentRuns"] == local["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == local["runs"]["tag_concurrency_limits"]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    # names the values refer to exist in the manifests
    claim = k8s["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert find(rendered, "PersistentVolumeClaim", claim)
    for ref in k8s["envConfigMaps"]:
        assert find(rendered, "ConfigMap", ref["name"])


def test_the_code_location_image_carries_what_k8s_run_launcher_needs():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dagster-k8s==0.29.27" in project["optional-dependencies"]["deploy"]
    dockerfile = (ROOT / "images" / "Dockerfile.platform").read_text()
    assert '["optional-dependencies"]["deploy"]' in dockerfile  # the image installs that extra
    assert "import dagster_docker, dagster_k8s, dagster_postgres" in dockerfile
    from dagster_k8s import K8sRunLauncher

    assert K8sRunLauncher.config_type()
