"""Readable, Dagster-safe names: target slugs (partition keys) and campaign identifiers."""

from __future__ import annotations

import re
from urllib.parse import urlparse

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
CAMPAIGN_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def checked_name(value: str, what: str) -> str:
    """`value` when it is a valid name of a campaign or verifier (`what`), which Dagster's asset
    and check names are made from; a ValueError saying what a name may be otherwise."""
    if not CAMPAIGN_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what} name: a slug of lowercase letters, digits, '_' and "
            "'-', starting with a letter, at most 63 characters"
        )
    return value


def _clean(part: str) -> str:
    part = part.lower()
    if part.endswith(".git"):
        part = part[:-4]
    part = re.sub(r"[^a-z0-9_.-]+", "-", part).strip("-.")
    return part


def target_slug(repo: str) -> str:
    """The partition key for a repository: `owner__name` from a URL or a local path.

    `https://github.com/acme/billing.git` and `/srv/forge/acme/billing.git` both give
    `acme__billing`; the full URL stays in metadata.
    """
    parsed = urlparse(repo)
    path = parsed.path if parsed.scheme else repo
    if ":" in repo and not parsed.scheme and "@" in repo.split(":", 1)[0]:
        path = repo.split(":", 1)[1]  # scp-like git@host:owner/name.git
    parts = [_clean(p) for p in re.split(r"[/\\]+", path) if p and p not in (".", "..")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"cannot derive a target name from {repo!r}")
    if parsed.scheme in ("http", "https"):
        # Bitbucket Data Center's web URLs: /projects/PROJ/repos/REPO[/browse...] and
        # /users/NAME/repos/REPO name the project (or user) and the repository
        for i in range(len(parts) - 3):
            if parts[i] in ("projects", "users") and parts[i + 2] == "repos":
                return f"{parts[i + 1]}__{parts[i + 3]}"
    slug = "__".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
    return slug


def slug_problem(slug: str) -> str | None:
    """Why `slug` cannot be a partition key, or None when it can."""
    if not SLUG_RE.match(slug):
        return (
            f"{slug!r} is not a valid target slug: use lowercase letters, digits, '_', '-' and "
            "'.', starting with a letter or digit"
        )
    if "..." in slug:
        return f"{slug!r} contains '...', which the Dagster UI reads as a partition range"
    if len(slug) > 120:
        return f"{slug!r} is longer than 120 characters"
    return None


def dagster_name(name: str) -> str:
    """A campaign or verifier name as a Dagster identifier (`[A-Za-z0-9_]+`)."""
    return name.replace("-", "_")
