"""Workspaces as directories on this host: what every provider's sandboxes share.

Each sandbox gets `<root>/<label>-XXXX/workspace` plus a `sandbox.json` beside it that says which
campaign, target and run it belongs to, so a sweep can find what a crashed run left behind. Every
provider's sandbox is a `HostSandbox`: the platform clones and commits in the host workspace, and
image transformations (`run_image`) run on the Docker engine with it mounted, whatever the
provider; the provider says how a command runs (`run`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resources.sandboxes.base import ExecRequest, ExecResult, Sandbox

MARKER = "sandbox.json"


class HostSandbox(Sandbox):
    """A sandbox whose workspace is a directory on this host. Its provider has `containers`
    (a `docker.EngineConnection`), which runs `run_image` and is cleaned up by `kill_all`."""

    image: str | None = None

    def __init__(self, provider: Any, workspace: Path, tags: dict[str, str]):
        self._provider = provider
        self._workspace = workspace
        self.tags = tags
        self.readable_paths: list[Path] = []  # extra host paths mounted read-only (git mirrors)
        self.writable_paths: list[Path] = []  # extra host paths mounted read-write (agent home)

    @property
    def workspace(self) -> Path:
        """The workspace as a host path."""
        return self._workspace

    def run(self, request: ExecRequest) -> ExecResult:
        """Run one command in the workspace (each provider's own way)."""
        raise NotImplementedError

    def run_image(self, image: str, args: Sequence[str], **options: Any) -> ExecResult:
        """Run a container image on the Docker engine with this workspace mounted at /workspace
        (`entrypoint` and `exec`'s options)."""
        entrypoint = options.pop("entrypoint", None)
        request = ExecRequest(list(args), **options)
        return self._provider.containers.run(self, image, request, entrypoint)

    def kill_all(self) -> None:
        """Kill every command still running for this sandbox (its image runs here)."""
        self._provider.containers.kill_owned_by(self)


class WorkspaceProvider:
    """Opens sandboxes whose workspace is a fresh directory under `root`, and cleans them up on
    success, failure and cancellation. Subclasses say what a sandbox is (`_new_sandbox`)."""

    provider_name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    def _new_sandbox(self, workspace: Path, tags: dict[str, str]) -> Any:
        raise NotImplementedError

    @contextmanager
    def open(self, label: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
        """A new sandbox with an empty workspace; removed when the context exits."""
        self.root.mkdir(parents=True, exist_ok=True)
        parent = Path(tempfile.mkdtemp(prefix=f"{label[:40]}-", dir=self.root))
        workspace = parent / "workspace"
        workspace.mkdir()
        # Host and process too: a run killed outright may still look "started" to Dagster.
        tags = {**(tags or {}), "host": socket.gethostname(), "pid": str(os.getpid())}
        marker = {**tags, "provider": self.provider_name, "created": time.time()}
        (parent / MARKER).write_text(json.dumps(marker))
        sandbox = self._new_sandbox(workspace, tags)
        with self._lock:
            self._open.add(sandbox)
        try:
            yield sandbox
        finally:
            sandbox.kill_all()
            with self._lock:
                self._open.discard(sandbox)
            shutil.rmtree(parent, ignore_errors=True)

    def close_all(self) -> None:
        """Kill every running command and remove every open sandbox (run cancelled)."""
        with self._lock:
            sandboxes = list(self._open)
        for sandbox in sandboxes:
            sandbox.kill_all()
            shutil.rmtree(sandbox.workspace.parent, ignore_errors=True)
            with self._lock:
                self._open.discard(sandbox)


def leftover_workspaces(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every sandbox directory under `root` with what its marker says (empty when it has none)."""
    found = []
    if not Path(root).is_dir():
        return found
    for parent in sorted(Path(root).iterdir()):
        if not parent.is_dir():
            continue
        try:
            marker = json.loads((parent / MARKER).read_text())
        except (OSError, ValueError):
            marker = {}
        found.append((parent, marker))
    return found
