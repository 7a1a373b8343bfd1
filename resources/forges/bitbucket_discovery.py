"""Finding a campaign's targets on Bitbucket: a Cloud workspace's repositories (optionally one
project's), or a Data Center project's, filtered by name pattern and forks. Listings are paged
(Cloud: `next` links; Data Center: `isLastPage`/`nextPageStart`) by the transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.forges.base import ForgeError
from resources.forges.bitbucket_api import DiscoveredRepo
from resources.forges.discovery import picked

if TYPE_CHECKING:
    from resources.forges.bitbucket_api import BitbucketApi


class BitbucketSelector(BaseModel):
    """Which repositories a campaign targets on Bitbucket: exactly one source + filters.

    Cloud: `workspace` (and optionally `project`, a project key inside it). Data Center:
    `project` (a project key). Bitbucket has no topics; archived repositories (Data Center 8+)
    are left out unless `include_archived`; Cloud has no archived flag."""

    model_config = ConfigDict(extra="forbid")

    workspace: str | None = Field(default=None, description="Cloud: every repository of this")
    project: str | None = Field(
        default=None, description="Data Center: a project key; Cloud: a project key in workspace"
    )
    name_pattern: str | None = Field(
        default=None, description="glob on the slug (on OWNER/SLUG when it has a '/'), any case"
    )
    include_archived: bool = False
    include_forks: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> BitbucketSelector:
        if not self.workspace and not self.project:
            raise ValueError("one of workspace (Cloud) or project (Data Center) must be set")
        return self


def discover(api: BitbucketApi, selector: BitbucketSelector) -> list[DiscoveredRepo]:
    """The repositories `selector` picks, sorted by full name."""
    flavor = api.http.flavor
    if flavor == "cloud" and not selector.workspace:
        raise ForgeError("Bitbucket Cloud discovery needs `workspace` (and optionally `project`)")
    if flavor == "dc" and (selector.workspace or not selector.project):
        raise ForgeError("Bitbucket Data Center discovery needs `project` (no `workspace`)")
    raw = api.list_repos(selector.workspace or selector.project or "", selector.project)
    found = [api.discovered(item) for item in raw]
    return picked(found, selector)
