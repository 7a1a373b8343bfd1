"""Workspaces as directories on this host: what the local and docker providers share.

Each sandbox gets `<root>/<label>-XXXX/workspace` plus a `sandbox.json` beside it that says which
campaign, target and run it belongs to, so a sweep can find what a crashed run left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = "sandbox.json"


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
