"""What the Bitbucket forge needs of one Bitbucket API, whichever flavour: a repository's address
(`RepoRef`), a pull request as both flavours report it (`BbPull`), and the adapter interface
(`BitbucketApi`) that `bitbucket_cloud.CloudApi` and `bitbucket_dc.DcApi` implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from resources.forges.bitbucket_transport import BitbucketTransport

try:  # the shared model lives in base.py once the forge registry has moved it there
    from resources.forges.base import DiscoveredRepo
except ImportError:  # until then, in the GitHub discovery module
    from resources.forges.github_discovery import DiscoveredRepo

MERGE_METHODS = ("merge", "squash", "rebase")


class BuildStatus(NamedTuple):
    """One build status of a commit: its name (or key), state (SUCCESSFUL, FAILED, INPROGRESS,
    STOPPED), description and link to the build."""

    name: str
    state: str
    description: str = ""
    url: str = ""


def build_status(item: dict[str, Any]) -> BuildStatus:
    """A build status from either flavour's JSON (the same field names in both)."""
    return BuildStatus(
        name=str(item.get("name") or item.get("key") or "build"),
        state=str(item.get("state") or ""),
        description=str(item.get("description") or ""),
        url=str(item.get("url") or ""),
    )


@dataclass(frozen=True)
class RepoRef:
    """A repository: `owner` is the Cloud workspace or the Data Center project key, `slug` its
    repository slug; `name` ("OWNER/SLUG") is what messages call it."""

    owner: str
    slug: str

    @property
    def name(self) -> str:
        """OWNER/SLUG."""
        return f"{self.owner}/{self.slug}"


@dataclass
class BbPull:
    """A pull request as the forge works with it, from either flavour's JSON. `reviewers` are
    the ids the API takes back (Cloud account ids and uuids, Data Center user names); `reviews`
    maps a participant to "approved", "changes_requested" or "commented"."""

    number: int
    title: str
    description: str
    source: str
    destination: str
    state: Literal["open", "merged", "closed"]
    url: str
    created_at: datetime
    updated_at: datetime
    source_sha: str | None = None
    draft: bool = False
    version: int | None = None  # Data Center's optimistic lock
    reviewers: list[str] = field(default_factory=list)
    reviews: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


class BitbucketApi(Protocol):
    """One flavour's endpoints, as the forge's verbs use them. Each method raises
    `BitbucketHttpError` (a `ForgeError` naming the repository) for what Bitbucket refuses."""

    http: BitbucketTransport

    def parse(self, url: str) -> RepoRef:
        """The repository a web URL, clone URL or OWNER/SLUG names."""
        ...

    def repo(self, ref: RepoRef) -> tuple[str, str]:
        """(default branch, HTTPS clone URL)."""
        ...

    def branch_sha(self, ref: RepoRef, branch: str) -> str | None:
        """The sha `branch` points at (None: no such branch)."""
        ...

    def pulls_from(self, ref: RepoRef, head: str, *, open_only: bool = False) -> list[BbPull]:
        """Pull requests whose source is branch `head` (any state, or only open ones)."""
        ...

    def get_pull(self, ref: RepoRef, number: int) -> BbPull:
        """Pull request #number (a 404: "pull request #N not found")."""
        ...

    def create_pull(
        self, ref: RepoRef, fields: dict[str, Any], reviewers: list[str], recover: Any
    ) -> BbPull:
        """Open a pull request: `fields` has title, description, source, destination, draft."""
        ...

    def edit_pull(self, ref: RepoRef, pull: BbPull, changes: dict[str, Any]) -> BbPull:
        """Rewrite title/description/destination/draft/reviewers (the full list) as `changes`
        says; Data Center re-reads and retries when the version moved (409)."""
        ...

    def merge(self, ref: RepoRef, pull: BbPull, method: str) -> None:
        """Merge with `method` (one of MERGE_METHODS) or refuse it clearly."""
        ...

    def decline(self, ref: RepoRef, pull: BbPull) -> None:
        """Decline (close without merging)."""
        ...

    def reopen(self, ref: RepoRef, pull: BbPull) -> None:
        """Reopen a declined pull request (or refuse: Cloud cannot)."""
        ...

    def comment(self, ref: RepoRef, number: int, body: str) -> str:
        """Post a comment once (a lost answer is looked up before posting again); its URL."""
        ...

    def checks(self, ref: RepoRef, sha: str) -> list[BuildStatus]:
        """The build statuses of `sha`."""
        ...

    def mergeable(self, ref: RepoRef, pull: BbPull) -> tuple[bool | None, str | None]:
        """(mergeable, word for why) from the merge check, or (None, None) when unknown."""
        ...

    def list_repos(self, owner: str, project: str | None) -> list[dict[str, Any]]:
        """Raw repository listings of a Cloud workspace (optionally one project) or a Data
        Center project."""
        ...

    def discovered(self, raw: dict[str, Any]) -> DiscoveredRepo:
        """A listed repository as discovery reports it."""
        ...
