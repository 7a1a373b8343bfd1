"""Finding a campaign's targets on GitLab: a group's projects (with its subgroups' by default), a
user's, or a search.

Listings are paginated (python-gitlab follows GitLab's `Link: rel="next"`) and filtered here by
topics, name pattern, archived and fork; archived projects and topics are also asked of GitLab
(`archived=false`, `topic=`), so it sends fewer pages. A group listing leaves out projects
merely shared with the group (`with_shared=false`): they belong to other groups.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gitlab.exceptions import GitlabError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.forges.base import DiscoveredRepo, ForgeError
from resources.forges.discovery import picked
from resources.forges.gitlab_status import list_all
from resources.forges.gitlab_transport import GitLabTransport
from resources.forges.transport import NETWORK_ERRORS


class GitLabSelector(BaseModel):
    """Which projects a campaign targets: exactly one source (group, user or search) + filters."""

    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(
        default=None, description="every project of this group (its full path, e.g. acme/web)"
    )
    include_subgroups: bool = Field(
        default=True, description="with a group: its subgroups' projects too"
    )
    user: str | None = Field(default=None, description="every project this user owns")
    search: str | None = Field(
        default=None, description="GitLab's project search (name and path contain this text)"
    )
    topics: list[str] = Field(default_factory=list, description="all of these topics")
    name_pattern: str | None = Field(
        default=None,
        description="glob on the name (on the full path group/.../name when it has a '/'), "
        "any case",
    )
    include_archived: bool = False
    include_forks: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> GitLabSelector:
        given = [k for k in ("group", "user", "search") if getattr(self, k)]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"exactly one of group, user or search must be set (got: {got})")
        return self

    def source(self) -> str:
        """What is listed, for messages: 'group acme', 'user bob', "search 'api'"."""
        if self.group:
            return f"group {self.group}"
        if self.user:
            return f"user {self.user}"
        return f"search {self.search!r}"


def discovered(project: dict[str, Any]) -> DiscoveredRepo:
    """A project of a GitLab listing as a discovered target."""
    return DiscoveredRepo(
        full_name=project["path_with_namespace"],
        url=project["web_url"],
        clone_url=project.get("http_url_to_repo") or f"{project['web_url']}.git",
        default_branch=project.get("default_branch") or "",
        archived=bool(project.get("archived")),
        fork=bool(project.get("forked_from_project")),
        language=None,  # not in GitLab's listings (a request per project would say it)
        topics=list(project.get("topics") or project.get("tag_list") or []),
    )


def _listing(transport: GitLabTransport, selector: GitLabSelector) -> list[dict[str, Any]]:
    # booleans as GitLab writes them (requests would send Python's "True")
    query: dict[str, Any] = {"order_by": "path", "sort": "asc"}
    if not selector.include_archived:
        query["archived"] = "false"
    if selector.topics:
        query["topic"] = ",".join(selector.topics)
    if selector.group:
        path = f"/groups/{quote(selector.group.strip('/'), safe='')}/projects"
        query["include_subgroups"] = str(selector.include_subgroups).lower()
        query["with_shared"] = "false"
    elif selector.user:
        path = f"/users/{quote(selector.user, safe='')}/projects"
    else:
        path = "/projects"
        query["search"] = selector.search
    return list_all(transport.client(), path, query)


def discover(transport: GitLabTransport, selector: GitLabSelector) -> list[DiscoveredRepo]:
    """The projects `selector` picks, sorted by full path (retries, rate limits and redaction
    are the forge's)."""
    source = selector.source()
    try:
        found = [discovered(p) for p in _listing(transport, selector)]
    except GitlabError as exc:
        raise transport.forge_error(
            exc, source, "listing projects", f"{source}: not found on {transport.web_url}"
        ) from None
    except NETWORK_ERRORS as exc:
        raise ForgeError(
            f"{source}: cannot reach GitLab at {transport.web_url} ({type(exc).__name__})"
        ) from None
    return picked(found, selector)
