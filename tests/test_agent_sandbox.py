"""The agent-sandbox provider against the API contract of kubernetes-sigs/agent-sandbox.

The fake API server (tests/fake_k8s.py) plays the controller: warm pools keep ready Sandboxes,
a claim adopts a warm one at once or gets a cold one after a delay. The templates and pools are
the ones `deploy/agent-sandbox/` ships, applied as they are. With K8S_TEST_KUBECONFIG set (a
cluster with the agent-sandbox controller and `kubectl apply -k deploy/agent-sandbox/` done),
the tests not marked fake-only run there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from resources.sandboxes.agent_sandbox import AgentSandboxProvider, ClaimLog
from resources.sandboxes.k8s_config import AgentSandboxSettings
from tests.conftest import Platform, require
from tests.fake_k8s import FakeKubernetes

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "agent-sandbox"
NAMESPACE = "campaign-sandboxes"
REAL = os.environ.get("K8S_TEST_KUBECONFIG")
fake_only = pytest.mark.skipif(bool(REAL), reason="needs the fake API server's controls")
TAGS = {"campaign": "docs", "target": "acme__alpha", "run_id": "feedbeef-run"}


def shipped() -> list[dict]:
    """Every object the kustomization lists."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return docs


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeKubernetes]:
    """The fake API server with deploy/agent-sandbox/ applied (or a real cluster)."""
    if REAL:
        yield None  # type: ignore[misc]
        return
    require(
        subprocess.run(["which", "bwrap"], capture_output=True).returncode == 0,
        "bubblewrap (bwrap) is not installed: the fake pods run under it",
    )
    with FakeKubernetes(tmp_path / "k8s") as server:
        for doc in shipped():
            plural = {
                "SandboxTemplate": "sandboxtemplates",
                "SandboxWarmPool": "sandboxwarmpools",
            }.get(doc["kind"])
            if plural:
                server.create(plural, NAMESPACE, doc)
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
        assert server.running_processes() == 0


def kubeconfig(tmp_path: Path) -> str:
    return REAL or str(tmp_path / "kubeconfig")


def provider(tmp_path: Path, template: str = "python", **fields) -> AgentSandboxProvider:
    settings = AgentSandboxSettings(
        kubeconfig=kubeconfig(tmp_path),
        namespace=NAMESPACE,
        template=template,
        **{"ready_timeout_s": 60, **fields},
    )
    return AgentSandboxProvider(
        tmp_path / "sandboxes", settings, tmp_path / "data" / "sandboxes" / "claims.jsonl"
    )


def wait_ready_pool(fake: FakeKubernetes | None, name: str) -> None:
    if fake is None:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pool = fake.get("sandboxwarmpools", NAMESPACE, name)
        if pool and pool["status"].get("readyReplicas") == pool["spec"]["replicas"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"warm pool {name} never filled")


# the shipped manifests -------------------------------------------------------------------------


