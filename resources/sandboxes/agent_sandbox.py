"""The agent-sandbox sandbox: a SandboxClaim (kubernetes-sigs/agent-sandbox) per sandbox.

The claim (`extensions.agents.x-k8s.io/v1beta1`, the storage version of the project's released
CRDs) names a SandboxWarmPool, which names the SandboxTemplate the pods are made from
(`deploy/agent-sandbox/` ships one template and one pool per profile). The controller binds the
claim to a ready `Sandbox` (`agents.x-k8s.io/v1beta1`): one adopted from the warm pool at once,
or a cold one made from the template. Commands then run in that Sandbox's pod exactly as in the
kubernetes provider's pods, and the claim is deleted when the sandbox closes (the Sandbox and
its pod go with it).

Every claim's outcome — warm or cold, time to ready — is appended to
`<data>/sandboxes/claims.jsonl`, which `orchestrator sandboxes pools` summarises per pool.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resources.sandboxes.docker import ContainerLimits
from resources.sandboxes.k8s_api import (
    SandboxNotReady,
    call,
    delete_quietly,
    json_body,
    wait_for,
)
from resources.sandboxes.k8s_config import AgentSandboxSettings
from resources.sandboxes.k8s_objects import object_manifest
from resources.sandboxes.k8s_pod import Pod
from resources.sandboxes.kubernetes import ClusterProvider, PodSandbox

log = logging.getLogger(__name__)

CLAIM_GROUP, CLAIM_VERSION = "extensions.agents.x-k8s.io", "v1beta1"
CLAIMS, POOLS, TEMPLATES = "sandboxclaims", "sandboxwarmpools", "sandboxtemplates"
SANDBOX_GROUP, SANDBOX_VERSION, SANDBOXES = "agents.x-k8s.io", "v1beta1", "sandboxes"
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"  # a Sandbox adopted from a warm pool
LAUNCH_TYPE_LABEL = "agents.x-k8s.io/launch-type"  # "warm" or "cold"
# Ready=False reasons that waiting will not cure (after a short grace for the controller's cache).
FATAL_REASONS = {"TemplateNotFound", "WarmPoolNotFound", "ClaimExpired", "SandboxExpired"}
FATAL_GRACE_S = 5.0


def ready_condition(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's Ready condition (empty when it has none yet)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return {}


def read_custom(custom: Any, group: str, version: str, ns: str, plural: str, name: str) -> dict:
    """One custom object (claim, Sandbox, warm pool) as the API returns it."""
    return json_body(
        call(
            custom.get_namespaced_custom_object,
            group,
            version,
            ns,
            plural,
            name,
            _preload_content=False,
        )
    )


class ClaimLog:
    """The JSON-lines file of claim observations (warm/cold, time to ready)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        """Append one observation."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """Every observation (unreadable lines skipped)."""
        found = []
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


class AgentSandboxProvider(ClusterProvider):
    """One SandboxClaim per sandbox, against the profile's warm pool and template."""

    provider_name = "agent-sandbox"
    settings: AgentSandboxSettings
    image = None  # the template says which
    handle_kind, handle_type = "claim", "SandboxClaim"

    def __init__(
        self,
        root: Path,
        settings: AgentSandboxSettings,
        claims_log: Path,
        limits: ContainerLimits | None = None,
    ):
        super().__init__(root, settings, limits)
        self.claims = ClaimLog(claims_log)

    @property
    def template(self) -> str:
        """The SandboxTemplate the claims' pods are made from."""
        return self.settings.template or "default"

    @property
    def pool(self) -> str:
        """The SandboxWarmPool the claims name."""
        return self.settings.warm_pool or self.template

    @property
    def isolation(self) -> str:
        """agent-sandbox with its template (whose runtime class, e.g. gvisor, isolates)."""
        return f"agent-sandbox:{self.template}"

    def custom(self) -> Any:
        """The custom objects API."""
        from kubernetes import client

        return client.CustomObjectsApi(self.api())

    def claim_manifest(self, name: str, tags: Mapping[str, str]) -> dict:
        """A SandboxClaim naming the profile's warm pool, labelled with campaign, target, run."""
        return object_manifest(
            f"{CLAIM_GROUP}/{CLAIM_VERSION}",
            "SandboxClaim",
            name,
            self.settings.namespace,
            self.provider_name,
            tags,
            {"warmPoolRef": {"name": self.pool}},
        )

    def read_claim(self, name: str) -> dict:
        """The claim as the API returns it."""
        ns = self.settings.namespace
        return read_custom(self.custom(), CLAIM_GROUP, CLAIM_VERSION, ns, CLAIMS, name)

    def start(self, sandbox: PodSandbox) -> Pod:
        """Create the claim, wait until it is bound to a ready Sandbox, and find its pod."""
        ns = self.settings.namespace
        custom = self.custom()
        started = time.monotonic()
        name, created = self.create_for(
            sandbox,
            lambda name: custom.create_namespaced_custom_object(
                CLAIM_GROUP,
                CLAIM_VERSION,
                ns,
                CLAIMS,
                self.claim_manifest(name, sandbox.tags),
                _preload_content=False,
            ),
            f"warm pool {self.pool}",
        )
        observation: dict[str, Any] = {
            "time": time.time(),
            "namespace": ns,
            "claim": name,
            "pool": self.pool,
            "template": self.template,
            "campaign": sandbox.tags.get("campaign", ""),
            "target": sandbox.tags.get("target", ""),
        }
        try:
            pod = self._bind(name, created, started)
        except SandboxNotReady as exc:
            self.claims.add(
                {**observation, "ok": False, "reason": str(exc), "ready_s": None, "launch": None}
            )
            raise
        self.claims.add(
            {
                **observation,
                "ok": True,
                "sandbox": pod[1],
                "pod": pod[0].name,
                "launch": pod[2],
                "ready_s": round(time.monotonic() - started, 3),
            }
        )
        return pod[0]

    def _bind(self, name: str, created: dict, started: float) -> tuple[Pod, str, str]:
        ns = self.settings.namespace
        timeout = self.settings.ready_timeout_s
        first_seen = time.monotonic()

        def judge(claim: Mapping[str, Any]) -> tuple[bool, str | None, str]:
            cond = ready_condition(claim)
            bound = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
            doing = f"{cond.get('reason', 'Pending')}: {cond.get('message', '')}".strip(": ")
            if cond.get("status") == "True" and bound:
                return True, None, doing
            late = time.monotonic() - first_seen > FATAL_GRACE_S
            if cond.get("reason") in FATAL_REASONS and late:
                return False, doing, doing
            return False, None, doing

        custom = self.custom()
        claim = wait_for(
            custom.list_namespaced_custom_object,
            [CLAIM_GROUP, CLAIM_VERSION, ns, CLAIMS],
            name,
            created,
            judge,
            timeout,
            f"SandboxClaim {ns}/{name} (warm pool {self.pool})",
            lambda: self.read_claim(name),
        )
        sandbox_name = claim["status"]["sandbox"]["name"]
        sandbox = read_custom(custom, SANDBOX_GROUP, SANDBOX_VERSION, ns, SANDBOXES, sandbox_name)
        meta = sandbox.get("metadata") or {}
        pod_name = (meta.get("annotations") or {}).get(POD_NAME_ANNOTATION) or sandbox_name
        launch = (meta.get("labels") or {}).get(LAUNCH_TYPE_LABEL, "unknown")
        pod = self.read_pod(pod_name)
        remaining = max(1.0, timeout - (time.monotonic() - started))
        self.wait_pod(pod_name, pod, remaining)
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        return (
            Pod(self.core(), ns, pod_name, containers[0].get("name", "sandbox")),
            sandbox_name,
            launch,
        )

    def release(self, handle: str) -> None:
        """Delete the claim (its Sandbox and pod follow); 404 means already gone."""
        delete_quietly(
            lambda: call(
                self.custom().delete_namespaced_custom_object,
                CLAIM_GROUP,
                CLAIM_VERSION,
                self.settings.namespace,
                CLAIMS,
                handle,
                _preload_content=False,
            ),
            f"SandboxClaim {handle}",
        )


def pool_status(access: AgentSandboxSettings, pool: str) -> dict[str, Any]:
    """A warm pool's desired and ready replicas as the API reports them."""
    from kubernetes import client

    from resources.sandboxes.k8s_config import api_client

    custom = client.CustomObjectsApi(api_client(access))
    obj = read_custom(custom, CLAIM_GROUP, CLAIM_VERSION, access.namespace, POOLS, pool)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "replicas": spec.get("replicas"),
        "ready": status.get("readyReplicas", 0),
        "template": (spec.get("sandboxTemplateRef") or {}).get("name"),
    }
