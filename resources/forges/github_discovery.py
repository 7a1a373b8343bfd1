"""Finding a campaign's targets on GitHub: an organization's or a user's repositories, or a search.

Listings are paginated (`Link: rel="next"`) and filtered here by topics, name pattern, language,
archived and fork; a search query is passed to GitHub's repository search as it is and filtered
the same way afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.forges.base import DiscoveredRepo, ForgeError
from resources.forges.discovery import picked

if TYPE_CHECKING:  # PyGithub and requests are imported when a listing runs: every campaign file
    # reads this module (its selector), and importing them is a noticeable part of start-up
    from github import Github
    from github.Repository import Repository as GhRepository

    from resources.forges.github_transport import GitHubTransport

__all__ = ["DiscoveredRepo", "GitHubSelector", "discover"]  # DiscoveredRepo: from base.py


class GitHubSelector(BaseModel):
    """Which repositories a campaign targets: exactly one source (org, user or query) + filters."""

    model_config = ConfigDict(extra="forbid")

    org: str | None = Field(default=None, description="every repository of this organization")
    user: str | None = Field(default=None, description="every repository this user owns")
    query: str | None = Field(
        default=None, description="a GitHub repository search query, e.g. 'org:acme topic:python'"
    )
    topics: list[str] = Field(default_factory=list, description="all of these topics")
    name_pattern: str | None = Field(
        default=None, description="glob on the name (on OWNER/NAME when it has a '/'), any case"
    )
    language: str | None = Field(default=None, description="primary language, any case")
    include_archived: bool = False
    include_forks: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> GitHubSelector:
        given = [k for k in ("org", "user", "query") if getattr(self, k)]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"exactly one of org, user or query must be set (got: {got})")
        return self


def _discovered(repo: GhRepository) -> DiscoveredRepo:
    # only fields every listing carries: reading others would fetch each repository again
    return DiscoveredRepo(
        full_name=repo.full_name,
        url=repo.html_url,
        clone_url=repo.clone_url,
        default_branch=repo.default_branch or "",
        archived=bool(repo.archived),
        fork=bool(repo.fork),
        language=repo.language,
        topics=list(repo.topics or []),
    )


def _listing(gh: Github, selector: GitHubSelector):
    from github import GithubException

    if selector.org:
        return gh.get_organization(selector.org).get_repos(type="all")
    if selector.user:
        me = gh.get_user()
        try:
            login = me.login
        except GithubException:  # a GitHub App's installation token has no user
            login = ""
        if login.lower() == selector.user.lower():  # /users/X/repos lists public ones only
            return me.get_repos(affiliation="owner", visibility="all")
        return gh.get_user(selector.user).get_repos(type="all")
    query = selector.query or ""
    if selector.include_forks and "fork:" not in query:
        query += " fork:true"  # search leaves forks out unless asked
    return gh.search_repositories(query.strip())


def discover(gh: GitHubTransport | Github, selector: GitHubSelector) -> list[DiscoveredRepo]:
    """The repositories `selector` picks, sorted by full name.

    With a `GitHubForge` (or its bare `GitHubTransport`) the listing shares its retries,
    rate-limit handling and redaction.
    """
    from github import GithubException

    from resources.forges.github_transport import GitHubTransport
    from resources.forges.transport import NETWORK_ERRORS

    client = gh.client() if isinstance(gh, GitHubTransport) else gh
    source = (
        f"org {selector.org}"
        if selector.org
        else f"user {selector.user}"
        if selector.user
        else f"search {selector.query!r}"
    )
    try:
        found = [_discovered(repo) for repo in _listing(client, selector)]
    except GithubException as exc:
        if isinstance(gh, GitHubTransport):
            raise gh.forge_error(
                exc, source, "listing repositories", f"{source}: not found"
            ) from None
        raise ForgeError(f"{source}: listing repositories failed: HTTP {exc.status}") from None
    except NETWORK_ERRORS as exc:
        raise ForgeError(f"{source}: cannot reach GitHub ({type(exc).__name__})") from None
    return picked(found, selector)