def test_deploy_ships_a_gvisor_template_and_a_warm_pool_per_profile():
    from orchestrator_assets.spec.profiles import load_profiles

    profiles = load_profiles(DEPLOY / "profiles.yaml", environ={})
    wanted = {n for n, p in profiles.profiles.items() if p.provider == "agent-sandbox"}
    docs = shipped()
    templates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "SandboxTemplate"}
    pools = {d["metadata"]["name"]: d for d in docs if d["kind"] == "SandboxWarmPool"}
    assert set(templates) == set(pools) == wanted == {"python", "agent"}
    for name, template in templates.items():
        assert template["apiVersion"] == "extensions.agents.x-k8s.io/v1beta1"
        spec = template["spec"]["podTemplate"]["spec"]
        assert spec["runtimeClassName"] == "gvisor"
        assert spec["activeDeadlineSeconds"] > 0  # a sandbox nobody deletes still ends
        container = spec["containers"][0]
        assert container["resources"]["limits"] == container["resources"]["requests"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace", "/tmp"}
        assert pools[name]["spec"]["sandboxTemplateRef"] == {"name": name}
        assert pools[name]["spec"]["replicas"] >= 1
    assert templates["python"]["spec"]["networkPolicy"]["egress"] == []


# claims ------------------------------------------------------------------------------------------


def test_a_claim_binds_to_a_ready_sandbox_runs_commands_and_is_deleted(tmp_path, fake):
    wait_ready_pool(fake, "python")
    p = provider(tmp_path)
    with p.open("change", TAGS) as sandbox:
        (sandbox.workspace / "app.py").write_text("OLD\n")
        lines: list[str] = []
        result = sandbox.exec(
            ["sh", "-c", "sed -i s/OLD/NEW/ app.py; cat app.py; exit 4"], on_output=lines.append
        )
        assert result.exit_code == 4 and lines == ["NEW"]
        assert (sandbox.workspace / "app.py").read_text() == "NEW\n"
        assert sandbox.isolation == "agent-sandbox:python"
        if fake is not None:
            (claim,) = fake.list("sandboxclaims", NAMESPACE)
            assert claim["spec"] == {"warmPoolRef": {"name": "python"}}
            labels = claim["metadata"]["labels"]
            assert labels["org.campaign.sandbox"] == "agent-sandbox"
            assert labels["org.campaign.campaign"] == "docs"
            assert labels["org.campaign.target"] == "acme__alpha"
            assert claim["metadata"]["annotations"]["org.campaign.host"] == socket.gethostname()
            bound = claim["status"]["sandbox"]["name"]
    if fake is not None:
        assert fake.list("sandboxclaims") == []
        assert fake.get("sandboxes", NAMESPACE, bound) is None  # its Sandbox went with it
        assert all(p["metadata"]["name"] != f"{bound}-pod" for p in fake.list("pods"))


def test_secrets_reach_the_command_in_the_claimed_pod_but_never_an_exec_url(tmp_path, fake):
    from tests.test_kubernetes import secret_travels_only_inside

    wait_ready_pool(fake, "python")
    with provider(tmp_path).open("agent", TAGS) as sandbox:
        secret_travels_only_inside(sandbox, fake.requests if fake is not None else None)


@fake_only
def test_warm_claims_are_ready_at_once_and_cold_ones_after_a_while_and_pools_shows_both(
    tmp_path, fake, platform: Platform
):
    fake.cold_delay_s = 1.5
    cold = json.loads(
        json.dumps(
            next(
                d
                for d in shipped()
                if d["kind"] == "SandboxWarmPool" and d["metadata"]["name"] == "agent"
            )
        )
    )
    fake.delete("sandboxwarmpools", NAMESPACE, "agent")
    cold["spec"]["replicas"] = 0  # nothing warm: every claim is made cold from the template
    fake.create("sandboxwarmpools", NAMESPACE, cold)
    wait_ready_pool(fake, "python")
    # The provider writes where `orchestrator sandboxes pools` reads: <data>/sandboxes/.
    data = Path(platform.env["ORCHESTRATOR_DATA_DIR"])
    log = data / "sandboxes" / "claims.jsonl"
    for template in ("python", "agent"):
        settings = AgentSandboxSettings(
            kubeconfig=kubeconfig(tmp_path), namespace=NAMESPACE, template=template
        )
        p = AgentSandboxProvider(data / "workspaces", settings, log)
        with p.open("change", TAGS) as sandbox:
            assert sandbox.exec(["true"]).ok
    entries = ClaimLog(log).entries()
    by_pool = {e["pool"]: e for e in entries}
    assert by_pool["python"]["launch"] == "warm" and by_pool["python"]["ready_s"] < 1.0
    assert by_pool["agent"]["launch"] == "cold" and by_pool["agent"]["ready_s"] >= 1.5
    assert all(e["ok"] for e in entries)
    profiles = yaml.safe_load((DEPLOY / "profiles.yaml").read_text())
    for profile in profiles["profiles"].values():
        profile["agent_sandbox"]["kubeconfig"] = kubeconfig(tmp_path)
    path = platform.root / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles))
    platform.env["ORCHESTRATOR_PROFILES_FILE"] = str(path)
    rows = {
        r["profile"]: r
        for r in json.loads(platform.cli("sandboxes", "pools", "--output", "json").stdout)
    }
    assert rows["python"]["replicas"] == 4 and rows["python"]["ready"] == 4  # replenished
    assert (rows["python"]["warm"], rows["python"]["cold"]) == (1, 0)
    assert (rows["agent"]["warm"], rows["agent"]["cold"]) == (0, 1)
    assert rows["agent"]["replicas"] == 0
    assert rows["agent"]["cold_ready_s_median"] >= 1.5
    platform.env["COLUMNS"] = "200"
    table = platform.cli("sandboxes", "pools").stdout
    assert "campaign-sandboxes/python" in table and "4/4" in table


