"""A fake Bitbucket for tests, as Cloud (REST 2.0) or Data Center (REST 1.0): the endpoints the
Bitbucket forge uses and git smart HTTP, on 127.0.0.1 with real bare repositories behind it.

Cloud serves its API under `/2.0` (the forge's base URL is `<web>/2.0`, its web root `<web>`) and
git at `/WORKSPACE/REPO.git`; it wants `Bearer TOKEN` (or, with `username`, `Basic user:TOKEN`)
and git `Basic x-token-auth:TOKEN` (or `user:TOKEN`). Data Center serves `/rest/api/1.0` and
`/rest/build-status/1.0` (the base URL is `<web>`) and git at `/scm/proj/repo.git`, all with
`Bearer TOKEN`. Answers use each flavour's documented shapes: Cloud pages with `pagelen`/`page`
and a `next` link, errors `{"type": "error", "error": {"message"}}`; Data Center pages with
`limit`/`start`, `isLastPage` and `nextPageStart`, errors `{"errors": [{"message",
"exceptionName"}]}`, and a pull request change must name its current `version` (409 if stale).

Tests play the humans and CI (`decline_pr`, `merge_pr`, `review`, `set_status`, `touch_pr`) and
inject faults with `inject`: "429" (with Retry-After), "502", "502_after" (the request is carried
out, then answered 502: a lost answer), "404", and "conflict" (someone changes the pull request
just before the request, so its version is stale).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlencode

from resources.git import run_git
from tests import fake_forge_http as forge_http
from tests.fake_forge_http import EPOCH, Call, FakeForgeServer, Fault

WRITES = {"POST", "PUT", "DELETE"}


class BbError(Exception):
    """An error answer: the status and message (shaped per flavour when written)."""

    def __init__(self, status: int, message: str, exception: str = "", headers=None):
        super().__init__(message)
        self.status, self.message, self.exception = status, message, exception
        self.headers = headers or {}


@dataclass
class PR:
    """A pull request's state (Bitbucket's words: OPEN, MERGED, DECLINED)."""

    number: int
    title: str
    description: str
    source: str
    destination: str
    author: str
    state: str = "OPEN"
    draft: bool = False
    version: int = 0
    reviewers: list[str] = field(default_factory=list)
    reviews: dict[str, str] = field(default_factory=dict)  # user -> approved/changes_requested
    comments: list[dict] = field(default_factory=list)
    frozen_sha: str | None = None
    created: int = 0
    updated: int = 0


@dataclass
class Repo:
    """A repository: `owner` is the workspace (Cloud) or project key (Data Center)."""

    owner: str
    slug: str
    bare: Path | None = None
    default_branch: str = "main"
    project: str | None = None  # Cloud: the project key inside the workspace
    fork: bool = False
    archived: bool = False
    language: str = ""
    pulls: dict[int, PR] = field(default_factory=dict)
    statuses: dict[str, list[dict]] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        """OWNER/SLUG."""
        return f"{self.owner}/{self.slug}"


class FakeBitbucket(FakeForgeServer):
    """The fake server and its state; a context manager, or `start()`/`stop()`."""

    first_id = 100  # comment ids

    def __init__(
        self,
        flavor: Literal["cloud", "dc"],
        token: str,
        root: Path,
        *,
        username: str | None = None,
        login: str = "campaign-bot",
    ):
        super().__init__(token, root, "/2.0" if flavor == "cloud" else "/rest/api/1.0")
        self.flavor = flavor
        self.username = username
        self.login = login
        self.users: set[str] = {login}
        self.repos: dict[str, Repo] = {}
        # Cloud: a merge answers 202 and lands only after this many reads of the pull request
        self.merge_after_reads = 0
        self._merging: dict[tuple[str, int], tuple[str, int]] = {}  # -> (strategy, reads left)

    @property
    def base_url(self) -> str:
        """What the forge takes as `base_url`: Cloud's API root, Data Center's web root."""
        return f"{self.web}/2.0" if self.flavor == "cloud" else self.web

    def repo_url(self, full_name: str) -> str:
        """A repository's web URL, as people would write it in a campaign."""
        owner, slug = full_name.split("/")
        if self.flavor == "cloud":
            return f"{self.web}/{owner}/{slug}"
        return f"{self.web}/projects/{owner}/repos/{slug}"

    def clone_url(self, repo: Repo) -> str:
        """The HTTPS clone URL."""
        if self.flavor == "cloud":
            return f"{self.web}/{repo.owner}/{repo.slug}.git"
        return f"{self.web}/scm/{repo.owner.lower()}/{repo.slug}.git"

    # state set-up (tests) ------------------------------------------------------------------------

    def _now(self) -> int:
        return self._next_tick()

    def _stamp(self, tick: int) -> str:
        return (EPOCH + timedelta(seconds=tick)).isoformat()

    def add_user(self, name: str) -> None:
        """A user (Cloud: an account id) who may be asked to review."""
        self.users.add(name)

    def add_repo(
        self, full_name: str, files: dict[str, str] | None = None, *, branch: str = "main", **kw
    ) -> Repo:
        """A repository; with `files`, a bare git repository with one commit on `branch`."""
        owner, slug = full_name.split("/")
        repo = Repo(owner=owner, slug=slug, default_branch=branch, **kw)
        if files is not None:
            where = owner if self.flavor == "cloud" else f"scm/{owner.lower()}"
            repo.bare = forge_http.init_bare(self.git_root / where / f"{slug}.git", branch)
            forge_http.commit_files(repo.bare, branch, files, parent=None)
        with self._lock:
            self.repos[full_name] = repo
        return repo

    def refs(self, repo: Repo | str) -> dict[str, str]:
        """Branch name -> sha."""
        repo = self.repos[repo] if isinstance(repo, str) else repo
        return forge_http.branch_refs(repo.bare)

    def create_branch(self, full_name: str, branch: str, files: dict[str, str]) -> str:
        """A new commit on `branch`, on top of the default branch; returns its sha."""
        repo = self.repos[full_name]
        parent = self.refs(repo)[repo.default_branch]
        assert repo.bare is not None
        return forge_http.commit_files(repo.bare, branch, files, parent=parent)

    def inject(
        self, kind: str, *, methods: set[str] | None = None, path: str = ".*",
        times: int | None = 1, retry_after: int = 3,
    ) -> Fault:  # fmt: skip
        """Make matching requests fail as `kind` (see the module docstring)."""
        return self._add_fault(Fault(kind, methods or WRITES, re.compile(path), times, retry_after))

    # the humans and CI ---------------------------------------------------------------------------

    def pr(self, full_name: str, number: int) -> PR:
        """A pull request's state."""
        return self.repos[full_name].pulls[number]

    def touch_pr(self, full_name: str, number: int) -> None:
        """Someone edits the pull request: its version moves on."""
        with self._lock:
            pr = self.pr(full_name, number)
            pr.version += 1
            pr.updated = self._now()

    def decline_pr(self, full_name: str, number: int) -> None:
        """Someone declines the pull request."""
        with self._lock:
            repo = self.repos[full_name]
            pr = repo.pulls[number]
            pr.frozen_sha = self.refs(repo).get(pr.source)
            pr.state = "DECLINED"
            pr.version += 1
            pr.updated = self._now()

    def merge_pr(self, full_name: str, number: int) -> None:
        """Someone merges the pull request."""
        with self._lock:
            repo = self.repos[full_name]
            self._merge(repo, repo.pulls[number], "merge_commit")

    def review(self, full_name: str, number: int, user: str, state: str) -> None:
        """`user` approves ("approved"), requests changes ("changes_requested") or only
        comments ("commented": a participant without a verdict)."""
        with self._lock:
            self.users.add(user)
            pr = self.pr(full_name, number)
            pr.reviews[user] = state
            pr.updated = self._now()

    def set_status(
        self, full_name: str, sha: str, key: str, state: str, description: str = "", url: str = ""
    ) -> None:
        """A build status (SUCCESSFUL, FAILED, INPROGRESS, STOPPED) for `key` on `sha`."""
        with self._lock:
            statuses = self.repos[full_name].statuses.setdefault(sha, [])
            statuses[:] = [s for s in statuses if s["key"] != key]
            statuses.append(
                {"key": key, "name": key, "state": state, "description": description,
                 "url": url or f"https://ci.example.com/{key}"}
            )  # fmt: skip

    # JSON shapes ---------------------------------------------------------------------------------

    def _head(self, repo: Repo, pr: PR) -> str | None:
        return pr.frozen_sha or self.refs(repo).get(pr.source)

    def _repo_json(self, repo: Repo) -> dict:
        clone = self.clone_url(repo)
        if self.flavor == "cloud":
            return {
                "type": "repository", "slug": repo.slug, "name": repo.slug,
                "full_name": repo.full_name, "is_private": True, "language": repo.language,
                "mainbranch": {"name": repo.default_branch, "type": "branch"},
                "project": {"key": repo.project} if repo.project else None,
                "parent": {"full_name": "upstream/x"} if repo.fork else None,
                "links": {
                    "html": {"href": self.repo_url(repo.full_name)},
                    "clone": [
                        {"name": "https", "href": clone.replace("://", f"://{self.login}@")},
                        {"name": "ssh", "href": f"git@127.0.0.1:{repo.full_name}.git"},
                    ],
                },
            }  # fmt: skip
        data = {
            "slug": repo.slug, "name": repo.slug, "id": hash(repo.full_name) % 10000,
            "project": {"key": repo.owner}, "archived": repo.archived, "public": False,
            "links": {
                "clone": [{"name": "http", "href": clone},
                          {"name": "ssh", "href": f"ssh://git@127.0.0.1:7999/{repo.slug}.git"}],
                "self": [{"href": f"{self.repo_url(repo.full_name)}/browse"}],
            },
        }  # fmt: skip
        if repo.fork:
            data["origin"] = {"slug": "upstream"}
        return data

    def _user_json(self, name: str) -> dict:
        if self.flavor == "cloud":
            return {"account_id": name, "uuid": f"{{{name}-uuid}}", "display_name": name}
        return {"name": name, "slug": name, "displayName": name}

    def _pr_json(self, repo: Repo, pr: PR) -> dict:
        head = self._head(repo, pr)
        if self.flavor == "cloud":
            return {
                "type": "pullrequest", "id": pr.number, "title": pr.title,
                "description": pr.description, "state": pr.state, "draft": pr.draft,
                "author": self._user_json(pr.author),
                "source": {"branch": {"name": pr.source}, "commit": {"hash": head},
                           "repository": {"full_name": repo.full_name}},
                "destination": {"branch": {"name": pr.destination},
                                "repository": {"full_name": repo.full_name}},
                "reviewers": [self._user_json(r) for r in pr.reviewers],
                "participants": [
                    {"user": self._user_json(u), "role": "REVIEWER" if u in pr.reviewers
                     else "PARTICIPANT", "approved": s == "approved",
                     "state": None if s == "commented" else s}
                    for u, s in pr.reviews.items()
                ],
                "links": {"html": {"href": f"{self.repo_url(repo.full_name)}/pull-requests/"
                                           f"{pr.number}"}},
                "created_on": self._stamp(pr.created), "updated_on": self._stamp(pr.updated),
            }  # fmt: skip

        def ref(branch: str, sha: str | None) -> dict:
            return {"id": f"refs/heads/{branch}", "displayId": branch, "latestCommit": sha,
                    "repository": self._repo_json(repo)}  # fmt: skip

        statuses = {"approved": "APPROVED", "changes_requested": "NEEDS_WORK",
                    "commented": "UNAPPROVED"}  # fmt: skip
        return {
            "id": pr.number, "version": pr.version, "title": pr.title,
            "description": pr.description, "state": pr.state, "open": pr.state == "OPEN",
            "closed": pr.state != "OPEN", "draft": pr.draft,
            "createdDate": pr.created * 1000, "updatedDate": pr.updated * 1000,
            "fromRef": ref(pr.source, head),
            "toRef": ref(pr.destination, self.refs(repo).get(pr.destination)),
            "author": {"user": self._user_json(pr.author), "role": "AUTHOR", "approved": False,
                       "status": "UNAPPROVED"},
            "reviewers": [
                {"user": self._user_json(r), "role": "REVIEWER",
                 "approved": pr.reviews.get(r) == "approved",
                 "status": statuses.get(pr.reviews.get(r, ""), "UNAPPROVED")}
                for r in pr.reviewers
            ],
            "participants": [
                {"user": self._user_json(u), "role": "PARTICIPANT",
                 "approved": s == "approved", "status": statuses[s]}
                for u, s in pr.reviews.items() if u not in pr.reviewers
            ],
            "links": {"self": [{"href": f"{self.repo_url(repo.full_name)}/pull-requests/"
                                        f"{pr.number}"}]},
        }  # fmt: skip

    # request handling ----------------------------------------------------------------------------

    def _authorized(self, call: Call, git: bool) -> bool:
        scheme, _, value = call.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return value == self.token and not (self.flavor == "cloud" and self.username)
        credentials = forge_http.basic_credentials(call)
        if credentials is None or (self.flavor == "dc" and not git):
            return False
        user, password = credentials
        if self.flavor == "cloud" and self.username:
            return (user, password) == (self.username, self.token)
        return password == self.token and (git or self.flavor == "cloud")

    def answer(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: git smart HTTP, or an API call."""
        if ".git/" in call.path:
            if not self._authorized(call, git=True):
                return forge_http.unauthorized_git("Bitbucket")
            return forge_http.git_http_backend(call, self, call.path, self.login)
        status, headers, payload = self._api(call)
        raw = b"" if payload is None else json.dumps(payload).encode()
        return status, {"Content-Type": "application/json", **headers}, raw

    def _api(self, call: Call) -> tuple[int, dict[str, str], Any]:
        if not self._authorized(call, git=False):
            return self._error(BbError(401, "Authentication failed"))
        xsrf = call.headers.get("x-atlassian-token") != "no-check"
        if self.flavor == "dc" and call.method == "POST" and not call.body and xsrf:
            return self._error(BbError(403, "XSRF check failed"))  # Data Center's XSRF guard
        build = "/rest/build-status/1.0"
        path = call.path.removeprefix(build if call.path.startswith(build) else self.api_prefix)
        fault = self._fault_for(call, path)
        if fault is not None and fault.kind == "429":
            return self._error(
                BbError(429, "Rate limit for this resource has been exceeded",
                        headers={"Retry-After": str(fault.retry_after)})
            )  # fmt: skip
        if fault is not None and fault.kind == "502":
            return 502, {}, None
        if fault is not None and fault.kind == "404":
            return self._error(BbError(404, "Repository not found"))
        if fault is not None and fault.kind == "conflict":  # someone else changed it just now
            m = re.search(r"/projects/([^/]+)/repos/([^/]+)/pull-requests/(\d+)", path)
            if m:
                with self._lock:
                    self.touch_pr(self._repo(m[1], m[2]).full_name, int(m[3]))
        try:
            with self._lock:
                status, headers, body = self._route(call, path, call.path.startswith(build))
        except BbError as err:
            status, headers, body = self._error(err)
        if fault is not None and fault.kind == "502_after":
            return 502, {}, None
        return status, headers, body

    def _error(self, err: BbError) -> tuple[int, dict[str, str], Any]:
        if self.flavor == "cloud":
            return err.status, err.headers, {"type": "error", "error": {"message": err.message}}
        name = err.exception or "com.atlassian.bitbucket.ServiceException"
        return (
            err.status,
            err.headers,
            {"errors": [{"context": None, "message": err.message, "exceptionName": name}]},
        )

    def _page(self, call: Call, items: list) -> tuple[int, dict[str, str], Any]:
        q = {k: v[-1] for k, v in call.query.items()}
        if self.flavor == "cloud":
            size = min(int(q.get("pagelen", "10")), 100)
            page = max(int(q.get("page", "1")), 1)
            chunk = items[(page - 1) * size : page * size]
            data: dict[str, Any] = {
                "size": len(items), "page": page, "pagelen": size, "values": chunk,
            }  # fmt: skip
            if page * size < len(items):
                query = [(k, v) for k, vs in call.query.items() for v in vs if k != "page"]
                data["next"] = f"{self.web}{call.path}?{urlencode([*query, ('page', page + 1)])}"
            return 200, {}, data
        limit = min(int(q.get("limit", "25")), 1000)
        start = int(q.get("start", "0"))
        chunk = items[start : start + limit]
        last = start + limit >= len(items)
        data = {"size": len(chunk), "limit": limit, "start": start, "isLastPage": last,
                "values": chunk}  # fmt: skip
        if not last:
            data["nextPageStart"] = start + limit
        return 200, {}, data

    def _route(self, call: Call, path: str, build: bool) -> tuple[int, dict[str, str], Any]:
        routes = BUILD_ROUTES if build else CLOUD_ROUTES if self.flavor == "cloud" else DC_ROUTES
        for method, pattern, handler in routes:
            if method == call.method and (m := re.fullmatch(pattern, path)):
                return handler(self, call, *[unquote(g) for g in m.groups()])
        raise BbError(404, f"No route for {call.method} {path}")

    def _repo(self, owner: str, slug: str) -> Repo:
        for repo in self.repos.values():
            if repo.owner.lower() == owner.lower() and repo.slug == slug:
                return repo
        raise BbError(404, f"Repository {owner}/{slug} does not exist",
                      "com.atlassian.bitbucket.repository.NoSuchRepositoryException")  # fmt: skip

    def _pull(self, repo: Repo, number: str) -> PR:
        pr = repo.pulls.get(int(number))
        if pr is None:
            raise BbError(404, f"Pull request {number} does not exist in {repo.full_name}.",
                          "com.atlassian.bitbucket.pull.NoSuchPullRequestException")  # fmt: skip
        return pr

    def _check_version(self, call: Call, pr: PR, body: dict | None = None) -> None:
        if self.flavor != "dc":
            return
        given = (body or {}).get("version", call.query.get("version", [None])[0])
        if given is None or int(given) != pr.version:
            raise BbError(
                409,
                f"You are attempting to modify a pull request based on out-of-date information "
                f"(version {given}, current {pr.version}).",
                "com.atlassian.bitbucket.pull.PullRequestOutOfDateException",
            )

    def _merge(self, repo: Repo, pr: PR, strategy: str) -> None:
        assert repo.bare is not None
        refs = self.refs(repo)
        base, head = refs[pr.destination], refs[pr.source]
        ancestor = run_git(["merge-base", base, head], repo.bare).strip() == base
        if strategy == "fast_forward":
            if not ancestor:
                raise BbError(400, "Fast-forward merge is not possible: the branches diverged")
            new = head
        else:
            tree = forge_http.merge_tree(repo.bare, base, head)
            if tree is None:
                status = 409 if self.flavor == "dc" else 400
                veto = "com.atlassian.bitbucket.pull.PullRequestMergeVetoedException"
                raise BbError(status, "The pull request has conflicts", veto)
            parents = ["-p", base] if strategy == "squash" else ["-p", base, "-p", head]
            new = run_git(
                ["commit-tree", tree, *parents, "-m", f"Merged in {pr.source}"],
                repo.bare,
                env={"GIT_AUTHOR_NAME": "Fake", "GIT_AUTHOR_EMAIL": "f@example.com",
                     "GIT_COMMITTER_NAME": "Fake", "GIT_COMMITTER_EMAIL": "f@example.com"},
            ).strip()  # fmt: skip
        run_git(["update-ref", f"refs/heads/{pr.destination}", new], repo.bare)
        pr.frozen_sha = head
        pr.state = "MERGED"
        pr.version += 1
        pr.updated = self._now()

    def _reviewers(self, names: list[str], author: str) -> list[str]:
        for name in names:
            if name not in self.users:
                raise BbError(
                    400,
                    f"reviewers: {name} is not a valid user",
                    "com.atlassian.bitbucket.pull.InvalidPullRequestReviewersException",
                )
            if name == author:
                raise BbError(
                    400,
                    f"reviewers: {name} is the author and cannot be a reviewer",
                    "com.atlassian.bitbucket.pull.InvalidPullRequestReviewersException",
                )
        return list(dict.fromkeys(names))  # fmt: skip

    # Cloud endpoints -----------------------------------------------------------------------------

    def c_list_repos(self, call: Call, ws: str):
        """GET /repositories/{workspace}[?q=project.key="X"]."""
        if not any(r.owner == ws for r in self.repos.values()):
            raise BbError(404, f"No workspace with identifier '{ws}'.")
        q = call.query.get("q", [""])[0]
        m = re.fullmatch(r'project\.key = "([^"]*)"', q)
        repos = [r for r in self.repos.values() if r.owner == ws]
        if m:
            repos = [r for r in repos if r.project == m.group(1)]
        repos.sort(key=lambda r: r.slug)
        return self._page(call, [self._repo_json(r) for r in repos])

    def c_get_repo(self, call: Call, ws: str, slug: str):
        """GET /repositories/{workspace}/{repo}."""
        return 200, {}, self._repo_json(self._repo(ws, slug))

    def c_get_branch(self, call: Call, ws: str, slug: str, name: str):
        """GET /repositories/{workspace}/{repo}/refs/branches/{name}."""
        sha = self.refs(self._repo(ws, slug)).get(name)
        if sha is None:
            raise BbError(404, f"Branch {name} not found")
        return 200, {}, {"name": name, "type": "branch", "target": {"hash": sha}}

    def c_list_pulls(self, call: Call, ws: str, slug: str):
        """GET /repositories/{workspace}/{repo}/pullrequests?q=...&state=..."""
        repo = self._repo(ws, slug)
        states = set(call.query.get("state") or ["OPEN"])
        q = call.query.get("q", [""])[0]
        m = re.fullmatch(r'source\.branch\.name = "([^"]*)"', q)
        if q and not m:
            raise BbError(400, f"Invalid query: {q}")
        pulls = [
            p for p in sorted(repo.pulls.values(), key=lambda p: -p.number)
            if p.state in states and (not m or p.source == m.group(1))
        ]  # fmt: skip
        items = []
        for p in pulls:  # listings are partial: no reviewers, no participants
            data = self._pr_json(repo, p)
            data.pop("reviewers"), data.pop("participants")
            items.append(data)
        return self._page(call, items)

    def c_create_pull(self, call: Call, ws: str, slug: str):
        """POST /repositories/{workspace}/{repo}/pullrequests."""
        repo = self._repo(ws, slug)
        body = call.json() or {}
        source = ((body.get("source") or {}).get("branch") or {}).get("name")
        dest = ((body.get("destination") or {}).get("branch") or {}).get("name")
        dest = dest or repo.default_branch
        refs = self.refs(repo)
        if not body.get("title"):
            raise BbError(400, "title: This field is required.")
        if source not in refs:
            raise BbError(400, f"source: Branch not found: {source}")
        for p in repo.pulls.values():
            if p.state == "OPEN" and p.source == source and p.destination == dest:
                raise BbError(400, f"There is already an open pull request from {source} "
                                   f"to {dest}")  # fmt: skip
        ids = [r.get("account_id") or r.get("uuid") for r in body.get("reviewers") or []]
        pr = PR(
            number=repo.next_number, title=body["title"],
            description=body.get("description") or "", source=source, destination=dest,
            author=self.login, draft=bool(body.get("draft")),
            reviewers=self._reviewers(ids, self.login),
        )  # fmt: skip
        pr.created = pr.updated = self._now()
        repo.pulls[pr.number] = pr
        repo.next_number += 1
        return 201, {}, self._pr_json(repo, pr)

    def c_get_pull(self, call: Call, ws: str, slug: str, number: str):
        """GET /repositories/{workspace}/{repo}/pullrequests/{id}."""
        repo = self._repo(ws, slug)
        pr = self._pull(repo, number)
        merging = self._merging.pop((repo.full_name, pr.number), None)
        if merging is not None and merging[1] <= 1:
            self._merge(repo, pr, merging[0])
        elif merging is not None:
            self._merging[(repo.full_name, pr.number)] = (merging[0], merging[1] - 1)
        return 200, {}, self._pr_json(repo, pr)

    def _cloud_open_pull(self, ws: str, slug: str, number: str, verb: str) -> tuple[Repo, PR]:
        """The repository and pull request a Cloud change is for, if the pull request is open
        (else 400, as Cloud answers: "You can't `verb` a pull request that is not open.")."""
        repo = self._repo(ws, slug)
        pr = self._pull(repo, number)
        if pr.state != "OPEN":
            raise BbError(400, f"You can't {verb} a pull request that is not open.")
        return repo, pr

    def c_update_pull(self, call: Call, ws: str, slug: str, number: str):
        """PUT /repositories/{workspace}/{repo}/pullrequests/{id}: reviewers given replace."""
        repo, pr = self._cloud_open_pull(ws, slug, number, "edit")
        body = call.json() or {}
        for key in ("title", "description", "draft"):
            if key in body:
                setattr(pr, key, body[key])
        if "destination" in body:
            pr.destination = body["destination"]["branch"]["name"]
        if "reviewers" in body:
            ids = [r.get("account_id") or r.get("uuid") for r in body["reviewers"]]
            pr.reviewers = self._reviewers(ids, pr.author)
        pr.updated = self._now()
        return 200, {}, self._pr_json(repo, pr)

    def c_merge(self, call: Call, ws: str, slug: str, number: str):
        """POST .../pullrequests/{id}/merge {merge_strategy}."""
        repo, pr = self._cloud_open_pull(ws, slug, number, "merge")
        strategy = (call.json() or {}).get("merge_strategy") or "merge_commit"
        if strategy not in ("merge_commit", "squash", "fast_forward"):
            raise BbError(400, f"merge_strategy: {strategy} is not a valid merge strategy")
        if self.merge_after_reads:  # a long merge: Cloud answers 202 and merges in the background
            self._merging[(repo.full_name, pr.number)] = (strategy, self.merge_after_reads)
            task = f"{self.web}/2.0/repositories/{repo.full_name}/pullrequests/{pr.number}"
            return 202, {"Location": f"{task}/merge/task-status/1"}, {"task_status": "PENDING"}
        self._merge(repo, pr, strategy)
        return 200, {}, self._pr_json(repo, pr)

    def c_decline(self, call: Call, ws: str, slug: str, number: str):
        """POST .../pullrequests/{id}/decline."""
        repo, pr = self._cloud_open_pull(ws, slug, number, "decline")
        pr.frozen_sha = self._head(repo, pr)
        pr.state, pr.updated = "DECLINED", self._now()
        return 200, {}, self._pr_json(repo, pr)

    def _comment_json(self, repo: Repo, pr: PR, c: dict) -> dict:
        html = f"{self.repo_url(repo.full_name)}/pull-requests/{pr.number}#comment-{c['id']}"
        if self.flavor == "cloud":
            return {"id": c["id"], "content": {"raw": c["text"]}, "links": {"html": {"href": html}}}
        return {"id": c["id"], "version": 0, "text": c["text"]}

    def _add_comment(self, repo: Repo, pr: PR, text: str | None) -> dict:
        if not text:
            raise BbError(400, "content: the comment text is required")
        c = {"id": self._next_id(), "text": text}
        pr.comments.append(c)
        return self._comment_json(repo, pr, c)

    def c_list_comments(self, call: Call, ws: str, slug: str, number: str):
        """GET .../pullrequests/{id}/comments."""
        repo = self._repo(ws, slug)
        pr = self._pull(repo, number)
        return self._page(call, [self._comment_json(repo, pr, c) for c in reversed(pr.comments)])

    def c_add_comment(self, call: Call, ws: str, slug: str, number: str):
        """POST .../pullrequests/{id}/comments {content: {raw}}."""
        repo = self._repo(ws, slug)
        pr = self._pull(repo, number)
        raw = ((call.json() or {}).get("content") or {}).get("raw")
        return 201, {}, self._add_comment(repo, pr, raw)

    def c_statuses(self, call: Call, ws: str, slug: str, sha: str):
        """GET /repositories/{workspace}/{repo}/commit/{sha}/statuses."""
        repo = self._repo(ws, slug)
        return self._page(call, [dict(s, type="build") for s in repo.statuses.get(sha, [])])

    # Data Center endpoints -----------------------------------------------------------------------

    def d_list_repos(self, call: Call, key: str):
        """GET /projects/{key}/repos."""
        repos = sorted(
            (r for r in self.repos.values() if r.owner.lower() == key.lower()),
            key=lambda r: r.slug,
        )
        if not repos:
            raise BbError(404, f"Project {key} does not exist.",
                          "com.atlassian.bitbucket.project.NoSuchProjectException")  # fmt: skip
        return self._page(call, [self._repo_json(r) for r in repos])

    def d_get_repo(self, call: Call, key: str, slug: str):
        """GET /projects/{key}/repos/{slug}."""
        return 200, {}, self._repo_json(self._repo(key, slug))

    def d_default_branch(self, call: Call, key: str, slug: str):
        """GET /projects/{key}/repos/{slug}/default-branch."""
        repo = self._repo(key, slug)
        branch = repo.default_branch
        return 200, {}, {"id": f"refs/heads/{branch}", "displayId": branch, "type": "BRANCH"}

    def d_branches(self, call: Call, key: str, slug: str):
        """GET /projects/{key}/repos/{slug}/branches?filterText=."""
        repo = self._repo(key, slug)
        text = call.query.get("filterText", [""])[0]
        items = [
            {"id": f"refs/heads/{name}", "displayId": name, "type": "BRANCH",
             "latestCommit": sha, "isDefault": name == repo.default_branch}
            for name, sha in sorted(self.refs(repo).items()) if text in name
        ]  # fmt: skip
        return self._page(call, items)

    def d_list_pulls(self, call: Call, key: str, slug: str):
        """GET /projects/{key}/repos/{slug}/pull-requests?state=&direction=&at=."""
        repo = self._repo(key, slug)
        state = call.query.get("state", ["OPEN"])[0]
        at = call.query.get("at", [""])[0]
        direction = call.query.get("direction", ["INCOMING"])[0]
        pulls = []
        for p in sorted(repo.pulls.values(), key=lambda p: -p.number):
            branch = p.source if direction == "OUTGOING" else p.destination
            if (state == "ALL" or p.state == state) and (not at or at == f"refs/heads/{branch}"):
                pulls.append(self._pr_json(repo, p))
        return self._page(call, pulls)

    def d_create_pull(self, call: Call, key: str, slug: str):
        """POST /projects/{key}/repos/{slug}/pull-requests."""
        repo = self._repo(key, slug)
        body = call.json() or {}
        source = str((body.get("fromRef") or {}).get("id", "")).removeprefix("refs/heads/")
        dest = str((body.get("toRef") or {}).get("id", "")).removeprefix("refs/heads/")
        refs = self.refs(repo)
        if not body.get("title"):
            raise BbError(
                400,
                "A title is required",
                "com.atlassian.bitbucket.validation.ArgumentValidationException",
            )
        if source not in refs or dest not in refs:
            raise BbError(
                404,
                f"Branch {source if source not in refs else dest} not found",
                "com.atlassian.bitbucket.repository.NoSuchBranchException",
            )
        for p in repo.pulls.values():
            if p.state == "OPEN" and p.source == source and p.destination == dest:
                raise BbError(
                    409,
                    f"Only one pull request may be open for a given source and "
                    f"target branch (#{p.number})",
                    "com.atlassian.bitbucket.pull.DuplicatePullRequestException",
                )
        names = [r["user"]["name"] for r in body.get("reviewers") or []]
        pr = PR(number=repo.next_number, title=body["title"],
                description=body.get("description") or "", source=source, destination=dest,
                author=self.login, draft=bool(body.get("draft")),
                reviewers=self._reviewers(names, self.login))  # fmt: skip
        pr.created = pr.updated = self._now()
        repo.pulls[pr.number] = pr
        repo.next_number += 1
        return 201, {}, self._pr_json(repo, pr)

    def _dc_change(
        self, call: Call, key: str, slug: str, number: str, *, state: str = "OPEN",
        body: dict | None = None,
    ) -> tuple[Repo, PR]:  # fmt: skip
        """The repository and pull request a Data Center change is for, once its `version` is
        current and the pull request is in `state` (else 409, as Data Center answers)."""
        repo = self._repo(key, slug)
        pr = self._pull(repo, number)
        self._check_version(call, pr, body)
        if pr.state != state:
            message = ("The pull request is not open" if state == "OPEN"
                       else "Only a declined pull request can be reopened")  # fmt: skip
            raise BbError(
                409, message, "com.atlassian.bitbucket.pull.IllegalPullRequestStateException"
            )
        return repo, pr

    def d_get_pull(self, call: Call, key: str, slug: str, number: str):
        """GET .../pull-requests/{id}."""
        repo = self._repo(key, slug)
        return 200, {}, self._pr_json(repo, self._pull(repo, number))

    def d_update_pull(self, call: Call, key: str, slug: str, number: str):
        """PUT .../pull-requests/{id} {version, title, description, reviewers, toRef, draft}."""
        body = call.json() or {}
        repo, pr = self._dc_change(call, key, slug, number, body=body)
        pr.title = body.get("title", pr.title)
        pr.description = body.get("description", pr.description)
        if "draft" in body:
            pr.draft = bool(body["draft"])
        if "toRef" in body:
            pr.destination = body["toRef"]["id"].removeprefix("refs/heads/")
        if "reviewers" in body:  # the list given replaces the reviewers
            names = [r["user"]["name"] for r in body["reviewers"]]
            pr.reviewers = self._reviewers(names, pr.author)
        pr.version += 1
        pr.updated = self._now()
        return 200, {}, self._pr_json(repo, pr)  # fmt: skip

    def d_merge_check(self, call: Call, key: str, slug: str, number: str):
        """GET .../pull-requests/{id}/merge."""
        repo = self._repo(key, slug)
        pr = self._pull(repo, number)
        refs = self.refs(repo)
        conflicted = forge_http.merge_tree(repo.bare, refs[pr.destination], refs[pr.source]) is None
        return 200, {}, {"canMerge": not conflicted, "conflicted": conflicted,
                         "outcome": "CONFLICTED" if conflicted else "CLEAN",
                         "vetoes": []}  # fmt: skip

    def d_merge(self, call: Call, key: str, slug: str, number: str):
        """POST .../pull-requests/{id}/merge?version=."""
        repo, pr = self._dc_change(call, key, slug, number)
        self._merge(repo, pr, "merge_commit")
        return 200, {}, self._pr_json(repo, pr)

    def d_decline(self, call: Call, key: str, slug: str, number: str):
        """POST .../pull-requests/{id}/decline?version=."""
        repo, pr = self._dc_change(call, key, slug, number)
        pr.frozen_sha = self._head(repo, pr)
        pr.state, pr.version, pr.updated = "DECLINED", pr.version + 1, self._now()
        return 200, {}, self._pr_json(repo, pr)

    def d_reopen(self, call: Call, key: str, slug: str, number: str):
        """POST .../pull-requests/{id}/reopen?version=."""
        repo, pr = self._dc_change(call, key, slug, number, state="DECLINED")
        pr.frozen_sha = None
        pr.state, pr.version, pr.updated = "OPEN", pr.version + 1, self._now()
        return 200, {}, self._pr_json(repo, pr)

    def d_add_comment(self, call: Call, key: str, slug: str, number: str):
        """POST .../pull-requests/{id}/comments {text}."""
        repo = self._repo(key, slug)
        pr = self._pull(repo, number)
        return 201, {}, self._add_comment(repo, pr, (call.json() or {}).get("text"))

    def d_activities(self, call: Call, key: str, slug: str, number: str):
        """GET .../pull-requests/{id}/activities (newest first)."""
        repo = self._repo(key, slug)
        pr = self._pull(repo, number)
        items = [
            {"id": c["id"], "action": "COMMENTED", "commentAction": "ADDED",
             "comment": self._comment_json(repo, pr, c)}
            for c in reversed(pr.comments)
        ]  # fmt: skip
        return self._page(call, items)

    def d_build_statuses(self, call: Call, sha: str):
        """GET /rest/build-status/1.0/commits/{sha}."""
        found = [s for r in self.repos.values() for s in r.statuses.get(sha, [])]
        return self._page(call, [dict(s, dateAdded=0) for s in found])


P = r"/repositories/([^/]+)/([^/]+)/pullrequests/(\d+)"
D = r"/projects/([^/]+)/repos/([^/]+)"
CLOUD_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"/repositories/([^/]+)", FakeBitbucket.c_list_repos),
    ("GET", r"/repositories/([^/]+)/([^/]+)", FakeBitbucket.c_get_repo),
    ("GET", r"/repositories/([^/]+)/([^/]+)/refs/branches/(.+)", FakeBitbucket.c_get_branch),
    ("GET", r"/repositories/([^/]+)/([^/]+)/pullrequests", FakeBitbucket.c_list_pulls),
    ("POST", r"/repositories/([^/]+)/([^/]+)/pullrequests", FakeBitbucket.c_create_pull),
    ("GET", P, FakeBitbucket.c_get_pull),
    ("PUT", P, FakeBitbucket.c_update_pull),
    ("POST", P + "/merge", FakeBitbucket.c_merge),
    ("POST", P + "/decline", FakeBitbucket.c_decline),
    ("GET", P + "/comments", FakeBitbucket.c_list_comments),
    ("POST", P + "/comments", FakeBitbucket.c_add_comment),
    ("GET", r"/repositories/([^/]+)/([^/]+)/commit/([0-9a-f]+)/statuses", FakeBitbucket.c_statuses),
]
DC_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"/projects/([^/]+)/repos", FakeBitbucket.d_list_repos),
    ("GET", D, FakeBitbucket.d_get_repo),
    ("GET", D + "/default-branch", FakeBitbucket.d_default_branch),
    ("GET", D + "/branches", FakeBitbucket.d_branches),
    ("GET", D + "/pull-requests", FakeBitbucket.d_list_pulls),
    ("POST", D + "/pull-requests", FakeBitbucket.d_create_pull),
    ("GET", D + r"/pull-requests/(\d+)", FakeBitbucket.d_get_pull),
    ("PUT", D + r"/pull-requests/(\d+)", FakeBitbucket.d_update_pull),
    ("GET", D + r"/pull-requests/(\d+)/merge", FakeBitbucket.d_merge_check),
    ("POST", D + r"/pull-requests/(\d+)/merge", FakeBitbucket.d_merge),
    ("POST", D + r"/pull-requests/(\d+)/decline", FakeBitbucket.d_decline),
    ("POST", D + r"/pull-requests/(\d+)/reopen", FakeBitbucket.d_reopen),
    ("POST", D + r"/pull-requests/(\d+)/comments", FakeBitbucket.d_add_comment),
    ("GET", D + r"/pull-requests/(\d+)/activities", FakeBitbucket.d_activities),
]
BUILD_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"/commits/([0-9a-f]+)", FakeBitbucket.d_build_statuses),
]
