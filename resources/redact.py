"""Redaction of secrets: the one function every path to storage goes through."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)
MASK = "***"


# Secrets the process holds outside its environment (a GitHub App's installation tokens, minted
# in memory): redacted wherever the environment's are.
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Redact `value` from now on wherever the environment's secrets are (`secret_values()`)."""
    if len(value) >= 6:
        _registered.add(value)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are secrets, and the secrets
    registered with `register_secret` (longest first)."""
    if env is None:
        found = _process_secrets()
        if _registered:
            found = sorted(set(found) | _registered, key=len, reverse=True)
        return found
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 6}
    return sorted(values, key=len, reverse=True)


# The process environment's secrets, remembered with the raw environment they came from: every
# log line and record is redacted, and reading os.environ decodes every variable each time (a
# measurable share of a run's CPU at thousands of lines). The raw bytes are compared instead,
# so a variable set or changed later (os.environ, monkeypatch) is seen at the next call.
_last: tuple[tuple, list[str]] = ((), [])


def _process_secrets() -> list[str]:
    global _last
    raw = getattr(os.environ, "_data", None)
    if raw is None:  # not CPython's os.environ: read it as a mapping
        values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}
        return sorted(values, key=len, reverse=True)
    snapshot = tuple(raw.items())
    if snapshot != _last[0]:
        values = {
            os.fsdecode(v)
            for k, v in snapshot
            if SECRET_NAME.search(os.fsdecode(k)) and len(os.fsdecode(v)) >= 6
        }
        _last = (snapshot, sorted(values, key=len, reverse=True))
    return list(_last[1])


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """`value` (text, or lists and dicts of it) with every secret replaced by `***`."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


def redact_files(root: Path, secrets: list[str] | None = None) -> int:
    """Mask every secret in the files under `root` in place; the number of files changed.

    For what other programs write where the platform keeps it (the agent CLI's own session files
    in its home, which `--resume` reads back): the conversation keeps its shape, the secret does
    not stay on disk."""
    secrets = secret_values() if secrets is None else secrets
    needles = [(s.encode(), MASK.encode()) for s in secrets]
    changed = 0
    if not needles or not root.exists():
        return 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        cleaned = data
        for needle, mask in needles:
            cleaned = cleaned.replace(needle, mask)
        if cleaned != data:
            path.write_bytes(cleaned)
            changed += 1
    return changed
