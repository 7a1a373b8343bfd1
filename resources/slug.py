"""File-system-safe names for things keyed by URL."""

from __future__ import annotations

import re


def safe_dirname(url: str, limit: int = 60) -> str:
    """A readable directory name derived from a URL or path (not unique on its own)."""
    tail = url.rstrip("/").split("/")[-2:]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(tail)).strip("-.")
    return (name or "repo")[:limit]
