"""The forge interface: the verbs every code host implements to carry a PR from branch to end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

MERGE_METHODS = ("merge", "squash", "rebase")  # what merge_pull_request(method=...) takes

# Every campaign branch lives under this prefix, and every forge refuses to push anything else:
# fixed (not a setting) so that no configuration can point a campaign at another branch.
BRANCH_PREFIX = "campaign/"


class ForgeError(RuntimeError):
    """The forge refused or failed an operation; the message says which and why."""


def refuse_push(subject: str, branch: str, default_branch: str | None = None) -> None:
    """Refuse (a ForgeError) a push to `branch` unless it is a campaign branch: under
    `BRANCH_PREFIX` and not the repository's `default_branch` (when known), which a repository
    whose default branch happens to live under the prefix would otherwise let a campaign take."""
    if not branch.startswith(BRANCH_PREFIX):
        raise ForgeError(f"{subject}: refusing to push to {branch!r}: not a campaign branch")
    if branch == default_branch:
        raise ForgeError(
            f"{subject}: refusing to push to {branch!r}: the default branch is not a campaign "
            "branch"
        )


@contextmanager
def counting_requests(forge: object) -> Iterator[Any]:
    """While inside, the calling thread's API requests to `forge` are counted: yields the tally
    (`requests`, `writes`, `not_modified`), or None for a forge that does not count (local)."""
    counting = getattr(forge, "counting", None)
    if not callable(counting):
        yield None
        return
    with counting() as tally:
        yield tally


class ResolvedRepo(BaseModel):
    """A target repository as the forge sees it now."""

    url: str
    clone_url: str
    base_branch: str
    base_sha: str
    branch_sha: str | None = Field(default=None, description="the campaign branch's sha, if any")


class RepoLocation(BaseModel):
    """Where a target repository lives on its forge: what `resolve` reads before any branch."""

    url: str
    subject: str = Field(description="how errors name it: OWNER/NAME, a project path, a path")
    clone_url: str
    default_branch: str | None = None
    holder: str = Field(default="repository", description="what the forge calls it (project)")


def resolved_repo(
    location: RepoLocation, base: str | None, branch: str, sha_of: Callable[[str], str | None]
) -> ResolvedRepo:
    """What `resolve(url, base, branch)` returns, the same on every forge and for the mirror
    (`RepoCache.resolve`): the base branch is `base`, else the location's default branch (a
    ForgeError naming it when there is none); its sha and then `branch`'s are read with
    `sha_of` (None: absent), and a base branch that does not exist is a ForgeError."""
    base_branch = base or location.default_branch
    if not base_branch:
        raise ForgeError(
            f"{location.subject}: {location.holder} has no default branch (empty repository?)"
        )
    base_sha = sha_of(base_branch)
    if not base_sha:
        raise ForgeError(f"{location.subject}: base branch {base_branch!r} does not exist")
    return ResolvedRepo(
        url=location.url,
        clone_url=location.clone_url,
        base_branch=base_branch,
        base_sha=base_sha,
        branch_sha=sha_of(branch),
    )


class DiscoveredRepo(BaseModel):
    """A repository a forge's `discover(selector)` found, with what the platform needs to
    target it."""

    full_name: str
    url: str = Field(description="the web URL (html_url): what forge methods take")
    clone_url: str
    default_branch: str
    archived: bool = False
    fork: bool = False
    language: str | None = None
    topics: list[str] = Field(default_factory=list)


class PullRequestText(BaseModel):
    """What a pull request says, whether wanted (a draft) or reported (a pull request): its
    branches, title, body, labels and draft flag."""

    head: str
    base: str
    title: str
    body: str
    labels: list[str] = Field(default_factory=list)
    draft: bool = False


class PullRequestDraft(PullRequestText):
    """What the platform wants a pull request to say."""

    reviewers: list[str] = Field(
        default_factory=list, description="users asked to review (added, never removed)"
    )
    team_reviewers: list[str] = Field(
        default_factory=list,
        description="teams asked to review, by slug or org/slug (added, never removed)",
    )
    assignees: list[str] = Field(
        default_factory=list, description="users the PR is assigned to (added, never removed)"
    )


class PullRequest(PullRequestText):
    """A pull request as the forge reports it."""

    number: int
    url: str
    state: Literal["open", "merged", "closed"] = "open"
    head_sha: str | None = None
    created_at: datetime
    updated_at: datetime


class PullRequestStatus(BaseModel):
    """Where a pull request stands: its state, mergeability, checks and reviews."""

    number: int
    url: str
    state: Literal["open", "draft", "merged", "closed"]
    head_sha: str | None = None
    mergeable: bool | None = Field(
        default=None, description="None while the forge is still computing it (GitHub: lazily)"
    )
    mergeable_state: str | None = Field(
        default=None, description="GitHub's word: clean, dirty, blocked, behind, unstable, unknown"
    )
    checks: Literal["success", "failure", "pending", "none"] = "none"
    failing_checks: list[str] = Field(default_factory=list)
    pending_checks: list[str] = Field(default_factory=list)
    review: Literal["approved", "changes_requested", "commented", "none"] = "none"
    reviews: dict[str, str] = Field(
        default_factory=dict, description="reviewer login -> their standing review state"
    )
    review_notes: list[str] = Field(
        default_factory=list,
        description="what the standing change requests say: 'login: body', then a line "
        "'  path:line: comment' per line comment",
    )


class BranchChecks(BaseModel):
    """The combined checks of a branch's head commit (the post-merge watch reads the default
    branch with the optional forge verb `branch_checks(url, branch)`)."""

    branch: str
    sha: str | None = None
    state: Literal["success", "failure", "pending", "none"] = "none"
    failing: list[str] = Field(default_factory=list, description="names of the failed checks")


# Optional verbs (callers check `callable(getattr(forge, name, None))` and say so when absent):
#   failed_check_logs(url, number) -> dict[str, str]   check name -> log tail of the PR's failed
#                                                      checks (CI-driven repair)
#   branch_checks(url, branch) -> BranchChecks          a branch head's checks (post-merge watch)


class Forge(Protocol):
    """A code host: repositories, campaign branches and pull requests."""

    def locate(self, url: str) -> RepoLocation:
        """Where to clone `url` from and its default branch (no branch is read)."""
        ...

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """Where to clone `url` from, its base branch and sha, and the campaign branch's sha."""
        ...

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` from `workspace` to `branch`, only if the branch is still at `expected`."""
        ...

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """The most recent pull request whose head is `head`."""
        ...

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a new pull request."""
        ...

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """Rewrite an existing pull request's title, body, labels and draft flag."""
        ...

    def merge_pull_request(self, url: str, number: int, method: str = "merge") -> PullRequest:
        """Merge a pull request: `method` is "merge" (a merge commit), "squash" (one commit)
        or "rebase" (its commits replayed onto the base)."""
        ...

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Close a pull request without merging."""
        ...

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """Reopen a closed (not merged) pull request."""
        ...

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """Where a pull request stands now: state (draft apart), mergeability, checks, review."""
        ...

    def comment(self, url: str, number: int, body: str) -> str:
        """Add a conversation comment to a pull request; returns the comment's URL."""
        ...
