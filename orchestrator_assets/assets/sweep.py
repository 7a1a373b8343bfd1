"""Finding and removing what crashed runs left behind: workspaces, containers, pods and claims.

Every sandbox resource the platform creates names its campaign, target and run, and the host and
process that made it (a marker file beside a workspace; labels on containers; labels and
annotations on pods and SandboxClaims). A resource whose process on this host is gone, or whose
run is over or unknown to this instance, is an orphan; one of a live run is left alone. A
container labelled with another installation's workspaces folder is not looked at: its run is
in another instance, so it would always look orphaned here.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.sandboxes.docker import (
    INSTALLATION_TAG,
    DockerUnavailable,
    container_tags,
    docker_client,
    labelled_containers,
)
from resources.sandboxes.k8s_config import ClusterAccess
from resources.sandboxes.workspaces import leftover_workspaces

ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


@dataclass
class Leftover:
    """One sandbox resource on this machine, engine or cluster, and whether its owner is gone."""

    kind: str  # "workspace", "container", "pod" or "claim"
    ident: str  # a path, a container id, or namespace/name
    campaign: str
    target: str
    run_id: str
    orphan: bool
    why: str
    handle: Any = None  # the container, or a function that deletes the pod or claim

    def remove(self) -> None:
        """Delete it (a container is killed first; a claim takes its Sandbox and pod along)."""
        if self.kind == "container":
            self.handle.remove(force=True)
        elif callable(self.handle):
            self.handle()
        else:
            shutil.rmtree(self.ident, ignore_errors=True)


@dataclass(frozen=True)
class Cluster:
    """Where to look for one cluster provider's pods or claims: the provider and its access."""

    provider: str  # "kubernetes" or "agent-sandbox"
    access: ClusterAccess

    def key(self) -> tuple:
        """What makes two profiles' clusters the same place to look."""
        a = self.access
        return (self.provider, a.kubeconfig, a.context, a.namespace)


def _owner_state(tags: dict[str, Any], instance: dg.DagsterInstance) -> tuple[bool, str]:
    """Whether a sandbox's owner is gone, and why we think so."""
    host, pid = tags.get("host"), tags.get("pid")
    if host == socket.gethostname() and pid and str(pid).isdigit() and not process_alive(int(pid)):
        return True, f"its process {pid} is gone"
    run_id = tags.get("run_id")
    if not run_id:
        return False, "no run recorded; its process may still be working"
    run = instance.get_run_by_id(run_id)
    if run is None:
        return True, f"run {run_id[:8]} is not in this instance"
    if run.status in ACTIVE:
        return False, f"run {run_id[:8]} is {run.status.value.lower()}"
    return True, f"run {run_id[:8]} is {run.status.value.lower()}"


def process_alive(pid: int) -> bool:
    """Whether process `pid` on this machine still runs (a zombie, not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def cluster_leftovers(
    cluster: Cluster, instance: dg.DagsterInstance
) -> tuple[list[Leftover], str | None]:
    """The platform's pods (kubernetes) or SandboxClaims (agent-sandbox) in one namespace."""
    from resources.sandboxes import agent_sandbox as ags
    from resources.sandboxes.k8s_api import api_error, call, json_body
    from resources.sandboxes.k8s_config import KubernetesUnavailable
    from resources.sandboxes.k8s_objects import LABEL, object_tags

    access = cluster.access
    ns = access.namespace
    try:
        from kubernetes import client

        from resources.sandboxes.k8s_config import api_client

        api = api_client(access)
        selector = f"{LABEL}={cluster.provider}"
        if cluster.provider == "kubernetes":
            core = client.CoreV1Api(api)
            listed = call(
                core.list_namespaced_pod, ns, label_selector=selector, _preload_content=False
            )
            kind = "pod"

            def deleter(name: str) -> Callable[[], None]:
                return lambda: call(
                    core.delete_namespaced_pod,
                    name,
                    ns,
                    grace_period_seconds=0,
                    _preload_content=False,
                )
        else:
            custom = client.CustomObjectsApi(api)
            listed = call(
                custom.list_namespaced_custom_object,
                ags.CLAIM_GROUP,
                ags.CLAIM_VERSION,
                ns,
                ags.CLAIMS,
                label_selector=selector,
                _preload_content=False,
            )
            kind = "claim"

            def deleter(name: str) -> Callable[[], None]:
                return lambda: call(
                    custom.delete_namespaced_custom_object,
                    ags.CLAIM_GROUP,
                    ags.CLAIM_VERSION,
                    ns,
                    ags.CLAIMS,
                    name,
                    _preload_content=False,
                )
    except KubernetesUnavailable as exc:
        return [], f"{cluster.provider} in {access.where()}: {exc}"
    except Exception as exc:
        return [], f"{cluster.provider} in {access.where()}: {api_error(exc)}"
    found = []
    for obj in json_body(listed).get("items") or []:
        tags = object_tags(obj)
        name = obj["metadata"]["name"]
        orphan, why = _owner_state(tags, instance)
        found.append(
            Leftover(
                kind,
                f"{ns}/{name}",
                tags.get("campaign", ""),
                tags.get("target", ""),
                tags.get("run_id", ""),
                orphan,
                why,
                deleter(name),
            )
        )
    return found, None


def find_leftovers(
    workspaces_dir: Any,
    instance: dg.DagsterInstance,
    *,
    docker: bool = True,
    clusters: Iterable[Cluster] = (),
) -> tuple[list[Leftover], str | None]:
    """Every sandbox workspace, labelled container, pod and claim, each judged orphan or in use;
    and what could not be looked at, if anything."""
    found: list[Leftover] = []
    problems: list[str] = []
    for path, marker in leftover_workspaces(workspaces_dir):
        orphan, why = _owner_state(marker, instance) if marker else (True, "no marker file")
        found.append(
            Leftover(
                "workspace",
                str(path),
                marker.get("campaign", ""),
                marker.get("target", ""),
                marker.get("run_id", ""),
                orphan,
                why,
            )
        )
    if docker:
        try:
            client = docker_client()
        except DockerUnavailable as exc:
            problems.append(f"containers not checked: {exc}")
        else:
            ours = str(Path(workspaces_dir).resolve())
            for container in labelled_containers(client):
                tags = container_tags(container)
                if tags.get(INSTALLATION_TAG, ours) != ours:
                    continue  # another installation's, on the same engine (older ones: no label)
                orphan, why = _owner_state(tags, instance)
                found.append(
                    Leftover(
                        "container",
                        container.short_id,
                        tags.get("campaign", ""),
                        tags.get("target", ""),
                        tags.get("run_id", ""),
                        orphan,
                        why,
                        container,
                    )
                )
    seen = set()
    for cluster in clusters:
        if cluster.key() in seen:
            continue
        seen.add(cluster.key())
        more, problem = cluster_leftovers(cluster, instance)
        found += more
        if problem:
            problems.append(f"not checked: {problem}")
    return found, "; ".join(problems) or None


def profile_clusters(profiles: Any) -> list[Cluster]:
    """The clusters the profiles' kubernetes and agent-sandbox providers use."""
    clusters = []
    for profile in profiles.profiles.values():
        if profile.provider == "kubernetes":
            clusters.append(Cluster("kubernetes", profile.kubernetes))
        elif profile.provider == "agent-sandbox":
            clusters.append(Cluster("agent-sandbox", profile.agent_sandbox))
    return clusters
