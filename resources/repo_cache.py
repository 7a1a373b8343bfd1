"""A local mirror of every repository the platform has worked on.

Provisioning a workspace is then a local clone sharing the mirror's objects, and a second campaign
on the same repository does not fetch it over the network again (only what is new).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resources.git import run_git
from resources.slug import safe_dirname


class RepoCache:
    """Bare mirrors under one directory, refreshed with `git fetch` and locked per repository."""

    def __init__(self, root: Path, git_env: dict[str, str] | None = None):
        self.root = Path(root)
        # The forge's credentials for fetching (an auth header in git's environment, never in a
        # URL or a config file).
        self.git_env = git_env or {}

    def path_for(self, url: str) -> Path:
        """Where the mirror of `url` lives."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return self.root / f"{safe_dirname(url)}-{digest}.git"

    @contextmanager
    def _locked(self, mirror: Path) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(mirror.with_suffix(".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def mirror(self, url: str) -> Path:
        """The up-to-date mirror of `url` (cloned on first use, fetched afterwards)."""
        mirror = self.path_for(url)
        with self._locked(mirror):
            if (mirror / "HEAD").exists():
                run_git(["fetch", "--prune", "--quiet", "origin"], cwd=mirror, env=self.git_env)
            else:
                tmp = mirror.with_suffix(".partial")
                if tmp.exists():  # left by a crashed clone
                    shutil.rmtree(tmp, ignore_errors=True)
                run_git(["clone", "--mirror", "--quiet", url, str(tmp)], env=self.git_env)
                tmp.rename(mirror)
        return mirror

    def checkout(self, url: str, workspace: Path, commit: str, branch: str | None = None) -> Path:
        """Make `workspace` a clone of `url` at `commit` (on a new `branch` when given)."""
        mirror = self.mirror(url)
        run_git(["clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(workspace)])
        if branch:
            run_git(["checkout", "--quiet", "-B", branch, commit], cwd=workspace)
        else:
            run_git(["checkout", "--quiet", "--detach", commit], cwd=workspace)
        return mirror