@fake_only
def test_a_claim_on_a_missing_warm_pool_fails_with_the_reason(tmp_path, fake):
    p = provider(tmp_path, template="nope", ready_timeout_s=30)
    with p.open("change", TAGS) as sandbox:
        started = time.monotonic()
        result = sandbox.exec(["true"])
        assert result.exit_code == 125
        assert "WarmPoolNotFound" in result.output_tail
        assert "SandboxClaim campaign-sandboxes/cs-acme-alpha-" in result.output_tail
        assert time.monotonic() - started < 20
    assert fake.list("sandboxclaims") == []
    (entry,) = ClaimLog(tmp_path / "data" / "sandboxes" / "claims.jsonl").entries()
    assert entry["ok"] is False and "WarmPoolNotFound" in entry["reason"]


@fake_only
def test_cancelling_while_a_claim_waits_deletes_the_claim(tmp_path, fake):
    fake.cold_delay_s = 30  # the claim stays pending
    fake.delete("sandboxwarmpools", NAMESPACE, "agent")
    fake.create(
        "sandboxwarmpools",
        NAMESPACE,
        {
            "metadata": {"name": "agent"},
            "spec": {"replicas": 0, "sandboxTemplateRef": {"name": "agent"}},
        },
    )
    p = provider(tmp_path, template="agent")
    results = []
    with p.open("change", TAGS) as sandbox:
        worker = threading.Thread(target=lambda: results.append(sandbox.exec(["true"])))
        worker.start()
        deadline = time.monotonic() + 10
        while not fake.list("sandboxclaims") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.list("sandboxclaims")
        p.close_all()
        worker.join(20)
        assert not worker.is_alive()
    assert results and results[0].exit_code == 125
    assert fake.list("sandboxclaims") == []


@fake_only
def test_prune_deletes_the_claims_a_crashed_run_left(tmp_path, fake, platform: Platform):
    from orchestrator_assets.assets.sweep import Cluster, find_leftovers

    p = provider(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    for name, pid in (("cs-crashed-claim", dead.pid), ("cs-live-claim", os.getpid())):
        fake.create(
            "sandboxclaims",
            NAMESPACE,
            p.claim_manifest(
                name, {"campaign": "docs", "target": name, "host": host, "pid": str(pid)}
            ),
        )
    wait_for_bound = time.monotonic() + 10
    while time.monotonic() < wait_for_bound and not all(
        (c.get("status") or {}).get("sandbox") for c in fake.list("sandboxclaims")
    ):
        time.sleep(0.1)
    with platform.instance() as instance:
        found, problem = find_leftovers(
            tmp_path / "none",
            instance,
            docker=False,
            clusters=[Cluster("agent-sandbox", p.settings)],
        )
    assert problem is None
    claims = {x.ident: x for x in found if x.kind == "claim"}
    assert claims[f"{NAMESPACE}/cs-crashed-claim"].orphan
    assert not claims[f"{NAMESPACE}/cs-live-claim"].orphan
    for x in found:
        if x.orphan:
            x.remove()
    assert [c["metadata"]["name"] for c in fake.list("sandboxclaims")] == ["cs-live-claim"]
    fake.delete("sandboxclaims", NAMESPACE, "cs-live-claim")
