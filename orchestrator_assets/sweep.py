"""Finding and removing what crashed runs left behind: sandbox workspaces and containers."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.sandboxes.docker import (
    DockerUnavailable,
    container_tags,
    docker_client,
    labelled_containers,
)
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
    """One sandbox resource on this machine or engine, and whether its owner is gone."""

    kind: str  # "workspace" or "container"
    ident: str  # a path or a container id
    campaign: str
    target: str
    run_id: str
    orphan: bool
    why: str
    handle: Any = None

    def remove(self) -> None:
        """Delete it (a container is killed first)."""
        if self.kind == "container":
            self.handle.remove(force=True)
        else:
            shutil.rmtree(self.ident, ignore_errors=True)


def _owner_state(tags: dict[str, Any], instance: dg.DagsterInstance) -> tuple[bool, str]:
    """Whether a sandbox's owner is gone, and why we think so."""
    host, pid = tags.get("host"), tags.get("pid")
    if host == socket.gethostname() and pid and str(pid).isdigit() and not _alive(int(pid)):
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_leftovers(
    workspaces_dir: Path, instance: dg.DagsterInstance, *, docker: bool = True
) -> tuple[list[Leftover], str | None]:
    """Every sandbox workspace and labelled container, each judged orphan or in use; and why
    containers could not be listed, if they could not."""
    found: list[Leftover] = []
    for path, marker in leftover_workspaces(workspaces_dir):
        orphan, why = _owner_state(marker, instance) if marker else (True, "no marker file")
        found.append(
            Leftover("workspace", str(path), marker.get("campaign", ""), marker.get("target", ""),
                     marker.get("run_id", ""), orphan, why)
        )  # fmt: skip
    if docker:
        try:
            client = docker_client()
        except DockerUnavailable as exc:
            return found, str(exc)
        for container in labelled_containers(client):
            tags = container_tags(container)
            orphan, why = _owner_state(tags, instance)
            found.append(
                Leftover("container", container.short_id, tags.get("campaign", ""),
                         tags.get("target", ""), tags.get("run_id", ""), orphan, why, container)
            )  # fmt: skip
    return found, None
