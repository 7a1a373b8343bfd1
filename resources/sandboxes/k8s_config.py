"""How a profile describes its cluster sandboxes, and how the platform reaches the cluster.

`KubernetesSettings` is a profile's `kubernetes:` section (one pod per sandbox),
`AgentSandboxSettings` its `agent_sandbox:` section (one SandboxClaim per sandbox). Both are
plain pydantic models so that `orchestrator_assets/spec/profiles.py` validates them with the rest of
the profile and names the field of every mistake.

Credentials are chosen automatically: inside a pod (KUBERNETES_SERVICE_HOST is set) the pod's
service account, unless the profile names a kubeconfig; else the kubeconfig the profile names,
else KUBECONFIG, else ~/.kube/config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubernetesUnavailable(RuntimeError):
    """No credentials for a cluster could be loaded; the message says what was tried."""


def _dns_label(value: str | None) -> str | None:
    if value is not None and (len(value) > 63 or not DNS_LABEL.match(value)):
        raise ValueError(
            f"{value!r} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)"
        )
    return value


class Toleration(BaseModel):
    """One pod toleration, as in the pod spec (snake_case here)."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    def to_api(self) -> dict[str, Any]:
        """The toleration as the Kubernetes API spells it."""
        out = {
            "key": self.key,
            "operator": self.operator,
            "value": self.value,
            "effect": self.effect,
            "tolerationSeconds": self.toleration_seconds,
        }
        return {k: v for k, v in out.items() if v is not None}


class ClusterAccess(BaseModel):
    """Which cluster and namespace; shared by both cluster providers."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(default="default", description="namespace sandboxes are created in")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig file (default: in-cluster, KUBECONFIG, ~/.kube)"
    )
    context: str | None = Field(default=None, description="kubeconfig context (default: current)")
    ready_timeout_s: int = Field(
        default=300, gt=0, description="how long a sandbox may take to become ready"
    )

    _ns = field_validator("namespace")(lambda v: _dns_label(v))

    def where(self) -> str:
        """The cluster and namespace, for messages."""
        ctx = f"context {self.context}" if self.context else "current context"
        source = self.kubeconfig or ("in-cluster" if in_cluster() else "kubeconfig")
        return f"namespace {self.namespace} ({source}, {ctx})"


class KubernetesSettings(ClusterAccess):
    """A profile's `kubernetes:` section: where and how its pods run."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    service_account: str | None = Field(
        default=None, description="the pod's service account (default: none mounted)"
    )
    runtime_class: str | None = Field(
        default=None, description="RuntimeClass of the pod, e.g. gvisor (default: the cluster's)"
    )
    active_deadline_s: int = Field(
        default=6 * 3600,
        gt=0,
        description="the cluster ends a pod older than this even if the platform never does",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None

    _names = field_validator("service_account", "runtime_class")(lambda v: _dns_label(v))


class AgentSandboxSettings(ClusterAccess):
    """A profile's `agent_sandbox:` section: which SandboxTemplate (through its warm pool)."""

    template: str | None = Field(
        default=None, description="SandboxTemplate name (default: the profile's name)"
    )
    warm_pool: str | None = Field(
        default=None, description="SandboxWarmPool the claims name (default: the template's name)"
    )

    _names = field_validator("template", "warm_pool")(lambda v: _dns_label(v))


def in_cluster() -> bool:
    """True inside a pod, where the service account's credentials are mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client(access: ClusterAccess) -> Any:
    """A Kubernetes ApiClient for `access`: in-cluster credentials inside a pod (unless a
    kubeconfig is named), else the kubeconfig. Raises KubernetesUnavailable with what was tried."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if in_cluster() and not access.kubeconfig:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise KubernetesUnavailable(f"in-cluster credentials: {exc}") from None
        return client.ApiClient(configuration)
    path = access.kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config"))
    try:
        return config.new_client_from_config(
            config_file=os.path.expanduser(path), context=access.context, persist_config=False
        )
    except (ConfigException, OSError, TypeError) as exc:
        raise KubernetesUnavailable(
            f"cannot load kubeconfig {path}"
            f"{' context ' + access.context if access.context else ''}: {exc}"
        ) from None
