"""What the forges' discovery modules share: a selector's filters and the list it returns.

`github_discovery`, `gitlab_discovery` and `bitbucket_discovery` each list repositories their own
way (organisations, groups, workspaces, searches); what a selector then keeps is the same on every
host: archived repositories and forks only when asked, all of the `topics`, the `name_pattern`
glob and the `language` (where the host's selector has them). The result is each repository
once, sorted by full name.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Protocol

from resources.forges.base import DiscoveredRepo


class Filters(Protocol):
    """The filters every host's selector has (`topics` and `language` are read where it has
    them: Bitbucket has neither, GitLab's listings carry no language)."""

    include_archived: bool
    include_forks: bool
    name_pattern: str | None


def matches(repo: DiscoveredRepo, selector: Filters) -> bool:
    """Whether `selector`'s filters keep `repo`: archived ones and forks only when included, all
    of its topics (any case), its name pattern (a glob, any case, on the last part of the full
    name, or on the whole full name when the pattern has a '/'), its language (any case)."""
    if repo.archived and not selector.include_archived:
        return False
    if repo.fork and not selector.include_forks:
        return False
    topics: list[str] = getattr(selector, "topics", None) or []
    if topics:
        have = {t.lower() for t in repo.topics}
        if not all(t.lower() in have for t in topics):
            return False
    if selector.name_pattern:
        pattern = selector.name_pattern.lower()
        subject = repo.full_name if "/" in pattern else repo.full_name.rsplit("/", 1)[-1]
        if not fnmatchcase(subject.lower(), pattern):
            return False
    language: str | None = getattr(selector, "language", None)
    return not (language and (repo.language or "").lower() != language.lower())


def picked(found: Iterable[DiscoveredRepo], selector: Filters) -> list[DiscoveredRepo]:
    """The repositories of `found` that `selector` keeps, each once, sorted by full name (any
    case)."""
    unique = {repo.full_name: repo for repo in found if matches(repo, selector)}
    return [unique[name] for name in sorted(unique, key=str.lower)]
