"""Forges: where repositories and pull requests live."""

from resources.forges.base import (
    Forge,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    ResolvedRepo,
)

__all__ = ["Forge", "ForgeError", "PullRequest", "PullRequestDraft", "ResolvedRepo"]
