"""The environment cache: what setup produced, kept on disk under a key of what determines it.

A hit restores the cached paths (a virtualenv, installed dependencies, files setup generated)
into a new workspace instead of running setup again. Entries are evicted least-recently-used
beyond a size limit.

Several runs (threads of one process, or other processes on the same data folder) use one cache
at once, so every change to it is atomic or locked:
- an entry appears whole: it is built in a private temporary folder and renamed into place;
- a restore holds a shared lock on its entry (`.locks/<key>`) while it copies, and a prune
  evicts only an entry whose exclusive lock it gets without waiting (one being restored is in
  use, so it stays); an evicted entry is first renamed aside, so no reader sees it half deleted;
- every write of an entry's metadata goes through a temporary file of its own;
- prunes run one at a time (`.locks/.prune`), so two never count the same entry twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

DEFAULT_MANIFESTS = [
    "pyproject.toml", "setup.cfg", "setup.py", "requirements*.txt", "*.lock", "Pipfile.lock",
]  # fmt: skip
LOCKS = ".locks"  # under the cache root; names starting with "." are never entries


class CacheEntry(BaseModel):
    """One cached environment."""

    key: str
    size_bytes: int
    created: float
    last_used: float
    paths: list[str]
    inputs: dict


def manifest_digest(workspace: Path, patterns: list[str]) -> str:
    """A digest of the dependency manifests found at the workspace's top level."""
    digest = hashlib.sha256()
    for pattern in sorted(patterns):
        for path in sorted(workspace.glob(pattern)):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def outermost(paths: list[str]) -> list[str]:
    """Workspace-relative paths, normalized (`./.venv/` is `.venv`), without duplicates and
    without any inside another of them (`.venv` covers `.venv/bin`), in their first order. The
    workspace itself (`.`) is no path to cache: it would carry its `.git` along."""
    cleaned: list[str] = []
    for path in paths:
        path = posixpath.normpath(path.strip("/")) if path.strip("/") else "."
        if path != "." and path not in cleaned:
            cleaned.append(path)
    return [p for p in cleaned if not inside(p, [o for o in cleaned if o != p])]


def inside(path: str, roots: list[str]) -> bool:
    """True when workspace-relative `path` is one of `roots` or lies under one of them."""
    return any(path == root or path.startswith(root + "/") for root in roots)


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def _safe(rel: str) -> bool:
    return bool(rel) and not rel.startswith("/") and ".." not in Path(rel).parts


class EnvCache:
    """Cached environments under `root`, at most `max_bytes` in all."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes

    @staticmethod
    def key(inputs: dict) -> str:
        """The cache key of everything that determines what setup produces."""
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]

    def restore(self, key: str, workspace: Path) -> CacheEntry | None:
        """Copy a cached environment into the workspace; None when there is none."""
        if not (self.root / key / "entry.json").exists():
            return None  # the common miss, without creating a lock file for it
        with _locked(self.root / LOCKS / key, exclusive=False):  # waits out an eviction
            # Checked again under the lock: a prune may have evicted it meanwhile.
            meta = self.root / key / "entry.json"
            try:
                entry = CacheEntry.model_validate_json(meta.read_text())
            except (OSError, ValueError):
                return None
            if not entry.paths:
                return None
            for rel in entry.paths:
                if not _safe(rel):
                    continue
                src, dest = self.root / key / "files" / rel, workspace / rel
                if src.is_dir() and not src.is_symlink():
                    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest, follow_symlinks=False)
            entry.last_used = time.time()
            _write(meta, entry)
        return entry

    def store(self, key: str, workspace: Path, paths: list[str], inputs: dict) -> CacheEntry | None:
        """Keep the given workspace paths (those that exist) under `key`, then enforce the
        size limit. None when setup produced none of them: nothing to restore later."""
        paths = [p for p in outermost(paths) if _safe(p)]
        if not any((workspace / rel).exists() or (workspace / rel).is_symlink() for rel in paths):
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=self.root))
        kept = []
        for rel in paths:
            src = workspace / rel
            if not src.exists() and not src.is_symlink():
                continue
            dest = tmp / "files" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, dest, symlinks=True)
            else:
                shutil.copy2(src, dest, follow_symlinks=False)
            kept.append(rel)
        now = time.time()
        entry = CacheEntry(
            key=key, size_bytes=_size(tmp / "files") if kept else 0, created=now, last_used=now,
            paths=kept, inputs=inputs,
        )  # fmt: skip
        _write(tmp / "entry.json", entry)
        try:
            os.rename(tmp, self.root / key)
        except OSError:  # another run stored the same key first
            shutil.rmtree(tmp, ignore_errors=True)
        self.prune(self.max_bytes)
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every cached environment, least recently used first."""
        found = []
        for meta in self.root.glob("*/entry.json") if self.root.exists() else []:
            if meta.parent.name.startswith("."):  # being stored, being evicted, or the locks
                continue
            try:
                found.append(CacheEntry.model_validate_json(meta.read_text()))
            except (OSError, ValueError):  # evicted meanwhile, or not an entry
                continue
        return sorted(found, key=lambda e: e.last_used)

    def prune(self, max_bytes: int) -> list[CacheEntry]:
        """Evict least-recently-used entries until the cache is at most `max_bytes`. An entry
        being restored right now is in use and stays."""
        if not self.root.exists():
            return []
        evicted = []
        with _locked(self.root / LOCKS / ".prune", exclusive=True):
            entries = self.entries()
            total = sum(e.size_bytes for e in entries)
            for entry in entries:
                if total <= max_bytes:
                    break
                if self._evict(entry.key):
                    total -= entry.size_bytes
                    evicted.append(entry)
        return evicted

    def _evict(self, key: str) -> bool:
        """Remove one entry unless a restore holds it; True when it went."""
        aside = self.root / f".evicted-{key[:8]}-{uuid.uuid4().hex[:8]}"
        with _locked(self.root / LOCKS / key, exclusive=True, wait=False) as held:
            if not held:
                return False
            try:
                os.rename(self.root / key, aside)
            except FileNotFoundError:
                return False
            # The lock file goes with its entry; a restore that opened it meanwhile sees it
            # unlinked once it gets the lock and takes the new one (see `_locked`).
            (self.root / LOCKS / key).unlink(missing_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        return True


@contextmanager
def _locked(path: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold an flock on `path` (shared or exclusive); yields False when `wait` is off and
    someone else holds a conflicting lock. Works across processes and across threads (each
    holder opens its own file description)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        # An eviction may have unlinked the file while we waited for it: a lock on that old
        # file guards nothing, so lock the file now at the path instead.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, entry: CacheEntry) -> None:
    """Replace `path` atomically, through a temporary file no other writer shares."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(entry.model_dump_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
