"""A fake GitHub for tests: the REST endpoints the GitHub forge uses, GraphQL's draft mutations,
and git smart HTTP, on 127.0.0.1 with real bare repositories behind it.

The REST answers use GitHub's documented shapes and field names (what PyGithub parses), with
`url` fields pointing back here so lazy objects complete against the fake; lists paginate with
`per_page`/`page` and `Link` headers; errors come as `{"message", "errors", "documentation_url"}`.
API calls need `Authorization: token T` or `Bearer T`; git needs `Basic base64(user:T)`.
A GET answered 200 carries an `ETag` (a digest of its body); sent again with `If-None-Match` of
that ETag while nothing changed, it is answered 304 without a body, and, as on GitHub, not counted
against the primary rate limit: `rate_used` counts the API requests that are.

The API is served under `api_prefix` ("/api/v3" like GitHub Enterprise, or "" like api.github.com)
and git under `/git/OWNER/NAME.git` by `git http-backend`. Every request is recorded in `calls`.
Tests play the humans and CI: `close_pr`, `merge_pr`, `add_review`, `set_status`,
`add_check_run`; and inject faults with `inject` (rate limits, 502s, 502s after the work is done).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from resources.git import author_env, run_git
from tests import fake_forge_http as forge_http
from tests.fake_forge_http import EPOCH, Call, FakeForgeServer, Fault

DOCS = "https://docs.github.com/rest"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


class HttpError(Exception):
    """An error answer in GitHub's shape."""

    def __init__(self, status: int, message: str, errors: list | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON error body."""
        data: dict[str, Any] = {"message": self.message, "documentation_url": DOCS}
        if self.errors is not None:
            data["errors"] = self.errors
        data["status"] = str(self.status)
        return data


@dataclass
class PR:
    """A pull request's state."""

    number: int
    id: int
    title: str
    body: str | None
    head: str
    base: str
    user: str
    draft: bool = False
    state: str = "open"
    merged: bool = False
    merged_at: str | None = None
    closed_at: str | None = None
    merge_commit_sha: str | None = None
    frozen_head_sha: str | None = None
    labels: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    auto_merge: dict | None = None  # set by enablePullRequestAutoMerge: method and who
    reviews: list[dict] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""

    @property
    def node_id(self) -> str:
        """The GraphQL node id."""
        return base64.b64encode(f"PullRequest:{self.id}".encode()).decode()


@dataclass
class Repo:
    """A repository's state; `bare` is its git repository (None: listing only, no git)."""

    id: int
    owner: str
    name: str
    bare: Path | None = None
    default_branch: str = "main"
    private: bool = False
    archived: bool = False
    fork: bool = False
    language: str | None = None
    topics: list[str] = field(default_factory=list)
    description: str | None = None
    drafts_supported: bool = True
    collaborators: set[str] | None = None  # None: anyone may be asked to review
    allow_auto_merge: bool = False  # the repository setting "Allow auto-merge"
    requires_approval: bool = False  # branch protection: an approving review before merging
    pulls: dict[int, PR] = field(default_factory=dict)
    comments: dict[int, list[dict]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, list[dict]] = field(default_factory=dict)
    check_runs: dict[str, list[dict]] = field(default_factory=dict)
    next_number: int = 1

    @property
    def full_name(self) -> str:
        """OWNER/NAME."""
        return f"{self.owner}/{self.name}"


class FakeGitHub(FakeForgeServer):
    """The fake server and its state. Use as a context manager, or `start()`/`stop()`."""

    def __init__(
        self, token: str, root: Path, *, api_prefix: str = "/api/v3", login: str = "campaign-bot"
    ):
        super().__init__(token, root, api_prefix.rstrip("/"))
        self.graphql_path = (
            self.api_prefix.removesuffix("/v3") + "/graphql" if self.api_prefix else "/graphql"
        )
        self.login = login
        self.orgs: set[str] = set()
        self.users: set[str] = {login}
        self.repos: dict[str, Repo] = {}
        self.write_latency_s = 0.0
        self.rate_used = 0  # API requests counted against the primary rate limit (not 304s)
        self.writes_in_flight = 0
        self.max_writes_in_flight = 0

    def answer(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """git under `/git/`, the API elsewhere."""
        if call.path.startswith("/git/"):
            return self.handle_git(call)
        return forge_http.json_answer(*self.handle_api(call))

    # GitHub App authentication -------------------------------------------------------------------

    app: dict | None = None  # set by enable_app
    clock_shift_s = 0.0  # added to the time app tokens are checked against (tests move it)

    def enable_app(
        self, app_id: int, installation_id: int, public_key_pem: str, token_ttl_s: float = 3600
    ) -> None:
        """Act as GitHub for a GitHub App: `POST /app/installations/{id}/access_tokens` with a
        JWT (RS256, verified against `public_key_pem`, `iss` the app id, not expired) answers
        201 with a new installation token valid `token_ttl_s`; the API and git take such a
        token until it expires (then 401). `app_tokens` holds token -> expiry (epoch s)."""
        self.app = {"app_id": app_id, "installation_id": installation_id,
                    "public_key": public_key_pem, "ttl": token_ttl_s}  # fmt: skip
        self.app_tokens: dict[str, float] = {}
        self.app_jwt_failures: list[str] = []

    def app_now(self) -> float:
        """The time app tokens are checked against: the real one plus `clock_shift_s`."""
        return time.time() + self.clock_shift_s

    def _accepts(self, token: str) -> bool:
        """Whether `token` authenticates: the fake's token, or an app token not yet expired."""
        if token == self.token:
            return True
        expires = (self.app_tokens if self.app is not None else {}).get(token)
        return expires is not None and self.app_now() < expires

    def _mint_app_token(self, call: Call, scheme: str, value: str):
        """Endpoint: POST /app/installations/{id}/access_tokens (authenticated by the app JWT)."""
        import jwt  # PyJWT, as the client

        assert self.app is not None
        wanted = call.path.removeprefix(self.api_prefix).split("/")[3]
        try:
            claims = jwt.decode(value, self.app["public_key"], algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False})  # fmt: skip
        except jwt.PyJWTError as exc:
            self.app_jwt_failures.append(type(exc).__name__)
            claims = None
        now = self.app_now()
        if (
            scheme.lower() != "bearer"
            or claims is None
            or str(claims.get("iss")) != str(self.app["app_id"])
            or not claims.get("exp") or claims["exp"] <= now
            or claims.get("iat", now + 120) > now + 60
            or claims["exp"] - claims.get("iat", 0) > 660
        ):  # fmt: skip
            return 401, {}, {"message": "A JSON web token could not be decoded",
                             "documentation_url": DOCS}  # fmt: skip
        if wanted != str(self.app["installation_id"]):
            return 404, {}, {"message": "Not Found", "documentation_url": DOCS}
        token = "ghs_" + os.urandom(18).hex()
        expires = now + self.app["ttl"]
        with self._lock:
            self.app_tokens[token] = expires
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, {}, {"token": token, "expires_at": stamp, "permissions": {},
                         "repository_selection": "all"}  # fmt: skip

    @property
    def base_url(self) -> str:
        """The REST API root to give the client."""
        return f"{self.web}{self.api_prefix}"

    # state set-up (tests) ------------------------------------------------------------------------

    def _now(self) -> str:
        """A timestamp one second after the previous one: every change moves `updated_at`."""
        return (EPOCH + timedelta(seconds=self._next_tick())).strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_org(self, org: str) -> None:
        """An organization."""
        self.orgs.add(org)

    def add_user(self, login: str) -> None:
        """A user."""
        self.users.add(login)

    def add_repo(
        self, full_name: str, files: dict[str, str] | None = None, *, branch: str = "main", **kw
    ) -> Repo:
        """A repository; with `files`, a bare git repository with one commit on `branch`."""
        owner, name = full_name.split("/")
        if owner not in self.orgs:
            self.users.add(owner)
        repo = Repo(id=self._next_id(), owner=owner, name=name, default_branch=branch, **kw)
        if files is not None:
            repo.bare = forge_http.init_bare(self.git_root / owner / f"{name}.git", branch)
            forge_http.commit_files(repo.bare, branch, files, parent=None)
        with self._lock:
            self.repos[full_name] = repo
        return repo

    def create_branch(self, full_name: str, branch: str, files: dict[str, str]) -> str:
        """A new commit on `branch`, on top of the default branch; returns its sha."""
        repo = self.repos[full_name]
        assert repo.bare is not None
        return forge_http.commit_files(
            repo.bare, branch, files, parent=self.refs(repo)[repo.default_branch]
        )

    def refs(self, repo: Repo | str) -> dict[str, str]:
        """Branch name -> sha, read from the bare repository."""
        repo = self.repos[repo] if isinstance(repo, str) else repo
        return forge_http.branch_refs(repo.bare)

    def inject(
        self,
        kind: str,
        *,
        methods: set[str] | None = None,
        path: str = ".*",
        probability: float = 1.0,
        times: int | None = None,
        per_request: int | None = None,
        retry_after: int = 1,
        reset_in: int = 5,
    ) -> Fault:
        """Make matching requests (`path` regex on the path without the API prefix) fail."""
        return self._add_fault(Fault(
            kind, methods or WRITES, re.compile(path), times=times, retry_after=retry_after,
            reset_in=reset_in, probability=probability, per_request=per_request,
        ))  # fmt: skip

    # the humans and CI -------------------------------------------------------------------------

    def pr(self, full_name: str, number: int) -> PR:
        """A pull request's state."""
        return self.repos[full_name].pulls[number]

    def close_pr(self, full_name: str, number: int) -> None:
        """Someone closes the pull request."""
        with self._lock:
            repo = self.repos[full_name]
            pr = repo.pulls[number]
            pr.frozen_head_sha = self._head_sha(repo, pr, self.refs(repo))
            pr.state, pr.closed_at = "closed", self._now()
            pr.updated_at = pr.closed_at

    def merge_pr(self, full_name: str, number: int) -> None:
        """Someone merges the pull request."""
        with self._lock:
            repo = self.repos[full_name]
            self._merge(repo, repo.pulls[number], "merge", None)

    def add_review(
        self,
        full_name: str,
        number: int,
        login: str,
        state: str,
        body: str = "",
        comments: list[tuple[str, int, str]] | None = None,
    ) -> int:
        """`login` submits a review: APPROVED, CHANGES_REQUESTED, COMMENTED or DISMISSED, with
        line `comments` on the diff as (path, line, body). Returns the review's id."""
        with self._lock:
            repo = self.repos[full_name]
            pr = repo.pulls[number]
            self.users.add(login)
            review_id = self._next_id()
            pr.reviews.append(
                {
                    "id": review_id,
                    "user": login,
                    "state": state,
                    "body": body,
                    "commit_id": self._head_sha(repo, pr, self.refs(repo)),
                    "submitted_at": self._now(),
                    "comments": [
                        {"id": self._next_id(), "path": path, "line": line, "body": text}
                        for path, line, text in comments or []
                    ],
                }
            )
            if login in pr.reviewers:
                pr.reviewers.remove(login)
        return review_id

    def set_status(
        self, full_name: str, sha: str, context: str, state: str,
        description: str | None = None, target_url: str | None = None,
    ) -> None:  # fmt: skip
        """A commit status (success, failure, error, pending) for `context` on `sha`, with an
        optional description and target URL (where CI shows its log)."""
        with self._lock:
            statuses = self.repos[full_name].statuses.setdefault(sha, [])
            statuses[:] = [s for s in statuses if s["context"] != context]
            statuses.append({"id": self._next_id(), "context": context, "state": state,
                             "at": self._now(), "description": description,
                             "target_url": target_url})  # fmt: skip

    def add_check_run(
        self, full_name: str, sha: str, name: str, status: str, conclusion: str | None = None,
        output: dict | None = None, details_url: str | None = None,
    ) -> None:  # fmt: skip
        """A check run (status queued/in_progress/completed) on `sha`; replaces one of that name.
        `output` is its title, summary and text (what CI reports, e.g. a log)."""
        with self._lock:
            runs = self.repos[full_name].check_runs.setdefault(sha, [])
            runs[:] = [r for r in runs if r["name"] != name]
            runs.append({"id": self._next_id(), "name": name, "status": status,
                         "conclusion": conclusion, "at": self._now(), "output": output or {},
                         "details_url": details_url})  # fmt: skip

    # JSON shapes ---------------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _user_json(self, login: str) -> dict:
        kind = "Organization" if login in self.orgs else "User"
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login, "id": uid, "node_id": f"U_{uid}",
            "avatar_url": f"{self.web}/avatars/{login}", "gravatar_id": "",
            "url": self._api(f"/{'orgs' if kind == 'Organization' else 'users'}/{login}"),
            "html_url": f"{self.web}/{login}", "repos_url": self._api(f"/users/{login}/repos"),
            "type": kind, "site_admin": False,
        }  # fmt: skip

    def _repo_json(self, repo: Repo) -> dict:
        full = repo.full_name
        return {
            "id": repo.id, "node_id": f"R_{repo.id}", "name": repo.name, "full_name": full,
            "owner": self._user_json(repo.owner), "private": repo.private,
            "html_url": f"{self.web}/{full}", "description": repo.description,
            "fork": repo.fork, "url": self._api(f"/repos/{full}"),
            "pulls_url": self._api(f"/repos/{full}/pulls{{/number}}"),
            "git_url": f"git://127.0.0.1/{full}.git", "ssh_url": f"git@127.0.0.1:{full}.git",
            "clone_url": f"{self.web}/git/{full}.git", "svn_url": f"{self.web}/{full}",
            "homepage": None, "size": 1, "stargazers_count": 0, "watchers_count": 0,
            "language": repo.language, "has_issues": True, "has_projects": True,
            "has_downloads": True, "has_wiki": True, "has_pages": False, "forks_count": 0,
            "archived": repo.archived, "disabled": False, "open_issues_count": sum(
                1 for p in repo.pulls.values() if p.state == "open"
            ),
            "license": None, "allow_forking": True, "is_template": False,
            "topics": list(repo.topics), "visibility": "private" if repo.private else "public",
            "forks": 0, "open_issues": 0, "watchers": 0, "default_branch": repo.default_branch,
            "allow_auto_merge": repo.allow_auto_merge,
            "permissions": {"admin": True, "maintain": True, "push": True, "triage": True,
                            "pull": True},
            "created_at": EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pushed_at": EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }  # fmt: skip

    def _label_json(self, repo: Repo, name: str) -> dict:
        lid = repo.labels.setdefault(name, self._next_id())
        return {
            "id": lid, "node_id": f"LA_{lid}", "name": name, "color": "ededed",
            "default": False, "description": None,
            "url": self._api(f"/repos/{repo.full_name}/labels/{quote(name)}"),
        }  # fmt: skip

    def _head_sha(self, repo: Repo, pr: PR, refs: dict[str, str]) -> str | None:
        return pr.frozen_head_sha or refs.get(pr.head)

    def _mergeable(self, repo: Repo, pr: PR, refs: dict[str, str]) -> bool:
        return forge_http.merge_tree(repo.bare, refs.get(pr.base), refs.get(pr.head)) is not None

    def _combined_state(self, repo: Repo, sha: str | None) -> str:
        statuses = repo.statuses.get(sha or "", [])
        runs = repo.check_runs.get(sha or "", [])
        if any(s["state"] in ("failure", "error") for s in statuses) or any(
            r["conclusion"] in ("failure", "timed_out", "cancelled") for r in runs
        ):
            return "failure"
        if any(s["state"] == "pending" for s in statuses) or any(
            r["status"] != "completed" for r in runs
        ):
            return "pending"
        return "success"

    def _pr_json(self, repo: Repo, pr: PR, refs: dict[str, str], full: bool = True) -> dict:
        api = self._api(f"/repos/{repo.full_name}")
        html = f"{self.web}/{repo.full_name}/pull/{pr.number}"
        head_sha = self._head_sha(repo, pr, refs)
        owner = self._user_json(repo.owner)
        repo_json = self._repo_json(repo)

        def part(ref: str, sha: str | None) -> dict:
            return {"label": f"{repo.owner}:{ref}", "ref": ref, "sha": sha, "user": owner,
                    "repo": repo_json}  # fmt: skip

        data = {
            "url": f"{api}/pulls/{pr.number}", "id": pr.id, "node_id": pr.node_id,
            "html_url": html, "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pr.number}",
            "commits_url": f"{api}/pulls/{pr.number}/commits",
            "review_comments_url": f"{api}/pulls/{pr.number}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
            "number": pr.number, "state": pr.state, "locked": False, "title": pr.title,
            "user": self._user_json(pr.user), "body": pr.body,
            "labels": [self._label_json(repo, name) for name in pr.labels],
            "milestone": None, "active_lock_reason": None,
            "created_at": pr.created_at, "updated_at": pr.updated_at,
            "closed_at": pr.closed_at, "merged_at": pr.merged_at,
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": self._user_json(pr.assignees[0]) if pr.assignees else None,
            "assignees": [self._user_json(u) for u in pr.assignees],
            "requested_reviewers": [self._user_json(u) for u in pr.reviewers],
            "requested_teams": [
                {"id": int(hashlib.sha1(t.encode()).hexdigest()[:6], 16), "node_id": "T",
                 "slug": t, "name": t,
                 "url": self._api(f"/orgs/{repo.owner}/teams/{t}")}
                for t in pr.teams
            ],
            "head": part(pr.head, head_sha), "base": part(pr.base, refs.get(pr.base)),
            "_links": {"self": {"href": f"{api}/pulls/{pr.number}"}, "html": {"href": html}},
            "author_association": "MEMBER", "auto_merge": pr.auto_merge, "draft": pr.draft,
        }  # fmt: skip
        if full:  # the "pull-request" schema; lists use "pull-request-simple", without these
            is_open = pr.state == "open"
            mergeable = self._mergeable(repo, pr, refs) if is_open else None
            if not is_open:
                mergeable_state = "unknown"
            elif pr.draft:
                mergeable_state = "draft"
            elif not mergeable:
                mergeable_state = "dirty"
            elif repo.requires_approval and not any(
                r["state"] == "APPROVED" for r in pr.reviews
            ):  # a required review is missing: GitHub says blocked
                mergeable_state = "blocked"
            elif self._combined_state(repo, head_sha) != "success":
                mergeable_state = "unstable"
            else:
                mergeable_state = "clean"
            data.update(
                {
                    "merged": pr.merged, "mergeable": mergeable, "rebaseable": mergeable,
                    "mergeable_state": mergeable_state,
                    "merged_by": self._user_json(self.login) if pr.merged else None,
                    "comments": len(repo.comments.get(pr.number, [])), "review_comments": 0,
                    "maintainer_can_modify": False, "commits": 1, "additions": 1,
                    "deletions": 0, "changed_files": 1,
                }
            )  # fmt: skip
        return data

    def _comment_json(self, repo: Repo, number: int, c: dict) -> dict:
        api = self._api(f"/repos/{repo.full_name}")
        return {
            "id": c["id"], "node_id": f"IC_{c['id']}", "url": f"{api}/issues/comments/{c['id']}",
            "html_url": f"{self.web}/{repo.full_name}/pull/{number}#issuecomment-{c['id']}",
            "body": c["body"], "user": self._user_json(c["user"]),
            "created_at": c["at"], "updated_at": c["at"],
            "issue_url": f"{api}/issues/{number}", "author_association": "MEMBER",
        }  # fmt: skip

    # request handling ----------------------------------------------------------------------------

    def _rate_headers(self, remaining: int = 4999, reset_in: int = 3600) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time()) + reset_in),
            "X-RateLimit-Used": str(5000 - remaining),
            "X-RateLimit-Resource": "core",
        }

    def handle_api(self, call: Call) -> tuple[int, dict[str, str], Any]:
        """Answer one API request: (status, headers, JSON body or None)."""
        auth = call.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if (
            self.app is not None
            and call.method == "POST"
            and re.fullmatch(
                r"/app/installations/(\d+)/access_tokens", call.path.removeprefix(self.api_prefix)
            )
        ):
            return self._mint_app_token(call, scheme, value)
        if scheme.lower() not in ("token", "bearer") or not self._accepts(value):
            return 401, {}, {"message": "Bad credentials", "documentation_url": DOCS,
                             "status": "401"}  # fmt: skip
        fault = self._fault_for(call, self.api_path(call.path))
        if fault is not None and fault.kind != "502_after":
            return self._fault_answer(fault)
        write = call.method in WRITES
        if write:
            with self._lock:
                self.writes_in_flight += 1
                self.max_writes_in_flight = max(self.max_writes_in_flight, self.writes_in_flight)
        try:
            if write and self.write_latency_s:
                time.sleep(self.write_latency_s)
            try:
                status, headers, body = self._route(call)
            except HttpError as err:
                status, headers, body = err.status, err.headers, err.body()
        finally:
            if write:
                with self._lock:
                    self.writes_in_flight -= 1
        if fault is not None:  # 502_after: done, but the answer is lost
            return self._fault_answer(fault)
        if call.method == "GET" and status == 200:
            digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
            etag = f'W/"{digest}"'
            headers = {**headers, "ETag": etag}
            if etag in [t.strip() for t in call.headers.get("if-none-match", "").split(",")]:
                return 304, {**self._rate_headers(), "ETag": etag}, None
        with self._lock:
            self.rate_used += 1
        return status, {**self._rate_headers(), **headers}, body

    def _fault_answer(self, fault: Fault) -> tuple[int, dict[str, str], Any]:
        if fault.kind == "secondary":
            return (
                403,
                {"Retry-After": str(fault.retry_after), **self._rate_headers()},
                {
                    "message": "You have exceeded a secondary rate limit. Please wait a few "
                    "minutes before you try again. If you reach out to GitHub Support for help, "
                    "please include the request ID 0000:1111:2222.",
                    "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api"
                    "#about-secondary-rate-limits",
                    "status": "403",
                },
            )
        if fault.kind == "primary":
            return (
                403,
                self._rate_headers(0, fault.reset_in),
                {
                    "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub "
                    "Support for help, please include the request ID 0000:1111:2222.",
                    "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api",
                    "status": "403",
                },
            )
        if fault.kind == "404":  # what GitHub says of something gone (or hidden from the token)
            return 404, self._rate_headers(), {"message": "Not Found", "documentation_url": DOCS,
                                               "status": "404"}  # fmt: skip
        if fault.kind == "429":
            return (
                429,
                {"Retry-After": str(fault.retry_after)},
                {"message": "Too Many Requests", "documentation_url": DOCS, "status": "429"},
            )
        return 502, {"Content-Type": "text/html"}, "<html><body><h1>502 Bad Gateway</h1>"

    def _paginate(self, call: Call, items: list, wrap=None) -> tuple[int, dict[str, str], Any]:
        page = forge_http.page_of(call, items, 30)
        links = []
        if page.number > 1:
            links += [forge_http.page_link(self.web, call, page.number - 1, "prev"),
                      forge_http.page_link(self.web, call, 1, "first")]  # fmt: skip
        if page.number < page.pages:
            links += [forge_http.page_link(self.web, call, page.number + 1, "next"),
                      forge_http.page_link(self.web, call, page.pages, "last")]  # fmt: skip
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, headers, wrap(page.chunk) if wrap else page.chunk

    def _repo_or_404(self, owner: str, name: str) -> Repo:
        repo = self.repos.get(f"{owner}/{name}")
        if repo is None:
            raise HttpError(404, "Not Found")
        return repo

    def _pull_or_404(self, repo: Repo, number: str) -> PR:
        pr = repo.pulls.get(int(number))
        if pr is None:
            raise HttpError(404, "Not Found")
        return pr

    def _route(self, call: Call) -> tuple[int, dict[str, str], Any]:
        if call.path == self.graphql_path and call.method == "POST":
            return self._graphql(call)
        path = call.path.removeprefix(self.api_prefix)
        for method, pattern, handler in ROUTES:
            if method != call.method:
                continue
            m = re.fullmatch(pattern, path)
            if m:
                args = [unquote(g) for g in m.groups()]
                with self._lock:
                    return handler(self, call, *args)
        raise HttpError(404, "Not Found")

    # endpoints -----------------------------------------------------------------------------------

    def get_user(self, call: Call):
        """Endpoint: GET /user."""
        return 200, {}, self._user_json(self.login)

    def get_named_user(self, call: Call, login: str):
        """Endpoint: GET /users/{username}."""
        if login not in self.users:
            raise HttpError(404, "Not Found")
        return 200, {}, self._user_json(login)

    def get_org(self, call: Call, org: str):
        """Endpoint: GET /orgs/{org}."""
        if org not in self.orgs:
            raise HttpError(404, "Not Found")
        return 200, {}, {**self._user_json(org), "repos_url": self._api(f"/orgs/{org}/repos")}

    def _sorted(self, repos) -> list[Repo]:
        return sorted(repos, key=lambda r: r.full_name.lower())

    def list_org_repos(self, call: Call, org: str):
        """Endpoint: GET /orgs/{org}/repos."""
        if org not in self.orgs:
            raise HttpError(404, "Not Found")
        kind = call.query.get("type", ["all"])[0]
        repos = [r for r in self.repos.values() if r.owner == org]
        if kind == "forks":
            repos = [r for r in repos if r.fork]
        elif kind == "sources":
            repos = [r for r in repos if not r.fork]
        elif kind in ("public", "private"):
            repos = [r for r in repos if r.private == (kind == "private")]
        return self._paginate(call, [self._repo_json(r) for r in self._sorted(repos)])

    def list_user_repos(self, call: Call, login: str):
        """Endpoint: GET /users/{username}/repos."""
        if login not in self.users:
            raise HttpError(404, "Not Found")
        repos = [r for r in self.repos.values() if r.owner == login and not r.private]
        return self._paginate(call, [self._repo_json(r) for r in self._sorted(repos)])

    def list_my_repos(self, call: Call):
        """Endpoint: GET /user/repos."""
        repos = [r for r in self.repos.values() if r.owner == self.login]
        return self._paginate(call, [self._repo_json(r) for r in self._sorted(repos)])

    def search_repos(self, call: Call):
        """Endpoint: GET /search/repositories."""
        q = call.query.get("q", [""])[0]
        if not q.strip():
            raise HttpError(422, "Validation Failed",
                            [{"resource": "Search", "field": "q", "code": "missing"}])  # fmt: skip
        repos = self._sorted(self.repos.values())
        fork_mode = "exclude"
        for token in q.split():
            key, sep, value = token.partition(":")
            if not sep:
                word = token.lower()
                repos = [
                    r
                    for r in repos
                    if word in r.name.lower() or word in (r.description or "").lower()
                ]
            elif key in ("org", "user"):
                repos = [r for r in repos if r.owner.lower() == value.lower()]
            elif key == "topic":
                repos = [r for r in repos if value.lower() in r.topics]
            elif key == "language":
                repos = [r for r in repos if (r.language or "").lower() == value.lower()]
            elif key == "archived":
                repos = [r for r in repos if r.archived == (value == "true")]
            elif key == "fork":
                fork_mode = {"true": "include", "only": "only"}.get(value, "exclude")
            elif key == "repo":
                repos = [r for r in repos if r.full_name.lower() == value.lower()]
            elif key == "in":
                continue
            else:
                error = {"message": f"unknown qualifier {key}", "resource": "Search",
                         "field": "q", "code": "invalid"}  # fmt: skip
                raise HttpError(422, "Validation Failed", [error])
        if fork_mode == "exclude":
            repos = [r for r in repos if not r.fork]
        elif fork_mode == "only":
            repos = [r for r in repos if r.fork]
        items = [{**self._repo_json(r), "score": 1.0} for r in repos]
        return self._paginate(
            call, items,
            lambda chunk: {"total_count": len(items), "incomplete_results": False, "items": chunk},
        )  # fmt: skip

    def get_repo(self, call: Call, owner: str, name: str):
        """Endpoint: GET /repos/{owner}/{repo}."""
        return 200, {}, self._repo_json(self._repo_or_404(owner, name))

    def get_branch(self, call: Call, owner: str, name: str, branch: str):
        """Endpoint: GET /repos/{owner}/{repo}/branches/{branch}."""
        repo = self._repo_or_404(owner, name)
        sha = self.refs(repo).get(branch)
        if sha is None:
            raise HttpError(404, "Branch not found")
        api = self._api(f"/repos/{repo.full_name}")
        return 200, {}, {
            "name": branch,
            "commit": {"sha": sha, "node_id": f"C_{sha}", "url": f"{api}/commits/{sha}",
                       "html_url": f"{self.web}/{repo.full_name}/commit/{sha}"},
            "_links": {"self": f"{api}/branches/{quote(branch)}",
                       "html": f"{self.web}/{repo.full_name}/tree/{branch}"},
            "protected": branch == repo.default_branch,
            "protection_url": f"{api}/branches/{quote(branch)}/protection",
        }  # fmt: skip

    def list_pulls(self, call: Call, owner: str, name: str):
        """Endpoint: GET /repos/{owner}/{repo}/pulls."""
        repo = self._repo_or_404(owner, name)
        state = call.query.get("state", ["open"])[0]
        head = call.query.get("head", [None])[0]
        base = call.query.get("base", [None])[0]
        pulls = list(repo.pulls.values())
        if state != "all":
            pulls = [p for p in pulls if p.state == state]
        if head:
            owner_part, _, ref = head.partition(":")
            pulls = [p for p in pulls if ref and p.head == ref and owner_part == repo.owner]
        if base:
            pulls = [p for p in pulls if p.base == base]
        pulls.sort(
            key=lambda p: p.number, reverse=call.query.get("direction", ["desc"])[0] != "asc"
        )
        refs = self.refs(repo)
        return self._paginate(call, [self._pr_json(repo, p, refs, full=False) for p in pulls])

    def create_pull(self, call: Call, owner: str, name: str):
        """Endpoint: POST /repos/{owner}/{repo}/pulls."""
        repo = self._repo_or_404(owner, name)
        data = call.json() or {}
        missing = [f for f in ("title", "head", "base") if not data.get(f)]
        if missing:
            raise HttpError(422, "Validation Failed", [
                {"resource": "PullRequest", "field": f, "code": "missing_field"} for f in missing
            ])  # fmt: skip
        head = data["head"].split(":", 1)[-1]
        refs = self.refs(repo)
        if head not in refs:
            raise HttpError(
                422,
                "Validation Failed",
                [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
            )
        if data["base"] not in refs:
            raise HttpError(
                422,
                "Validation Failed",
                [{"resource": "PullRequest", "field": "base", "code": "invalid"}],
            )
        if any(p.head == head and p.base == data["base"] and p.state == "open"
               for p in repo.pulls.values()):  # fmt: skip
            raise HttpError(422, "Validation Failed", [{
                "resource": "PullRequest", "code": "custom",
                "message": f"A pull request already exists for {repo.owner}:{head}.",
            }])  # fmt: skip
        if refs[head] == refs[data["base"]]:
            raise HttpError(422, "Validation Failed", [{
                "resource": "PullRequest", "code": "custom",
                "message": f"No commits between {data['base']} and {head}",
            }])  # fmt: skip
        if data.get("draft") and not repo.drafts_supported:
            raise HttpError(422, "Validation Failed", [{
                "resource": "PullRequest", "code": "custom",
                "message": "Draft pull requests are not supported in this repository.",
            }])  # fmt: skip
        now = self._now()
        pr = PR(
            number=repo.next_number, id=self._next_id(), title=data["title"],
            body=data.get("body") or None, head=head, base=data["base"], user=self.login,
            draft=bool(data.get("draft")), created_at=now, updated_at=now,
        )  # fmt: skip
        repo.next_number += 1
        repo.pulls[pr.number] = pr
        location = self._api(f"/repos/{repo.full_name}/pulls/{pr.number}")
        return 201, {"Location": location}, self._pr_json(repo, pr, refs)

    def get_pull(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: GET /repos/{owner}/{repo}/pulls/{number}."""
        repo = self._repo_or_404(owner, name)
        return 200, {}, self._pr_json(repo, self._pull_or_404(repo, number), self.refs(repo))

    def update_pull(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: PATCH /repos/{owner}/{repo}/pulls/{number}."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        data = call.json() or {}
        refs = self.refs(repo)
        if "title" in data:
            pr.title = data["title"]
        if "body" in data:
            pr.body = data["body"] or None
        if "base" in data:
            if data["base"] not in refs:
                raise HttpError(
                    422,
                    "Validation Failed",
                    [{"resource": "PullRequest", "field": "base", "code": "invalid"}],
                )
            pr.base = data["base"]
        if data.get("state") == "closed" and pr.state == "open":
            pr.frozen_head_sha = refs.get(pr.head)
            pr.state, pr.closed_at = "closed", self._now()
        elif data.get("state") == "open" and pr.state == "closed" and not pr.merged:
            pr.state, pr.closed_at, pr.frozen_head_sha = "open", None, None
        # "draft" is not a field of this endpoint: GitHub ignores it, so does the fake
        pr.updated_at = self._now()
        return 200, {}, self._pr_json(repo, pr, refs)

    def _merge(self, repo: Repo, pr: PR, method: str, title: str | None) -> str:
        assert repo.bare is not None
        refs = self.refs(repo)
        base_sha, head_sha = refs[pr.base], refs[pr.head]
        ancestor = run_git(["merge-base", base_sha, head_sha], repo.bare).strip() == base_sha
        if method == "merge" and ancestor:
            new = run_git(
                ["commit-tree", f"{head_sha}^{{tree}}", "-p", base_sha, "-p", head_sha,
                 "-m", title or f"Merge pull request #{pr.number} from {repo.owner}/{pr.head}"],
                repo.bare, env=author_env("GitHub", "noreply@github.com"),
            ).strip()  # fmt: skip
        else:
            tree = run_git(["merge-tree", "--write-tree", base_sha, head_sha], repo.bare).split()[0]
            parents = ["-p", base_sha] + (["-p", head_sha] if method == "merge" else [])
            new = run_git(
                ["commit-tree", tree, *parents, "-m", title or f"{pr.title} (#{pr.number})"],
                repo.bare, env=author_env("GitHub", "noreply@github.com"),
            ).strip()  # fmt: skip
        run_git(["update-ref", f"refs/heads/{pr.base}", new, base_sha], repo.bare)
        now = self._now()
        pr.frozen_head_sha = head_sha
        pr.state, pr.merged, pr.merged_at, pr.closed_at = "closed", True, now, now
        pr.merge_commit_sha, pr.updated_at = new, now
        return new

    def merge_pull(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: PUT /repos/{owner}/{repo}/pulls/{number}/merge."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        data = call.json() or {}
        refs = self.refs(repo)
        if pr.state != "open":
            raise HttpError(405, "Pull Request is not mergeable")
        if pr.draft:
            raise HttpError(405, "Pull Request is still a draft")
        if data.get("sha") and data["sha"] != refs.get(pr.head):
            raise HttpError(409, "Head branch was modified. Review and try the merge again.")
        if not self._mergeable(repo, pr, refs):
            raise HttpError(405, "Pull Request is not mergeable")
        sha = self._merge(repo, pr, data.get("merge_method", "merge"), data.get("commit_title"))
        return 200, {}, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def is_merged(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: GET /repos/{owner}/{repo}/pulls/{number}/merge."""
        repo = self._repo_or_404(owner, name)
        if self._pull_or_404(repo, number).merged:
            return 204, {}, None
        raise HttpError(404, "Not Found")

    def list_reviews(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: GET /repos/{owner}/{repo}/pulls/{number}/reviews."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        api = self._api(f"/repos/{repo.full_name}/pulls/{pr.number}")
        items = [
            {
                "id": r["id"], "node_id": f"PRR_{r['id']}", "user": self._user_json(r["user"]),
                "body": r.get("body", ""), "state": r["state"], "commit_id": r["commit_id"],
                "html_url": f"{self.web}/{repo.full_name}/pull/{pr.number}"
                            f"#pullrequestreview-{r['id']}",
                "pull_request_url": api, "submitted_at": r["submitted_at"],
                "author_association": "MEMBER",
                "_links": {"html": {"href": ""}, "pull_request": {"href": api}},
            }
            for r in pr.reviews
        ]  # fmt: skip
        return self._paginate(call, items)

    def list_review_comments(self, call: Call, owner: str, name: str, number: str, review: str):
        """Endpoint: GET /repos/{owner}/{repo}/pulls/{number}/reviews/{review_id}/comments."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        found = next((r for r in pr.reviews if str(r["id"]) == review), None)
        if found is None:
            raise HttpError(404, "Not Found")
        api = self._api(f"/repos/{repo.full_name}/pulls")
        items = [
            {
                "id": c["id"], "node_id": f"PRRC_{c['id']}", "pull_request_review_id": found["id"],
                "path": c["path"], "line": c["line"], "original_line": c["line"], "side": "RIGHT",
                "position": c["line"], "original_position": c["line"], "body": c["body"],
                "diff_hunk": "", "commit_id": found["commit_id"],
                "original_commit_id": found["commit_id"], "user": self._user_json(found["user"]),
                "created_at": found["submitted_at"], "updated_at": found["submitted_at"],
                "url": f"{api}/comments/{c['id']}", "pull_request_url": f"{api}/{pr.number}",
                "html_url": f"{self.web}/{repo.full_name}/pull/{pr.number}#discussion_r{c['id']}",
                "author_association": "MEMBER",
            }
            for c in found["comments"]
        ]  # fmt: skip
        return self._paginate(call, items)

    def request_reviewers(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: POST /repos/{owner}/{repo}/pulls/{number}/requested_reviewers."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        data = call.json() or {}
        users, teams = list(data.get("reviewers") or []), list(data.get("team_reviewers") or [])
        if pr.user in users:
            raise HttpError(422, "Review cannot be requested from pull request author.")
        if repo.collaborators is not None and any(u not in repo.collaborators for u in users):
            raise HttpError(
                422, "Reviews may only be requested from collaborators. One or more of the "
                "users or teams you specified is not a collaborator of the "
                f"{repo.full_name} repository.",
            )  # fmt: skip
        for user in users:
            self.users.add(user)
            if user not in pr.reviewers:
                pr.reviewers.append(user)
        if any("/" in t for t in teams):  # GitHub takes team slugs, not org/slug
            raise HttpError(422, "Could not resolve to a node with the team slugs given.")
        for team in teams:
            if team not in pr.teams:
                pr.teams.append(team)
        pr.updated_at = self._now()
        return 201, {}, self._pr_json(repo, pr, self.refs(repo), full=False)

    def add_assignees(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: POST /repos/{owner}/{repo}/issues/{number}/assignees (users who may not be
        assigned are left out silently, as GitHub does; here: none is refused)."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        for user in (call.json() or {}).get("assignees") or []:
            self.users.add(user)
            if user not in pr.assignees:
                pr.assignees.append(user)
        pr.updated_at = self._now()
        return 201, {}, self._pr_json(repo, pr, self.refs(repo), full=False)

    def list_comments(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: GET /repos/{owner}/{repo}/issues/{number}/comments."""
        repo = self._repo_or_404(owner, name)
        self._pull_or_404(repo, number)
        since = call.query.get("since", [""])[0]
        items = [
            self._comment_json(repo, int(number), c)
            for c in repo.comments.get(int(number), [])
            if not since or c["at"] >= since
        ]
        return self._paginate(call, items)

    def add_comment(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: POST /repos/{owner}/{repo}/issues/{number}/comments."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        body = (call.json() or {}).get("body")
        if not body:
            raise HttpError(
                422,
                "Validation Failed",
                [{"resource": "IssueComment", "field": "body", "code": "missing_field"}],
            )
        # a wall-clock timestamp, so that `since` filters work for clients
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        comment = {"id": self._next_id(), "body": body, "user": self.login, "at": at}
        repo.comments.setdefault(pr.number, []).append(comment)
        pr.updated_at = self._now()
        return 201, {}, self._comment_json(repo, pr.number, comment)

    def _label_names(self, call: Call) -> list[str]:
        data = call.json()
        if isinstance(data, dict):
            data = data.get("labels")
        names = [d["name"] if isinstance(d, dict) else d for d in data or []]
        if not all(isinstance(n, str) and n for n in names):
            raise HttpError(422, "Invalid request.\n\nInvalid label names.")
        return names

    def list_labels(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: GET /repos/{owner}/{repo}/issues/{number}/labels."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        return self._paginate(call, [self._label_json(repo, n) for n in pr.labels])

    def add_labels(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: POST /repos/{owner}/{repo}/issues/{number}/labels."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        for label in self._label_names(call):
            if label.lower() not in (n.lower() for n in pr.labels):
                pr.labels.append(label)
        pr.updated_at = self._now()
        return 200, {}, [self._label_json(repo, n) for n in pr.labels]

    def set_labels(self, call: Call, owner: str, name: str, number: str):
        """Endpoint: PUT /repos/{owner}/{repo}/issues/{number}/labels."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        pr.labels = list(dict.fromkeys(self._label_names(call)))
        pr.updated_at = self._now()
        return 200, {}, [self._label_json(repo, n) for n in pr.labels]

    def remove_label(self, call: Call, owner: str, name: str, number: str, label: str):
        """Endpoint: DELETE /repos/{owner}/{repo}/issues/{number}/labels/{name}."""
        repo = self._repo_or_404(owner, name)
        pr = self._pull_or_404(repo, number)
        if label not in pr.labels:
            raise HttpError(404, "Label does not exist")
        pr.labels.remove(label)
        pr.updated_at = self._now()
        return 200, {}, [self._label_json(repo, n) for n in pr.labels]

    def _sha_of(self, repo: Repo, ref: str) -> str:
        if re.fullmatch(r"[0-9a-f]{40}", ref):
            return ref
        sha = self.refs(repo).get(ref)
        if sha is None:
            raise HttpError(422, f"No commit found for SHA: {ref}")
        return sha

    def combined_status(self, call: Call, owner: str, name: str, ref: str):
        """Endpoint: GET /repos/{owner}/{repo}/commits/{ref}/status."""
        repo = self._repo_or_404(owner, name)
        sha = self._sha_of(repo, ref)
        api = self._api(f"/repos/{repo.full_name}")
        statuses = repo.statuses.get(sha, [])
        if any(s["state"] in ("failure", "error") for s in statuses):
            state = "failure"
        elif not statuses or any(s["state"] == "pending" for s in statuses):
            state = "pending"  # GitHub says pending when there are no statuses at all
        else:
            state = "success"
        items = [
            {
                "url": f"{api}/statuses/{sha}", "avatar_url": None, "id": s["id"],
                "node_id": f"SC_{s['id']}", "state": s["state"],
                "description": s.get("description") or s["state"],
                "target_url": s.get("target_url"), "context": s["context"],
                "created_at": s["at"], "updated_at": s["at"],
            }
            for s in statuses
        ]  # fmt: skip
        return 200, {}, {
            "state": state, "statuses": items, "sha": sha, "total_count": len(items),
            "repository": self._repo_json(repo), "commit_url": f"{api}/commits/{sha}",
            "url": f"{api}/commits/{sha}/status",
        }  # fmt: skip

    def check_runs(self, call: Call, owner: str, name: str, ref: str):
        """Endpoint: GET /repos/{owner}/{repo}/commits/{ref}/check-runs."""
        repo = self._repo_or_404(owner, name)
        sha = self._sha_of(repo, ref)
        api = self._api(f"/repos/{repo.full_name}")
        items = [
            {
                "id": r["id"], "node_id": f"CR_{r['id']}", "head_sha": sha, "external_id": "",
                "url": f"{api}/check-runs/{r['id']}",
                "html_url": f"{self.web}/{repo.full_name}/runs/{r['id']}",
                "details_url": r.get("details_url"),
                "status": r["status"], "conclusion": r["conclusion"], "started_at": r["at"],
                "completed_at": r["at"] if r["status"] == "completed" else None,
                "output": {"title": None, "summary": None, "text": None,
                           **(r.get("output") or {}),
                           "annotations_count": 0, "annotations_url": ""},
                "name": r["name"], "check_suite": {"id": 1}, "app": None, "pull_requests": [],
            }
            for r in repo.check_runs.get(sha, [])
        ]  # fmt: skip
        return self._paginate(
            call, items, lambda chunk: {"total_count": len(items), "check_runs": chunk}
        )

    def _graphql(self, call: Call) -> tuple[int, dict[str, str], Any]:
        data = call.json() or {}
        m = re.search(r"\{\s*(\w+)\(input:", data.get("query", ""))
        node_id = ((data.get("variables") or {}).get("input") or {}).get("pullRequestId")
        mutation = m.group(1) if m else ""
        if mutation == "enablePullRequestAutoMerge":
            return self._enable_auto_merge(node_id, data["variables"]["input"])
        if mutation not in ("markPullRequestReadyForReview", "convertPullRequestToDraft"):
            return 200, {}, {"errors": [{"message": f"unsupported by the fake: {mutation!r}"}]}
        with self._lock:
            found = [
                (repo, pr)
                for repo in self.repos.values()
                for pr in repo.pulls.values()
                if pr.node_id == node_id
            ]
            if not found:
                return 200, {}, {"data": {mutation: None}, "errors": [{
                    "type": "NOT_FOUND", "path": [mutation],
                    "message": f"Could not resolve to a node with the global id of '{node_id}'",
                }]}  # fmt: skip
            repo, pr = found[0]
            if mutation == "convertPullRequestToDraft" and not repo.drafts_supported:
                return 200, {}, {"data": {mutation: None}, "errors": [{
                    "type": "UNPROCESSABLE", "path": [mutation],
                    "message": "Draft pull requests are not supported in this repository.",
                }]}  # fmt: skip
            pr.draft = mutation == "convertPullRequestToDraft"
            pr.updated_at = self._now()
            return (
                200,
                {},
                {
                    "data": {
                        mutation: {"clientMutationId": None, "pullRequest": {"isDraft": pr.draft}}
                    }
                },
            )

    def _enable_auto_merge(self, node_id: str | None, given: dict) -> tuple[int, dict, Any]:
        """GraphQL enablePullRequestAutoMerge: refused when the repository does not allow
        auto-merge or the pull request is not open; otherwise the PR's `auto_merge` is set (the
        fake does not merge by itself: a test merges with `merge_pr`)."""
        mutation = "enablePullRequestAutoMerge"

        def error(kind: str, message: str) -> tuple[int, dict, Any]:
            errors = [{"type": kind, "path": [mutation], "message": message}]
            return 200, {}, {"data": {mutation: None}, "errors": errors}

        with self._lock:
            found = [(r, p) for r in self.repos.values() for p in r.pulls.values()
                     if p.node_id == node_id]  # fmt: skip
            if not found:
                return error("NOT_FOUND", f"Could not resolve to a node with the global id of "
                             f"'{node_id}'")  # fmt: skip
            repo, pr = found[0]
            if not repo.allow_auto_merge:
                return error(
                    "UNPROCESSABLE", "Pull request Auto merge is not allowed for this repository"
                )
            if pr.state != "open":
                return error("UNPROCESSABLE", "Pull request is not open")
            method = given.get("mergeMethod", "MERGE")
            pr.auto_merge = {"merge_method": method.lower(), "enabled_by": self._user_json(
                self.login), "commit_title": None, "commit_message": None}  # fmt: skip
            pr.updated_at = self._now()
            return 200, {}, {"data": {mutation: {"clientMutationId": None,
                                                  "actor": {"login": self.login}}}}  # fmt: skip

    # git smart HTTP ------------------------------------------------------------------------------

    def handle_git(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """Answer a git request through `git http-backend`, if the Basic auth carries the token."""
        _, password = forge_http.basic_credentials(call) or ("", "")
        if not self._accepts(password):
            return forge_http.unauthorized_git("GitHub")
        path_info = call.path.removeprefix("/git")
        return forge_http.git_http_backend(call, self, path_info, "x-access-token")


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"/user", FakeGitHub.get_user),
    ("GET", r"/user/repos", FakeGitHub.list_my_repos),
    ("GET", r"/users/([^/]+)", FakeGitHub.get_named_user),
    ("GET", r"/users/([^/]+)/repos", FakeGitHub.list_user_repos),
    ("GET", r"/orgs/([^/]+)", FakeGitHub.get_org),
    ("GET", r"/orgs/([^/]+)/repos", FakeGitHub.list_org_repos),
    ("GET", r"/search/repositories", FakeGitHub.search_repos),
    ("GET", r"/repos/([^/]+)/([^/]+)", FakeGitHub.get_repo),
    ("GET", r"/repos/([^/]+)/([^/]+)/branches/(.+)", FakeGitHub.get_branch),
    ("GET", r"/repos/([^/]+)/([^/]+)/pulls", FakeGitHub.list_pulls),
    ("POST", r"/repos/([^/]+)/([^/]+)/pulls", FakeGitHub.create_pull),
    ("GET", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)", FakeGitHub.get_pull),
    ("PATCH", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)", FakeGitHub.update_pull),
    ("PUT", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)/merge", FakeGitHub.merge_pull),
    ("GET", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)/merge", FakeGitHub.is_merged),
    ("GET", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)/reviews", FakeGitHub.list_reviews),
    ("GET", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)/reviews/(\d+)/comments",
     FakeGitHub.list_review_comments),
    ("POST", r"/repos/([^/]+)/([^/]+)/pulls/(\d+)/requested_reviewers",
     FakeGitHub.request_reviewers),
    ("POST", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/assignees", FakeGitHub.add_assignees),
    ("GET", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/comments", FakeGitHub.list_comments),
    ("POST", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/comments", FakeGitHub.add_comment),
    ("GET", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/labels", FakeGitHub.list_labels),
    ("POST", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/labels", FakeGitHub.add_labels),
    ("PUT", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/labels", FakeGitHub.set_labels),
    ("DELETE", r"/repos/([^/]+)/([^/]+)/issues/(\d+)/labels/(.+)", FakeGitHub.remove_label),
    ("GET", r"/repos/([^/]+)/([^/]+)/commits/([^/]+)/status", FakeGitHub.combined_status),
    ("GET", r"/repos/([^/]+)/([^/]+)/commits/([^/]+)/check-runs", FakeGitHub.check_runs),
]  # fmt: skip
