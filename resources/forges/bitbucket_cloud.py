"""Bitbucket Cloud's REST 2.0 API as the Bitbucket forge uses it (`CloudApi`).

A repository is `https://bitbucket.org/WORKSPACE/REPO` (with or without `.git`, or any page below
it) or `WORKSPACE/REPO`. Reviewers are Bitbucket account ids (`557058:...`) or user uuids
(`{...}`): Cloud no longer takes user names. Cloud has no merge check endpoint, so mergeability is
unknown (None) until a merge is tried; a declined pull request cannot be reopened on Cloud.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from resources.forges.base import ForgeError
from resources.forges.bitbucket_api import (
    BbPull,
    BuildStatus,
    DiscoveredRepo,
    RepoRef,
    build_status,
)
from resources.forges.bitbucket_transport import BitbucketTransport

STATES = {"OPEN": "open", "MERGED": "merged", "DECLINED": "closed", "SUPERSEDED": "closed"}
# the campaign's merge method -> Cloud's merge_strategy
STRATEGIES = {"merge": "merge_commit", "squash": "squash", "rebase": "fast_forward"}
REVIEW_STATES = {"approved": "approved", "changes_requested": "changes_requested"}


def _when(value: str | None) -> datetime:
    return datetime.fromisoformat((value or "1970-01-01T00:00:00+00:00").replace("Z", "+00:00"))


def _user_id(user: dict[str, Any]) -> str:
    return str(user.get("account_id") or user.get("uuid") or user.get("nickname") or "")


def reviewer_json(reviewer: str) -> dict[str, str]:
    """A reviewer as Cloud takes it: `{uuid}` by uuid, anything else as an account id."""
    return {"uuid": reviewer} if reviewer.startswith("{") else {"account_id": reviewer}


class CloudApi:
    """Bitbucket Cloud (REST 2.0) endpoints behind the forge's verbs."""

    def __init__(self, http: BitbucketTransport):
        self.http = http

    # repositories --------------------------------------------------------------------------------

    def parse(self, url: str) -> RepoRef:
        """`https://bitbucket.org/WORKSPACE/REPO[.git][/...]` or `WORKSPACE/REPO`."""
        text = url.strip()
        path = urlsplit(text).path if "://" in text else text
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or ("://" not in text and len(parts) != 2):
            raise ForgeError(
                f"{url}: not a Bitbucket Cloud repository (expected "
                "https://bitbucket.org/WORKSPACE/REPO or WORKSPACE/REPO)"
            )
        return RepoRef(parts[0], parts[1].removesuffix(".git"))

    def _repo_path(self, ref: RepoRef) -> str:
        return f"/repositories/{quote(ref.owner)}/{quote(ref.slug)}"

    def repo(self, ref: RepoRef) -> tuple[str, str]:
        """(main branch, HTTPS clone URL)."""
        data = self.http.request("GET", self._repo_path(ref), subject=ref.name, action="resolve")
        clone = _clone_url(data)
        if not clone:
            raise ForgeError(f"{ref.name}: Bitbucket Cloud reported no HTTPS clone URL")
        return ((data.get("mainbranch") or {}).get("name") or "", clone)

    def branch_sha(self, ref: RepoRef, branch: str) -> str | None:
        """The branch's head commit, None when there is no such branch."""
        path = f"{self._repo_path(ref)}/refs/branches/{quote(branch, safe='')}"
        try:
            data = self.http.request(
                "GET", path, subject=ref.name, action=f"reading branch {branch}"
            )
        except ForgeError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise
        return (data.get("target") or {}).get("hash")

    # pull requests -------------------------------------------------------------------------------

    def _pulls(self, ref: RepoRef) -> str:
        return f"{self._repo_path(ref)}/pullrequests"

    def pull(self, data: dict[str, Any]) -> BbPull:
        """A pull request's JSON as a BbPull."""
        participants = data.get("participants") or []
        reviews: dict[str, str] = {}
        for p in participants:
            who = _user_id(p.get("user") or {})
            state = p.get("state") or ("approved" if p.get("approved") else None)
            if who and state in REVIEW_STATES:
                reviews[who] = REVIEW_STATES[state]
            elif who and p.get("role") == "PARTICIPANT":  # took part (commented), no verdict
                reviews[who] = "commented"
        return BbPull(
            number=int(data["id"]),
            title=data.get("title") or "",
            description=data.get("description") or "",
            source=((data.get("source") or {}).get("branch") or {}).get("name") or "",
            destination=((data.get("destination") or {}).get("branch") or {}).get("name") or "",
            state=STATES.get(str(data.get("state")), "closed"),  # type: ignore[arg-type]
            url=((data.get("links") or {}).get("html") or {}).get("href") or "",
            created_at=_when(data.get("created_on")),
            updated_at=_when(data.get("updated_on")),
            source_sha=((data.get("source") or {}).get("commit") or {}).get("hash"),
            draft=bool(data.get("draft")),
            reviewers=[_user_id(r) for r in data.get("reviewers") or [] if _user_id(r)],
            reviews=reviews,
            raw=data,
        )

    def pulls_from(self, ref: RepoRef, head: str, *, open_only: bool = False) -> list[BbPull]:
        """Pull requests from branch `head`: listed with a `q` filter on the source branch."""
        states = ["OPEN"] if open_only else ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]
        params = [("q", f"source.branch.name = {json.dumps(head)}")]
        params += [("state", s) for s in states]
        items = self.http.paginate(
            self._pulls(ref), subject=ref.name, action=f"looking up the pull request for {head}",
            params=params,
        )  # fmt: skip
        return [
            self.pull(item)
            for item in items
            if ((item.get("source") or {}).get("branch") or {}).get("name") == head
        ]

    def get_pull(self, ref: RepoRef, number: int) -> BbPull:
        """Pull request #number."""
        data = self.http.request(
            "GET", f"{self._pulls(ref)}/{number}", subject=ref.name,
            action=f"reading pull request #{number}",
            not_found=f"{ref.name}: pull request #{number} not found",
        )  # fmt: skip
        return self.pull(data)

    def create_pull(
        self, ref: RepoRef, fields: dict[str, Any], reviewers: list[str], recover: Any
    ) -> BbPull:
        """POST a pull request (the source branch is not closed on merge)."""
        body = {
            "title": fields["title"],
            "description": fields["description"],
            "source": {"branch": {"name": fields["source"]}},
            "destination": {"branch": {"name": fields["destination"]}},
            "reviewers": [reviewer_json(r) for r in reviewers],
            "draft": bool(fields["draft"]),
            "close_source_branch": False,
        }
        data = self.http.request(
            "POST", self._pulls(ref), subject=ref.name, json=body, recover=recover,
            action=f"creating a pull request for {fields['source']}",
        )  # fmt: skip
        return data if isinstance(data, BbPull) else self.pull(data)

    def edit_pull(self, ref: RepoRef, pull: BbPull, changes: dict[str, Any]) -> BbPull:
        """PUT the changed fields; `reviewers` (when changed) is the whole list."""
        body: dict[str, Any] = {}
        for key in ("title", "description", "draft"):
            if key in changes:
                body[key] = changes[key]
        if "destination" in changes:
            body["destination"] = {"branch": {"name": changes["destination"]}}
        if "reviewers" in changes:
            body["reviewers"] = [reviewer_json(r) for r in changes["reviewers"]]
        data = self.http.request(
            "PUT", f"{self._pulls(ref)}/{pull.number}", subject=ref.name, json=body,
            action=f"updating pull request #{pull.number}",
        )  # fmt: skip
        return self.pull(data)

    def merge(self, ref: RepoRef, pull: BbPull, method: str) -> None:
        """POST merge with the strategy for `method` (merge_commit, squash, fast_forward)."""
        self.http.request(
            "POST", f"{self._pulls(ref)}/{pull.number}/merge", subject=ref.name,
            action=f"merging pull request #{pull.number}",
            json={"type": "pullrequest", "merge_strategy": STRATEGIES[method]},
        )  # fmt: skip

    def decline(self, ref: RepoRef, pull: BbPull) -> None:
        """POST decline."""
        self.http.request(
            "POST", f"{self._pulls(ref)}/{pull.number}/decline", subject=ref.name,
            action=f"closing pull request #{pull.number}",
        )  # fmt: skip

    def reopen(self, ref: RepoRef, pull: BbPull) -> None:
        """Cloud has no way back from a decline."""
        raise ForgeError(
            f"{ref.name}: pull request #{pull.number} is declined, and Bitbucket Cloud cannot "
            "reopen a declined pull request (a new one must be opened)"
        )

    def comment(self, ref: RepoRef, number: int, body: str) -> str:
        """POST a comment; a retry after a lost answer first looks for it among the comments."""
        path = f"{self._pulls(ref)}/{number}/comments"

        def landed() -> dict | None:
            for item in self.http.paginate(
                path, subject=ref.name, action=f"reading comments of #{number}",
                params={"sort": "-created_on"},
            ):  # fmt: skip
                if ((item.get("content") or {}).get("raw")) == body:
                    return item
            return None

        data = self.http.request(
            "POST", path, subject=ref.name, json={"content": {"raw": body}}, recover=landed,
            action=f"commenting on #{number}",
            not_found=f"{ref.name}: pull request #{number} not found",
        )  # fmt: skip
        return ((data.get("links") or {}).get("html") or {}).get("href") or ""

    def checks(self, ref: RepoRef, sha: str) -> list[BuildStatus]:
        """The commit's build statuses."""
        items = self.http.paginate(
            f"{self._repo_path(ref)}/commit/{sha}/statuses", subject=ref.name,
            action=f"reading the build statuses of {sha[:12]}",
        )  # fmt: skip
        return [build_status(item) for item in items]

    def mergeable(self, ref: RepoRef, pull: BbPull) -> tuple[bool | None, str | None]:
        """Unknown: Bitbucket Cloud's API has no merge check."""
        return None, None

    # discovery -----------------------------------------------------------------------------------

    def list_repos(self, owner: str, project: str | None) -> list[dict[str, Any]]:
        """A workspace's repositories (those of one project, when given)."""
        params = {"q": f"project.key = {json.dumps(project)}"} if project else None
        source = f"workspace {owner}" + (f" project {project}" if project else "")
        return list(
            self.http.paginate(
                f"/repositories/{quote(owner)}", subject=source, params=params,
                action="listing repositories", not_found=f"{source}: not found",
            )
        )  # fmt: skip

    def discovered(self, raw: dict[str, Any]) -> DiscoveredRepo:
        """A listed repository as discovery reports it."""
        full = str(raw.get("full_name") or "")
        return DiscoveredRepo(
            full_name=full,
            url=((raw.get("links") or {}).get("html") or {}).get("href")
            or f"{self.http.web_root}/{full}",
            clone_url=_clone_url(raw),
            default_branch=(raw.get("mainbranch") or {}).get("name") or "",
            fork=bool(raw.get("parent")),
            language=raw.get("language") or None,
        )


def _clone_url(data: dict[str, Any]) -> str:
    """The HTTPS clone link, without the user name Cloud puts in it (git authenticates with
    the header of `git_env`)."""
    for link in (data.get("links") or {}).get("clone") or []:
        if link.get("name") == "https":
            parts = urlsplit(str(link.get("href") or ""))
            return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return ""
