"""The environment cache: what setup produced, kept on disk under a key of what determines it.

A hit restores the cached paths (a virtualenv, installed dependencies) into a new workspace
instead of running setup again. Entries are evicted least-recently-used beyond a size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

DEFAULT_MANIFESTS = [
    "pyproject.toml", "setup.cfg", "setup.py", "requirements*.txt", "*.lock", "Pipfile.lock",
]  # fmt: skip


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


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


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
        entry_dir = self.root / key
        meta = entry_dir / "entry.json"
        if not meta.exists():
            return None
        entry = CacheEntry.model_validate_json(meta.read_text())
        if not entry.paths:
            return None
        for rel in entry.paths:
            src, dest = entry_dir / "files" / rel, workspace / rel
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
            try:
                found.append(CacheEntry.model_validate_json(meta.read_text()))
            except ValueError:
                continue
        return sorted(found, key=lambda e: e.last_used)

    def prune(self, max_bytes: int) -> list[CacheEntry]:
        """Evict least-recently-used entries until the cache is at most `max_bytes`."""
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        evicted = []
        for entry in entries:
            if total <= max_bytes:
                break
            shutil.rmtree(self.root / entry.key, ignore_errors=True)
            total -= entry.size_bytes
            evicted.append(entry)
        return evicted


def _write(path: Path, entry: CacheEntry) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(entry.model_dump_json())
    tmp.replace(path)
