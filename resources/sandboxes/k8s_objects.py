"""What the platform's cluster objects look like: their names, labels and annotations, the
manifests both cluster providers create, the pod spec's resource bits, and how a pod's status
reads (ready, never going to be, killed for memory).

Objects carry labels naming campaign, target and run (`org.campaign.*`, as the docker provider's
containers do), so `orchestrator sandboxes prune` can find what a crashed run left behind; a
label value is cut to what Kubernetes allows, so the exact value is kept in an annotation too.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

LABEL = "org.campaign.sandbox"  # on every pod and claim the platform creates: the provider
LABEL_PREFIX = "org.campaign."
# Waiting reasons that will not fix themselves: report them at once instead of at the timeout.
# (ErrImagePull is not one: a registry's hiccup; the kubelet retries, then says BackOff.)
FATAL_WAITING = {
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


def label_value(value: str) -> str:
    """`value` as a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both
    ends); the full value is kept in an annotation of the same key."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def object_metadata(provider: str, tags: Mapping[str, str]) -> tuple[dict, dict]:
    """Labels (to select by) and annotations (the exact values) for a sandbox's objects."""
    labels = {LABEL: provider}
    annotations = {}
    for key, value in tags.items():
        labels[LABEL_PREFIX + key] = label_value(str(value))
        annotations[LABEL_PREFIX + key] = str(value)
    return labels, annotations


def object_manifest(
    api_version: str,
    kind: str,
    name: str,
    namespace: str,
    provider: str,
    tags: Mapping[str, str],
    spec: dict[str, Any],
) -> dict:
    """An object for one sandbox, labelled and annotated with the provider and its tags."""
    labels, annotations = object_metadata(provider, tags)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def object_tags(obj: Mapping[str, Any]) -> dict[str, str]:
    """The campaign, target, run, host and pid an object's annotations (else labels) name."""
    meta = obj.get("metadata") or {}
    found = {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for key, value in source.items():
            if key.startswith(LABEL_PREFIX) and key != LABEL:
                found[key[len(LABEL_PREFIX) :]] = value
    return found


def object_name(kind: str, tags: Mapping[str, str]) -> str:
    """A fresh DNS-1123 name naming the target: `cs-<target>-<random>`."""
    stem = re.sub(r"[^a-z0-9-]", "-", str(tags.get("target", kind)).lower())
    stem = re.sub(r"-+", "-", stem).strip("-")[:40] or kind
    return f"cs-{stem}-{secrets.token_hex(3)}"


def quantity_memory(mb: int) -> str:
    """Megabytes as a Kubernetes quantity."""
    return f"{mb}Mi"


def quantity_cpu(cpus: float) -> str:
    """CPUs as a Kubernetes quantity (millicores)."""
    return f"{max(1, round(cpus * 1000))}m"


def container_resources(memory_mb: int | None, cpus: float | None) -> dict[str, Any]:
    """A container's `resources`: the profile's limits, requested and capped alike."""
    resources: dict[str, str] = {}
    if memory_mb:
        resources["memory"] = quantity_memory(memory_mb)
    if cpus:
        resources["cpu"] = quantity_cpu(cpus)
    return {"requests": resources, "limits": resources} if resources else {}


def judge_pod(pod: Mapping[str, Any]) -> tuple[bool, str | None, str]:
    """Whether a pod is ready; if it never will be, why; and what it is doing now."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    doing = phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            doing = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if terminated:
            why = terminated.get("reason") or "Terminated"
            code = terminated.get("exitCode")
            return False, f"{why} (exit code {code}) {terminated.get('message', '')}".strip(), why
        if waiting.get("reason"):
            doing = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
            if waiting["reason"] in FATAL_WAITING:
                return False, doing, doing
    if phase in ("Failed", "Succeeded"):
        return False, f"{phase}: {status.get('reason', '')} {status.get('message', '')}", phase
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return phase == "Running" and ready, None, doing


def oom_killed(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's container was killed for memory, now or in its last state."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            if (state.get("terminated") or {}).get("reason") == "OOMKilled":
                return True
    return False
