"""Bitbucket Data Center's REST 1.0 API as the Bitbucket forge uses it (`DcApi`).

A repository is `https://HOST/projects/PROJ/repos/REPO` (or any page below it), a clone URL
`https://HOST/scm/proj/repo.git`, a personal one `https://HOST/users/NAME/repos/REPO` (project
`~NAME`), or `PROJ/REPO`. Reviewers are user names. Every change to a pull request names the
`version` it was read at: a 409 (someone changed it meanwhile) re-reads it and tries again.
Pull requests merge with the repository's default strategy; build statuses come from the build
status API (`/rest/build-status/1.0`), mergeability from the merge check (`GET .../merge`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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
from resources.forges.bitbucket_transport import BitbucketHttpError, BitbucketTransport

STATES = {"OPEN": "open", "MERGED": "merged", "DECLINED": "closed"}
REVIEW_STATES = {"APPROVED": "approved", "NEEDS_WORK": "changes_requested"}
VERSION_RETRIES = 3


def _when(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms or 0) / 1000, UTC)


def _user(p: dict[str, Any]) -> str:
    user = p.get("user") or {}
    return str(user.get("name") or user.get("slug") or "")


class DcApi:
    """Bitbucket Data Center (REST 1.0) endpoints behind the forge's verbs."""

    def __init__(self, http: BitbucketTransport):
        self.http = http

    # repositories --------------------------------------------------------------------------------

    def parse(self, url: str) -> RepoRef:
        """`.../projects/PROJ/repos/REPO[/...]`, `.../scm/proj/repo[.git]`,
        `.../users/NAME/repos/REPO`, `PROJ/REPO`, or `<web root>/PROJ/REPO` (a campaign's
        `PROJ/REPO` target, which the platform writes under the forge's web root)."""
        text = url.strip()
        root = self.http.web_root.rstrip("/") + "/"
        if text.startswith(root):  # under the web root (which may have a context path)
            path = text[len(root) :]
            if path.count("/") == 1:  # WEB_ROOT/PROJ/REPO: how a campaign's PROJ/REPO reads
                text = path
        else:
            path = urlsplit(text).path if "://" in text else text
        parts = [p for p in path.split("/") if p]
        for i, part in enumerate(parts):
            if part in ("projects", "users") and len(parts) > i + 3 and parts[i + 2] == "repos":
                owner = parts[i + 1] if part == "projects" else f"~{parts[i + 1]}"
                return RepoRef(owner.upper() if part == "projects" else owner, parts[i + 3])
            if part == "scm" and len(parts) == i + 3:
                return RepoRef(parts[i + 1].upper(), parts[i + 2].removesuffix(".git"))
        if "://" not in text and len(parts) == 2:
            return RepoRef(parts[0].upper(), parts[1].removesuffix(".git"))
        raise ForgeError(
            f"{url}: not a Bitbucket Data Center repository (expected "
            "https://HOST/projects/PROJ/repos/REPO, https://HOST/scm/proj/repo.git or PROJ/REPO)"
        )

    def _repo_path(self, ref: RepoRef) -> str:
        return f"/projects/{quote(ref.owner)}/repos/{quote(ref.slug)}"

    def repo(self, ref: RepoRef) -> tuple[str, str]:
        """(default branch, HTTP clone URL)."""
        data = self.http.request("GET", self._repo_path(ref), subject=ref.name, action="resolve")
        clone = _clone_url(data)
        if not clone:
            raise ForgeError(f"{ref.name}: Bitbucket Data Center reported no HTTP clone URL")
        try:
            default = self.http.request(
                "GET", f"{self._repo_path(ref)}/default-branch", subject=ref.name,
                action="reading the default branch",
                not_found=f"{ref.name}: repository has no default branch (empty repository?)",
            )  # fmt: skip
        except BitbucketHttpError as exc:
            if exc.status == 404:
                return "", clone
            raise
        return str((default or {}).get("displayId") or ""), clone

    def branch_sha(self, ref: RepoRef, branch: str) -> str | None:
        """The branch's latest commit (the branch listing filtered by its name)."""
        for item in self.http.paginate(
            f"{self._repo_path(ref)}/branches", subject=ref.name,
            action=f"reading branch {branch}", params={"filterText": branch},
        ):  # fmt: skip
            if item.get("displayId") == branch or item.get("id") == f"refs/heads/{branch}":
                return item.get("latestCommit")
        return None

    # pull requests -------------------------------------------------------------------------------

    def _pulls(self, ref: RepoRef) -> str:
        return f"{self._repo_path(ref)}/pull-requests"

    def pull(self, data: dict[str, Any]) -> BbPull:
        """A pull request's JSON as a BbPull."""
        reviews: dict[str, str] = {}
        for p in [*(data.get("reviewers") or []), *(data.get("participants") or [])]:
            status = REVIEW_STATES.get(str(p.get("status")))
            if _user(p) and status:
                reviews[_user(p)] = status
            elif _user(p) and p.get("role") == "PARTICIPANT":  # took part (commented), no verdict
                reviews[_user(p)] = "commented"
        links = (data.get("links") or {}).get("self") or [{}]
        return BbPull(
            number=int(data["id"]),
            title=data.get("title") or "",
            description=data.get("description") or "",
            source=(data.get("fromRef") or {}).get("displayId") or "",
            destination=(data.get("toRef") or {}).get("displayId") or "",
            state=STATES.get(str(data.get("state")), "closed"),  # type: ignore[arg-type]
            url=str(links[0].get("href") or ""),
            created_at=_when(data.get("createdDate")),
            updated_at=_when(data.get("updatedDate")),
            source_sha=(data.get("fromRef") or {}).get("latestCommit"),
            draft=bool(data.get("draft")),
            version=int(data.get("version") or 0),
            reviewers=[_user(r) for r in data.get("reviewers") or [] if _user(r)],
            reviews=reviews,
            raw=data,
        )

    def pulls_from(self, ref: RepoRef, head: str, *, open_only: bool = False) -> list[BbPull]:
        """Outgoing pull requests at `refs/heads/<head>`."""
        params = {
            "state": "OPEN" if open_only else "ALL",
            "direction": "OUTGOING",
            "at": f"refs/heads/{head}",
        }
        items = self.http.paginate(
            self._pulls(ref), subject=ref.name, params=params,
            action=f"looking up the pull request for {head}",
        )  # fmt: skip
        return [
            self.pull(item)
            for item in items
            if (item.get("fromRef") or {}).get("id") == f"refs/heads/{head}"
        ]

    def get_pull(self, ref: RepoRef, number: int) -> BbPull:
        """Pull request #number."""
        data = self.http.request(
            "GET", f"{self._pulls(ref)}/{number}", subject=ref.name,
            action=f"reading pull request #{number}",
            not_found=f"{ref.name}: pull request #{number} not found",
        )  # fmt: skip
        return self.pull(data)

    def _ref_json(self, ref: RepoRef, branch: str) -> dict[str, Any]:
        return {
            "id": f"refs/heads/{branch}",
            "repository": {"slug": ref.slug, "project": {"key": ref.owner}},
        }

    def create_pull(
        self, ref: RepoRef, fields: dict[str, Any], reviewers: list[str], recover: Any
    ) -> BbPull:
        """POST a pull request (`draft` is Data Center 8.18+'s)."""
        body = {
            "title": fields["title"],
            "description": fields["description"],
            "fromRef": self._ref_json(ref, fields["source"]),
            "toRef": self._ref_json(ref, fields["destination"]),
            "reviewers": [{"user": {"name": r}} for r in reviewers],
            "draft": bool(fields["draft"]),
        }
        data = self.http.request(
            "POST", self._pulls(ref), subject=ref.name, json=body, recover=recover,
            action=f"creating a pull request for {fields['source']}",
        )  # fmt: skip
        return data if isinstance(data, BbPull) else self.pull(data)

    def _versioned(self, ref: RepoRef, pull: BbPull, write: Callable[[BbPull], Any]) -> Any:
        """Run `write(pull)` with the pull request's version; on a 409 whose cause is a stale
        version, read it again and retry (a 409 for anything else is Bitbucket's refusal)."""
        for attempt in range(VERSION_RETRIES + 1):
            try:
                return write(pull)
            except BitbucketHttpError as exc:
                if exc.status != 409 or attempt == VERSION_RETRIES:
                    raise
                fresh = self.get_pull(ref, pull.number)
                if fresh.version == pull.version:
                    raise  # not a version conflict: the refusal stands
                pull = fresh
        raise AssertionError("unreachable")  # pragma: no cover

    def edit_pull(self, ref: RepoRef, pull: BbPull, changes: dict[str, Any]) -> BbPull:
        """PUT the changes at the pull request's version (re-read and retried on a 409)."""

        def put(current: BbPull) -> Any:
            body: dict[str, Any] = {
                "version": current.version,
                "title": changes.get("title", current.title),
                "description": changes.get("description", current.description),
                "reviewers": [
                    {"user": {"name": r}} for r in changes.get("reviewers", current.reviewers)
                ],
            }
            if "draft" in changes:
                body["draft"] = changes["draft"]
            if "destination" in changes:
                body["toRef"] = self._ref_json(ref, changes["destination"])
            return self.http.request(
                "PUT", f"{self._pulls(ref)}/{current.number}", subject=ref.name, json=body,
                action=f"updating pull request #{current.number}",
            )  # fmt: skip

        return self.pull(self._versioned(ref, pull, put))

    def _post_versioned(self, ref: RepoRef, pull: BbPull, verb: str, action: str) -> None:
        def post(current: BbPull) -> Any:
            return self.http.request(
                "POST", f"{self._pulls(ref)}/{current.number}/{verb}", subject=ref.name,
                params={"version": current.version}, action=action,
            )  # fmt: skip

        self._versioned(ref, pull, post)

    def merge(self, ref: RepoRef, pull: BbPull, method: str) -> None:
        """Merge with the repository's default strategy; another method is refused."""
        if method != "merge":
            raise ForgeError(
                f"{ref.name}: pull request #{pull.number}: merge method {method!r} is not "
                "supported on Bitbucket Data Center by this forge; pull requests merge with the "
                "repository's default strategy (method 'merge')"
            )
        self._post_versioned(ref, pull, "merge", f"merging pull request #{pull.number}")

    def decline(self, ref: RepoRef, pull: BbPull) -> None:
        """POST decline at the version."""
        self._post_versioned(ref, pull, "decline", f"closing pull request #{pull.number}")

    def reopen(self, ref: RepoRef, pull: BbPull) -> None:
        """POST reopen at the version."""
        self._post_versioned(ref, pull, "reopen", f"reopening pull request #{pull.number}")

    def comment(self, ref: RepoRef, number: int, body: str) -> str:
        """POST a comment; a retry after a lost answer first looks for it in the activities."""
        base = f"{self._pulls(ref)}/{number}"

        def landed() -> dict | None:
            for item in self.http.paginate(
                f"{base}/activities", subject=ref.name, action=f"reading activities of #{number}"
            ):
                comment = item.get("comment") or {}
                if item.get("action") == "COMMENTED" and comment.get("text") == body:
                    return comment
            return None

        data = self.http.request(
            "POST", f"{base}/comments", subject=ref.name, json={"text": body}, recover=landed,
            action=f"commenting on #{number}",
            not_found=f"{ref.name}: pull request #{number} not found",
        )  # fmt: skip
        web = f"{self.http.web_root}/projects/{ref.owner}/repos/{ref.slug}"
        return f"{web}/pull-requests/{number}/overview?commentId={data.get('id')}"

    def checks(self, ref: RepoRef, sha: str) -> list[BuildStatus]:
        """The commit's build statuses (the build status API, outside /rest/api/1.0)."""
        items = self.http.paginate(
            f"{self.http.web_root}/rest/build-status/1.0/commits/{sha}", subject=ref.name,
            action=f"reading the build statuses of {sha[:12]}",
        )  # fmt: skip
        return [build_status(item) for item in items]

    def mergeable(self, ref: RepoRef, pull: BbPull) -> tuple[bool | None, str | None]:
        """The merge check: conflicted -> not mergeable ("dirty"); vetoes -> "blocked"."""
        data = self.http.request(
            "GET", f"{self._pulls(ref)}/{pull.number}/merge", subject=ref.name,
            action=f"checking whether #{pull.number} can merge",
        )  # fmt: skip
        if data.get("conflicted"):
            return False, "dirty"
        if data.get("canMerge"):
            return True, "clean"
        return True, "blocked"

    # discovery -----------------------------------------------------------------------------------

    def list_repos(self, owner: str, project: str | None) -> list[dict[str, Any]]:
        """A project's repositories."""
        key = project or owner
        return list(
            self.http.paginate(
                f"/projects/{quote(key)}/repos", subject=f"project {key}",
                action="listing repositories", not_found=f"project {key}: not found",
            )
        )  # fmt: skip

    def discovered(self, raw: dict[str, Any]) -> DiscoveredRepo:
        """A listed repository as discovery reports it (the default branch is read on resolve)."""
        key = str((raw.get("project") or {}).get("key") or "")
        slug = str(raw.get("slug") or "")
        return DiscoveredRepo(
            full_name=f"{key}/{slug}",
            url=f"{self.http.web_root}/projects/{key}/repos/{slug}",
            clone_url=_clone_url(raw),
            default_branch=str(raw.get("defaultBranch") or ""),
            archived=bool(raw.get("archived")),
            fork=bool(raw.get("origin")),
        )


def _clone_url(data: dict[str, Any]) -> str:
    for link in (data.get("links") or {}).get("clone") or []:
        if link.get("name") in ("http", "https"):
            parts = urlsplit(str(link.get("href") or ""))
            return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return ""
