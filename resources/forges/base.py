"""The forge interface: five verbs every code host implements, plus merge and close."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field


class ForgeError(RuntimeError):
    """The forge refused or failed an operation; the message says which and why."""


class ResolvedRepo(BaseModel):
    """A target repository as the forge sees it now."""

    url: str
    clone_url: str
    base_branch: str
    base_sha: str
    branch_sha: str | None = Field(default=None, description="the campaign branch's sha, if any")


class PullRequestDraft(BaseModel):
    """What the platform wants a pull request to say."""

    head: str
    base: str
    title: str
    body: str
    labels: list[str] = Field(default_factory=list)
    draft: bool = False


class PullRequest(BaseModel):
    """A pull request as the forge reports it."""

    number: int
    url: str
    head: str
    base: str
    title: str
    body: str
    labels: list[str] = Field(default_factory=list)
    draft: bool = False
    state: Literal["open", "merged", "closed"] = "open"
    head_sha: str | None = None
    created_at: datetime
    updated_at: datetime


class Forge(Protocol):
    """A code host: repositories, campaign branches and pull requests."""

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

    def merge_pull_request(self, url: str, number: int) -> PullRequest:
        """Merge a pull request."""
        ...

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Close a pull request without merging."""
        ...
