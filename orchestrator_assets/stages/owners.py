"""Owners as reviewers: who a target's pull request asks to review, and who it is assigned to.

Besides the campaign's fixed `pull_request.reviewers`, `team_reviewers` and `assignees`, a
campaign with `pull_request.reviewers_from: codeowners` asks the owners of the changed files:
the target's CODEOWNERS file (`.github/CODEOWNERS`, `CODEOWNERS` or `docs/CODEOWNERS`, the first
that exists, as GitHub and GitLab look for it) is read from the change's base commit in the
repository cache (the forge is not asked). For each changed file the last matching rule wins, as
GitHub documents; `@org/team` owners become team reviewers, `@user` owners users, and e-mail
owners are skipped (no forge asks a reviewer by address). GitLab's `[Section]` headers are
skipped: their rules count as one list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.records import ChangeRecord
from orchestrator_assets.stages.workbench import Log, Workbench, quiet
from resources.git import GitError, run_git

CODEOWNERS_PATHS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")


@dataclass
class Owners:
    """Who owns a set of files: users and teams (`org/team`), in the order first seen."""

    users: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)

    def add(self, owner: str) -> None:
        """Add one CODEOWNERS owner: `@user`, `@org/team`; an e-mail address is skipped."""
        if not owner.startswith("@"):
            return  # an e-mail address (or junk): no forge requests a review by address
        name = owner[1:]
        bucket = self.teams if "/" in name else self.users
        if name and name not in bucket:
            bucket.append(name)


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    """A CODEOWNERS (gitignore-style) pattern as a regex over repository-relative paths.

    A pattern with a slash before its end is anchored at the root, one without matches at any
    depth; a match of a directory owns everything under it, except that `dir/*` owns only the
    files directly in `dir` (GitHub's documented exception).
    """
    anchored = "/" in pattern.rstrip("/")
    directory_only = pattern.endswith("/")
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("/**", i) and i + 3 == len(body):
            out.append("/.*")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        elif body[i] == "\\" and i + 1 < len(body):
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(body[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    if directory_only:
        suffix = "/.*"
    elif pattern.endswith("/*"):
        suffix = ""
    else:
        suffix = "(?:/.*)?"
    return re.compile(f"^{prefix}{''.join(out)}{suffix}$")


def parse_codeowners(text: str) -> list[tuple[str, list[str]]]:
    """The rules of a CODEOWNERS file in order: (pattern, owners); comments, blank lines and
    GitLab section headers skipped. A rule without owners is kept: it un-owns its files."""
    rules = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line or line.startswith(("[", "^[")):
            continue
        pattern, *owners = line.split()
        rules.append((pattern, owners))
    return rules


def owners_of(rules: list[tuple[str, list[str]]], files: list[str]) -> Owners:
    """The owners of `files`: for each file the last rule that matches it."""
    found = Owners()
    for path in files:
        matching = [owners for pattern, owners in rules if _regex(pattern).match(path)]
        for owner in matching[-1] if matching else []:
            found.add(owner)
    return found


def read_codeowners(bench: Workbench, change: ChangeRecord) -> str | None:
    """The target's CODEOWNERS at the change's base commit, from the repository cache."""
    if not change.clone_url or not change.base_sha:
        return None
    mirror = bench.cache.path_for(change.clone_url)
    if not (mirror / "HEAD").exists():  # made on another machine: this one has no mirror
        return None
    for path in CODEOWNERS_PATHS:
        try:
            return run_git(["show", f"{change.base_sha}:{path}"], mirror)
        except GitError:
            continue
    return None


@dataclass
class ReviewRequests:
    """Who a pull request asks and is assigned to: the draft's reviewer fields."""

    reviewers: list[str]
    team_reviewers: list[str]
    assignees: list[str]

    def draft_fields(self) -> dict[str, list[str]]:
        """As `PullRequestDraft` keyword arguments."""
        return {
            "reviewers": self.reviewers,
            "team_reviewers": self.team_reviewers,
            "assignees": self.assignees,
        }


def review_requests(
    spec: CampaignSpec, target_key: str, change: ChangeRecord, bench: Workbench, log: Log = quiet
) -> ReviewRequests:
    """The campaign's fixed reviewers and assignees, plus the changed files' code owners when
    the campaign asks for them (`pull_request.reviewers_from: codeowners`)."""
    template = spec.pull_request
    users, teams = list(template.reviewers), list(template.team_reviewers)
    if template.reviewers_from == "codeowners":
        text = read_codeowners(bench, change)
        if text is None:
            at = (change.base_sha or "")[:8]
            log(f"{target_key}: no CODEOWNERS at {at}; the fixed reviewers only")
        else:
            owners = owners_of(parse_codeowners(text), change.files)
            users += [u for u in owners.users if u not in users]
            teams += [t for t in owners.teams if t not in teams]
            if owners.users or owners.teams:
                log(f"{target_key}: code owners asked to review: "
                    f"{', '.join(['@' + o for o in owners.users + owners.teams])}")  # fmt: skip
    return ReviewRequests(users, teams, list(template.assignees))
