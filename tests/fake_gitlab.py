"""A fake GitLab for tests: the REST v4 endpoints the GitLab forge uses and git smart HTTP, on
127.0.0.1 with real bare repositories behind it.

Answers use GitLab's documented shapes and field names (projects, merge requests with `iid`,
`detailed_merge_status`, `head_pipeline`, notes, approvals, reviewers, pipeline jobs); errors
come as `{"message": ...}` with GitLab's statuses (401, 404, 405, 406, 409, 422). Lists paginate
with `per_page`/`page`, answering `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Total` and a `Link`
header. API calls need `PRIVATE-TOKEN: T` or `Authorization: Bearer T`; git needs HTTP Basic with
the token as password (any user name, as on GitLab).

The API is served under `/api/v4`, git under `/<group>/<sub>/<name>.git/...` by `git
http-backend` (tests/fake_forge_http.py's git serving). Every request is recorded in
`calls`. Tests play the humans and CI: `close_mr`, `merge_mr`, `approve`, `set_reviewer_state`,
`add_discussion`, `add_pipeline`; and inject faults with `inject` (429 with Retry-After or
RateLimit-Reset, 500/502, 502 after the work is done, 404).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from resources.git import author_env, run_git
from tests import fake_forge_http as forge_http
from tests.fake_forge_http import EPOCH, Call, FakeForgeServer, Fault

API = "/api/v4"
WRITES = {"POST", "PUT", "DELETE"}
DRAFT_TITLE = re.compile(r"^\s*(\[draft\]|\(draft\)|draft:|draft\s+-\s)", re.I)
UNFINISHED = {"created", "pending", "running", "waiting_for_resource", "preparing", "scheduled"}


class HttpError(Exception):
    """An error answer in GitLab's shape: `{"message": ...}` (a string, list or dict)."""

    def __init__(self, status: int, message: Any, headers: dict[str, str] | None = None):
        super().__init__(str(message))
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class MR:
    """A merge request's state."""

    iid: int
    id: int
    title: str
    description: str
    source_branch: str
    target_branch: str
    author: str
    state: str = "opened"
    labels: list[str] = field(default_factory=list)
    reviewers: dict[str, str] = field(default_factory=dict)  # username -> review state
    assignees: list[str] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    discussions: list[dict] = field(default_factory=list)
    merge_when_pipeline_succeeds: bool = False
    squash: bool = False
    frozen_sha: str | None = None
    merge_commit_sha: str | None = None
    rebase_polls: int = 0
    created_at: str = ""
    updated_at: str = ""

    @property
    def draft(self) -> bool:
        """Draft: the title says so, as on GitLab."""
        return bool(DRAFT_TITLE.match(self.title))


@dataclass
class Project:
    """A project; `bare` is its git repository (None: listing only, no git)."""

    id: int
    path: str  # group/sub/name
    bare: Path | None = None
    default_branch: str = "main"
    archived: bool = False
    forked_from: str | None = None
    topics: list[str] = field(default_factory=list)
    mrs: dict[int, MR] = field(default_factory=dict)
    pipelines: list[dict] = field(default_factory=list)
    next_iid: int = 1

    @property
    def name(self) -> str:
        """The last part of the path."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def namespace(self) -> str:
        """The group (or user) path the project lives in."""
        return self.path.rsplit("/", 1)[0]


class FakeGitLab(FakeForgeServer):
    """The fake server and its state. Use as a context manager, or `start()`/`stop()`."""

    def __init__(self, token: str, root: Path, *, username: str = "campaign-bot"):
        super().__init__(token, root, API)
        self.username = username
        self.groups: set[str] = set()
        self.users: dict[str, int] = {}
        self.projects: dict[str, Project] = {}
        self.rebase_polls = 1  # GETs that still see a rebase in progress
        self.add_user(username)

    def answer(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """git where GitLab serves it, under a project (`/<group>/<name>.git/info/refs`...);
        the API elsewhere."""
        if not call.path.startswith(API + "/") and ".git/" in call.path:
            return self.handle_git(call)
        return forge_http.json_answer(*self.handle_api(call))

    def handle_git(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """git smart HTTP, if the Basic password is the token (any user name, as on GitLab)."""
        _, password = forge_http.basic_credentials(call) or ("", "")
        if password != self.token:
            return forge_http.unauthorized_git("GitLab")
        return forge_http.git_http_backend(call, self, call.path, "x-access-token")

    def api_path(self, path: str) -> str:
        """A request path without `/api/v4`, decoded (project ids are URL-encoded paths)."""
        return unquote(path.removeprefix(API))

    # state set-up (tests) ------------------------------------------------------------------------

    def _now(self) -> str:
        """A timestamp one second after the previous one: every change moves `updated_at`."""
        return self._iso(EPOCH + timedelta(seconds=self._next_tick()))

    def add_user(self, username: str) -> int:
        """A user; returns its id."""
        with self._lock:
            return self.users.setdefault(username, self._next_id())

    def add_group(self, path: str) -> None:
        """A group (and its parents)."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            self.groups.add("/".join(parts[:i]))

    def add_project(
        self, path: str, files: dict[str, str] | None = None, *, branch: str = "main", **kw
    ) -> Project:
        """A project; with `files`, a bare git repository with one commit on `branch`."""
        namespace = path.rsplit("/", 1)[0]
        if namespace not in self.users:
            self.add_group(namespace)
        project = Project(id=self._next_id(), path=path, default_branch=branch, **kw)
        if files is not None:
            project.bare = forge_http.init_bare(self.git_root / f"{path}.git", branch)
            self.commit(path, branch, files, parent=None)
        with self._lock:
            self.projects[path] = project
        return project

    def commit(
        self, path: str, branch: str, files: dict[str, str], parent: str | None = "branch"
    ) -> str:
        """Commit `files` to `branch` (on top of it, or of `parent`: a sha, None for a root
        commit; "branch": the branch itself, else the default branch); returns the sha."""
        project = self.projects.get(path)
        bare = project.bare if project else self.git_root / f"{path}.git"
        assert bare is not None
        if parent == "branch":
            refs = self.refs(path)
            parent = refs.get(branch) or refs[project.default_branch if project else "main"]
        return forge_http.commit_files(bare, branch, files, parent)

    def refs(self, project: Project | str) -> dict[str, str]:
        """Branch name -> sha, read from the bare repository."""
        project = self.projects[project] if isinstance(project, str) else project
        return forge_http.branch_refs(project.bare)

    def inject(
        self,
        kind: str,
        *,
        methods: set[str] | None = None,
        path: str = ".*",
        times: int | None = None,
        retry_after: int = 1,
        reset_in: int = 5,
    ) -> Fault:
        """Make matching requests (`path` regex on the path without `/api/v4`) fail."""
        return self._add_fault(
            Fault(kind, methods or WRITES, re.compile(path), times, retry_after, reset_in)
        )

    # the humans and CI ---------------------------------------------------------------------------

    def mr(self, path: str, iid: int) -> MR:
        """A merge request's state."""
        return self.projects[path].mrs[iid]

    def close_mr(self, path: str, iid: int) -> None:
        """Someone closes the merge request."""
        with self._lock:
            project = self.projects[path]
            mr = project.mrs[iid]
            mr.frozen_sha = self._head_sha(project, mr)
            mr.state, mr.updated_at = "closed", self._now()

    def merge_mr(self, path: str, iid: int) -> None:
        """Someone merges the merge request."""
        with self._lock:
            project = self.projects[path]
            self._merge(project, project.mrs[iid], squash=False)

    def approve(self, path: str, iid: int, username: str) -> None:
        """`username` approves."""
        with self._lock:
            mr = self.mr(path, iid)
            self.add_user(username)
            if username not in mr.approved_by:
                mr.approved_by.append(username)
            if username in mr.reviewers:
                mr.reviewers[username] = "approved"
            mr.updated_at = self._now()

    def set_reviewer_state(self, path: str, iid: int, username: str, state: str) -> None:
        """A reviewer's state: unreviewed, reviewed, requested_changes, approved."""
        with self._lock:
            mr = self.mr(path, iid)
            self.add_user(username)
            mr.reviewers[username] = state
            mr.updated_at = self._now()

    def add_discussion(
        self,
        path: str,
        iid: int,
        username: str,
        body: str,
        *,
        position: tuple[str, int] | None = None,
        resolved: bool = False,
    ) -> None:
        """`username` opens a resolvable discussion thread (on `position` = (path, line))."""
        with self._lock:
            mr = self.mr(path, iid)
            self.add_user(username)
            note = {
                "id": self._next_id(), "type": "DiffNote" if position else "DiscussionNote",
                "body": body, "author": self._user_json(username), "system": False,
                "created_at": self._now(), "resolvable": True, "resolved": resolved,
                "noteable_type": "MergeRequest", "noteable_iid": iid,
            }  # fmt: skip
            if position:
                note["position"] = {"new_path": position[0], "new_line": position[1],
                                    "old_path": position[0], "old_line": None}  # fmt: skip
            mr.discussions.append({"id": hashlib.sha1(str(note["id"]).encode()).hexdigest(),
                                   "individual_note": False, "notes": [note]})  # fmt: skip

    def add_pipeline(
        self, path: str, sha: str, status: str, jobs: list[dict] | None = None, ref: str = ""
    ) -> dict:
        """A pipeline on `sha` with `jobs` ({name, status, allow_failure?, trace?}); the newest
        pipeline of a merge request's head sha is its `head_pipeline`."""
        with self._lock:
            project = self.projects[path]
            pipeline = {
                "id": self._next_id(), "sha": sha, "ref": ref, "status": status,
                "jobs": [
                    {"id": self._next_id(), "allow_failure": False, "trace": "", **job}
                    for job in jobs or []
                ],
            }  # fmt: skip
            project.pipelines.append(pipeline)
            self._auto_merge(project)
            return pipeline

    # JSON shapes ---------------------------------------------------------------------------------

    def _user_json(self, username: str) -> dict:
        uid = self.users.get(username) or self.add_user(username)
        return {"id": uid, "username": username, "name": username.title(), "state": "active",
                "avatar_url": None, "web_url": f"{self.web}/{username}"}  # fmt: skip

    def _project_json(self, project: Project) -> dict:
        web = f"{self.web}/{project.path}"
        data = {
            "id": project.id, "name": project.name, "path": project.name,
            "path_with_namespace": project.path, "name_with_namespace": project.path,
            "description": None, "default_branch": project.default_branch if project.bare
            else None, "visibility": "private", "web_url": web,
            "http_url_to_repo": f"{web}.git",
            "ssh_url_to_repo": f"git@127.0.0.1:{project.path}.git",
            "archived": project.archived, "topics": list(project.topics),
            "tag_list": list(project.topics), "created_at": self._iso(EPOCH),
            "last_activity_at": self._iso(EPOCH),
            "namespace": {"full_path": project.namespace, "path": project.namespace.rsplit("/")[-1],
                          "kind": "user" if project.namespace in self.users else "group"},
        }  # fmt: skip
        if project.forked_from:
            data["forked_from_project"] = {"path_with_namespace": project.forked_from}
        return data

    @staticmethod
    def _iso(when: datetime) -> str:
        return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _head_sha(self, project: Project, mr: MR) -> str | None:
        return mr.frozen_sha or self.refs(project).get(mr.source_branch)

    def _head_pipeline(self, project: Project, sha: str | None) -> dict | None:
        for pipeline in reversed(project.pipelines):
            if pipeline["sha"] == sha:
                return pipeline
        return None

    def _conflicts(self, project: Project, mr: MR) -> bool:
        refs = self.refs(project)
        base, head = refs.get(mr.target_branch), refs.get(mr.source_branch)
        return forge_http.merge_tree(project.bare, base, head) is None

    def _merge_status(self, project: Project, mr: MR) -> str:
        if mr.state != "opened":
            return "not_open"
        if mr.draft:
            return "draft_status"
        if self._conflicts(project, mr):
            return "conflict"
        if any(s == "requested_changes" for s in mr.reviewers.values()):
            return "requested_changes"
        pipeline = self._head_pipeline(project, self._head_sha(project, mr))
        if pipeline and pipeline["status"] in UNFINISHED:
            return "ci_still_running"
        if any(not d["notes"][0]["resolved"] for d in mr.discussions):
            return "discussions_not_resolved"
        return "mergeable"

    def _mr_json(self, project: Project, mr: MR, full: bool = True) -> dict:
        web = f"{self.web}/{project.path}/-/merge_requests/{mr.iid}"
        sha = self._head_sha(project, mr)
        data = {
            "id": mr.id, "iid": mr.iid, "project_id": project.id, "title": mr.title,
            "description": mr.description, "state": mr.state,
            "created_at": mr.created_at, "updated_at": mr.updated_at,
            "merged_at": mr.updated_at if mr.state == "merged" else None,
            "closed_at": mr.updated_at if mr.state == "closed" else None,
            "target_branch": mr.target_branch, "source_branch": mr.source_branch,
            "source_project_id": project.id, "target_project_id": project.id,
            "author": self._user_json(mr.author),
            "assignees": [self._user_json(u) for u in mr.assignees],
            "reviewers": [self._user_json(u) for u in mr.reviewers],
            "labels": list(mr.labels), "draft": mr.draft, "work_in_progress": mr.draft,
            "merge_when_pipeline_succeeds": mr.merge_when_pipeline_succeeds,
            "sha": sha, "merge_commit_sha": mr.merge_commit_sha, "squash": mr.squash,
            "web_url": web, "references": {"short": f"!{mr.iid}"},
            "detailed_merge_status": self._merge_status(project, mr),
            "has_conflicts": mr.state == "opened" and self._conflicts(project, mr),
            "blocking_discussions_resolved": all(d["notes"][0]["resolved"]
                                                 for d in mr.discussions),
        }  # fmt: skip
        if full:  # the single-MR answer: with its head pipeline
            pipeline = self._head_pipeline(project, sha)
            data["head_pipeline"] = (
                None if pipeline is None else {
                    "id": pipeline["id"], "sha": pipeline["sha"], "ref": pipeline["ref"],
                    "status": pipeline["status"], "project_id": project.id,
                    "web_url": f"{self.web}/{project.path}/-/pipelines/{pipeline['id']}",
                }
            )  # fmt: skip
        return data

    def _note_json(self, project: Project, mr: MR, note: dict) -> dict:
        return {**note, "noteable_type": "MergeRequest", "noteable_iid": mr.iid,
                "project_id": project.id}  # fmt: skip

    # request handling ----------------------------------------------------------------------------

    def _fault_answer(self, fault: Fault) -> tuple[int, dict[str, str], Any]:
        if fault.kind == "429":
            return 429, {"Retry-After": str(fault.retry_after), "RateLimit-Limit": "600",
                         "RateLimit-Remaining": "0",
                         "RateLimit-Reset": str(int(time.time()) + fault.retry_after)}, (
                "Retry later\n")  # fmt: skip
        if fault.kind == "429_reset":
            return 429, {"RateLimit-Limit": "600", "RateLimit-Remaining": "0",
                         "RateLimit-Reset": str(int(time.time()) + fault.reset_in)}, (
                "Retry later\n")  # fmt: skip
        if fault.kind == "404":
            return 404, {}, {"message": "404 Not found"}
        if fault.kind == "500":
            return 500, {}, {"message": "500 Internal Server Error"}
        return 502, {"Content-Type": "text/html"}, "<html><body><h1>502 Bad Gateway</h1>"

    def handle_api(self, call: Call) -> tuple[int, dict[str, str], Any]:
        """Answer one API request: (status, headers, JSON body, text or None)."""
        if not call.path.startswith(API + "/"):
            return 404, {}, {"message": "404 Not Found"}
        token = call.headers.get("private-token")
        scheme, _, value = call.headers.get("authorization", "").partition(" ")
        if token != self.token and not (scheme.lower() == "bearer" and value == self.token):
            return 401, {}, {"message": "401 Unauthorized"}
        fault = self._fault_for(call, self.api_path(call.path))
        if fault is not None and fault.kind != "502_after":
            return self._fault_answer(fault)
        try:
            with self._lock:
                answer = self._route(call)
        except HttpError as err:
            answer = err.status, err.headers, {"message": err.message}
        if fault is not None:  # 502_after: done, but the answer is lost
            return self._fault_answer(fault)
        return answer

    def _params(self, call: Call) -> dict[str, Any]:
        """Query parameters and a JSON body, merged (GitLab takes either)."""
        params: dict[str, Any] = {k: v[-1] for k, v in call.query.items()}
        body = call.json() if call.body else None
        if isinstance(body, dict):
            params.update(body)
        return params

    def _paginate(self, call: Call, items: list) -> tuple[int, dict[str, str], Any]:
        page = forge_http.page_of(call, items, 20)
        n, pages = page.number, page.pages

        def link(p: int, rel: str) -> str:
            return forge_http.page_link(self.web, call, p, rel)

        links = [link(1, "first"), link(pages, "last")]
        headers = {"X-Page": str(n), "X-Per-Page": str(page.per_page), "X-Total": str(len(items)),
                   "X-Total-Pages": str(pages), "X-Prev-Page": str(n - 1) if n > 1 else "",
                   "X-Next-Page": str(n + 1) if n < pages else ""}  # fmt: skip
        if n < pages:
            links.insert(0, link(n + 1, "next"))
        if n > 1:
            links.insert(0, link(n - 1, "prev"))
        headers["Link"] = ", ".join(links)
        return 200, headers, page.chunk

    def _project_or_404(self, pid: str) -> Project:
        key = unquote(pid)
        for project in self.projects.values():
            if project.path == key or str(project.id) == key:
                return project
        raise HttpError(404, "404 Project Not Found")

    def _mr_or_404(self, project: Project, iid: str) -> MR:
        mr = project.mrs.get(int(iid))
        if mr is None:
            raise HttpError(404, "404 Not found")
        return mr

    def _route(self, call: Call) -> tuple[int, dict[str, str], Any]:
        path = call.path.removeprefix(API)
        for method, pattern, handler in ROUTES:
            if method != call.method:
                continue
            m = re.fullmatch(pattern, path)
            if m:
                return handler(self, call, *m.groups())
        raise HttpError(404, "404 Not Found")

    # endpoints: users, groups, projects ----------------------------------------------------------

    def get_user(self, call: Call):
        """GET /user."""
        return 200, {}, self._user_json(self.username)

    def list_users(self, call: Call):
        """GET /users?username=."""
        wanted = call.query.get("username", [""])[0].lower()
        found = [self._user_json(u) for u in self.users if u.lower() == wanted]
        return self._paginate(call, found)

    def _filtered(self, call: Call, projects: list[Project]):
        params = self._params(call)
        if params.get("archived") in ("false", False):
            projects = [p for p in projects if not p.archived]
        topics = [t for t in str(params.get("topic") or "").split(",") if t]
        if topics:
            projects = [p for p in projects if all(t in p.topics for t in topics)]
        projects.sort(key=lambda p: p.path)
        return self._paginate(call, [self._project_json(p) for p in projects])

    def list_group_projects(self, call: Call, gid: str):
        """GET /groups/:id/projects (include_subgroups, archived, topic)."""
        group = unquote(gid)
        if group not in self.groups:
            raise HttpError(404, "404 Group Not Found")
        subgroups = self._params(call).get("include_subgroups") in ("true", True)
        projects = [
            p
            for p in self.projects.values()
            if p.namespace == group or (subgroups and p.namespace.startswith(group + "/"))
        ]
        return self._filtered(call, projects)

    def list_user_projects(self, call: Call, username: str):
        """GET /users/:user/projects."""
        if unquote(username) not in self.users:
            raise HttpError(404, "404 User Not Found")
        owned = [p for p in self.projects.values() if p.namespace == unquote(username)]
        return self._filtered(call, owned)

    def list_projects(self, call: Call):
        """GET /projects?search=."""
        text = str(self._params(call).get("search") or "").lower()
        return self._filtered(call, [p for p in self.projects.values() if text in p.path.lower()])

    def get_project(self, call: Call, pid: str):
        """GET /projects/:id."""
        return 200, {}, self._project_json(self._project_or_404(pid))

    def get_branch(self, call: Call, pid: str, branch: str):
        """GET /projects/:id/repository/branches/:branch."""
        project = self._project_or_404(pid)
        sha = self.refs(project).get(unquote(branch))
        if sha is None:
            raise HttpError(404, "404 Branch Not Found")
        return 200, {}, {"name": unquote(branch), "commit": {"id": sha, "short_id": sha[:8]},
                         "default": unquote(branch) == project.default_branch,
                         "protected": False, "merged": False}  # fmt: skip

    # endpoints: merge requests -------------------------------------------------------------------

    def list_mrs(self, call: Call, pid: str):
        """GET /projects/:id/merge_requests (source_branch, state)."""
        project = self._project_or_404(pid)
        params = self._params(call)
        state = params.get("state", "all")
        mrs = [
            mr
            for mr in project.mrs.values()
            if (state == "all" or mr.state == state)
            and (not params.get("source_branch") or mr.source_branch == params["source_branch"])
        ]
        mrs.sort(key=lambda mr: mr.iid, reverse=True)
        return self._paginate(call, [self._mr_json(project, mr, full=False) for mr in mrs])

    def _usernames(self, ids: list[Any]) -> list[str]:
        by_id = {uid: name for name, uid in self.users.items()}
        return [by_id[int(i)] for i in ids if int(i) in by_id]

    @staticmethod
    def _labels(value: Any) -> list[str]:
        items = value if isinstance(value, list) else str(value or "").split(",")
        return [label.strip() for label in items if label.strip()]

    def create_mr(self, call: Call, pid: str):
        """POST /projects/:id/merge_requests."""
        project = self._project_or_404(pid)
        data = self._params(call)
        missing = [k for k in ("source_branch", "target_branch", "title") if not data.get(k)]
        if missing:
            raise HttpError(400, f"{missing[0]} is missing")
        source, target = data["source_branch"], data["target_branch"]
        if source == target:
            raise HttpError(422, ["You can't use same project/branch for source and target"])
        refs = self.refs(project)
        if source not in refs or target not in refs:
            gone = source if source not in refs else target
            raise HttpError(422, {"base": [f'Branch "{gone}" does not exist']})
        for mr in project.mrs.values():
            if mr.source_branch == source and mr.state == "opened":
                raise HttpError(
                    409, [f"Another open merge request already exists for this source branch: "
                          f"!{mr.iid}"]
                )  # fmt: skip
        now = self._now()
        mr = MR(
            iid=project.next_iid, id=self._next_id(), title=data["title"],
            description=data.get("description") or "", source_branch=source,
            target_branch=target, author=self.username, labels=self._labels(data.get("labels")),
            reviewers={u: "unreviewed" for u in self._usernames(data.get("reviewer_ids") or [])},
            assignees=self._usernames(data.get("assignee_ids") or []),
            created_at=now, updated_at=now,
        )  # fmt: skip
        project.mrs[mr.iid] = mr
        project.next_iid += 1
        return 201, {}, self._mr_json(project, mr)

    def get_mr(self, call: Call, pid: str, iid: str):
        """GET /projects/:id/merge_requests/:iid (include_rebase_in_progress)."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        data = self._mr_json(project, mr)
        if self._params(call).get("include_rebase_in_progress") in ("true", True):
            data["rebase_in_progress"] = mr.rebase_polls > 0
            mr.rebase_polls = max(0, mr.rebase_polls - 1)
            data["merge_error"] = None
        return 200, {}, data

    def update_mr(self, call: Call, pid: str, iid: str):
        """PUT /projects/:id/merge_requests/:iid."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        data = self._params(call)
        event = data.get("state_event")
        if event == "close" and mr.state == "opened":
            mr.frozen_sha = self._head_sha(project, mr)
            mr.state = "closed"
        elif event == "reopen" and mr.state == "closed":
            for other in project.mrs.values():
                if other.source_branch == mr.source_branch and other.state == "opened":
                    raise HttpError(409, ["Another open merge request already exists for this "
                                          f"source branch: !{other.iid}"])  # fmt: skip
            mr.frozen_sha, mr.state = None, "opened"
        elif event:
            raise HttpError(405, "405 Method Not Allowed")
        if "title" in data:
            mr.title = data["title"]
        if "description" in data:
            mr.description = data["description"]
        if "target_branch" in data:
            mr.target_branch = data["target_branch"]
        if "labels" in data:
            mr.labels = self._labels(data["labels"])
        for label in self._labels(data.get("add_labels")):
            if label not in mr.labels:
                mr.labels.append(label)
        if "reviewer_ids" in data:
            names = self._usernames(data["reviewer_ids"] or [])
            mr.reviewers = {u: mr.reviewers.get(u, "unreviewed") for u in names}
        if "assignee_ids" in data:
            mr.assignees = self._usernames(data["assignee_ids"] or [])
        mr.updated_at = self._now()
        return 200, {}, self._mr_json(project, mr)

    def _merge(self, project: Project, mr: MR, squash: bool) -> str:
        assert project.bare is not None
        refs = self.refs(project)
        base, head = refs[mr.target_branch], refs[mr.source_branch]
        tree = run_git(["merge-tree", "--write-tree", base, head], project.bare).split()[0]
        parents = ["-p", base] + ([] if squash else ["-p", head])
        message = mr.title if squash else f"Merge branch '{mr.source_branch}' into " + (
            f"'{mr.target_branch}'\n\nSee merge request {project.path}!{mr.iid}")  # fmt: skip
        new = run_git(
            ["commit-tree", tree, *parents, "-m", message],
            project.bare, env=author_env("GitLab", "gitlab@example.com"),
        ).strip()  # fmt: skip
        run_git(["update-ref", f"refs/heads/{mr.target_branch}", new, base], project.bare)
        mr.frozen_sha, mr.merge_commit_sha, mr.squash = head, new, squash
        mr.state, mr.updated_at = "merged", self._now()
        mr.merge_when_pipeline_succeeds = False
        return new

    def _auto_merge(self, project: Project) -> None:
        """Merge the MRs set to merge when their pipeline succeeds, once it has."""
        for mr in project.mrs.values():
            if mr.state != "opened" or not mr.merge_when_pipeline_succeeds:
                continue
            pipeline = self._head_pipeline(project, self._head_sha(project, mr))
            if pipeline and pipeline["status"] == "success" and not self._conflicts(project, mr):
                self._merge(project, mr, mr.squash)

    def merge_mr_endpoint(self, call: Call, pid: str, iid: str):
        """PUT /projects/:id/merge_requests/:iid/merge (sha, squash, auto_merge or its older
        name merge_when_pipeline_succeeds)."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        data = self._params(call)
        if mr.state != "opened" or mr.draft:
            raise HttpError(405, "405 Method Not Allowed")
        head = self._head_sha(project, mr)
        if data.get("sha") and data["sha"] != head:
            raise HttpError(409, "SHA does not match HEAD of source branch: " + str(head))
        if self._conflicts(project, mr):
            # documented as 406 "Branch cannot be merged"; GitLab answers 405 (gitlab#364102)
            raise HttpError(405, "405 Method Not Allowed")
        squash = data.get("squash") in (True, "true")
        pipeline = self._head_pipeline(project, head)
        auto = data.get("auto_merge", data.get("merge_when_pipeline_succeeds"))  # 17.11: new name
        if auto in (True, "true") and (pipeline is not None and pipeline["status"] in UNFINISHED):
            mr.merge_when_pipeline_succeeds, mr.squash = True, squash
            mr.updated_at = self._now()
            return 200, {}, self._mr_json(project, mr)
        if pipeline is not None and pipeline["status"] in UNFINISHED | {"failed"}:
            raise HttpError(405, "405 Method Not Allowed")
        self._merge(project, mr, squash)
        return 200, {}, self._mr_json(project, mr)

    def rebase_mr(self, call: Call, pid: str, iid: str):
        """PUT /projects/:id/merge_requests/:iid/rebase: the source branch is rebased (here:
        its changes become one commit on top of the target) while GETs report it in progress
        `rebase_polls` times."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        if mr.state != "opened":
            raise HttpError(403, "403 Forbidden")
        assert project.bare is not None
        refs = self.refs(project)
        base, head = refs[mr.target_branch], refs[mr.source_branch]
        if run_git(["merge-base", base, head], project.bare).strip() != base:
            tree = run_git(["merge-tree", "--write-tree", base, head], project.bare).split()[0]
            new = run_git(
                ["commit-tree", tree, "-p", base, "-m", mr.title], project.bare,
                env=author_env("GitLab", "gitlab@example.com"),
            ).strip()  # fmt: skip
            run_git(["update-ref", f"refs/heads/{mr.source_branch}", new, head], project.bare)
        mr.rebase_polls = self.rebase_polls
        return 202, {}, {"rebase_in_progress": True}

    def approvals(self, call: Call, pid: str, iid: str):
        """GET /projects/:id/merge_requests/:iid/approvals."""
        mr = self._mr_or_404(self._project_or_404(pid), iid)
        return 200, {}, {
            "id": mr.id, "iid": mr.iid, "approved": bool(mr.approved_by),
            "approvals_required": 0, "approvals_left": 0,
            "approved_by": [{"user": self._user_json(u)} for u in mr.approved_by],
        }  # fmt: skip

    def reviewers(self, call: Call, pid: str, iid: str):
        """GET /projects/:id/merge_requests/:iid/reviewers."""
        mr = self._mr_or_404(self._project_or_404(pid), iid)
        items = [{"user": self._user_json(u), "state": s, "created_at": mr.created_at}
                 for u, s in mr.reviewers.items()]  # fmt: skip
        return self._paginate(call, items)

    def discussions(self, call: Call, pid: str, iid: str):
        """GET /projects/:id/merge_requests/:iid/discussions."""
        mr = self._mr_or_404(self._project_or_404(pid), iid)
        return self._paginate(call, list(mr.discussions))

    def list_notes(self, call: Call, pid: str, iid: str):
        """GET /projects/:id/merge_requests/:iid/notes (sort, order_by=created_at)."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        notes = [self._note_json(project, mr, n) for n in mr.notes]
        if self._params(call).get("sort", "desc") == "desc":
            notes.reverse()
        return self._paginate(call, notes)

    def add_note(self, call: Call, pid: str, iid: str):
        """POST /projects/:id/merge_requests/:iid/notes."""
        project = self._project_or_404(pid)
        mr = self._mr_or_404(project, iid)
        body = self._params(call).get("body")
        if not body:
            raise HttpError(400, "body is missing")
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # wall clock: for lookups
        note = {"id": self._next_id(), "body": body, "author": self._user_json(self.username),
                "system": False, "created_at": at, "updated_at": at, "type": None,
                "resolvable": False}  # fmt: skip
        mr.notes.append(note)
        mr.updated_at = self._now()
        return 201, {}, self._note_json(project, mr, note)

    def _pipeline_or_404(self, project: Project, pipeline_id: str) -> dict:
        for pipeline in project.pipelines:
            if pipeline["id"] == int(pipeline_id):
                return pipeline
        raise HttpError(404, "404 Not found")

    def list_pipelines(self, call: Call, pid: str):
        """GET /projects/:id/pipelines (sha, ref; newest first)."""
        project = self._project_or_404(pid)
        params = self._params(call)
        found = [
            {"id": p["id"], "sha": p["sha"], "ref": p["ref"], "status": p["status"],
             "project_id": project.id}
            for p in reversed(project.pipelines)
            if (not params.get("sha") or p["sha"] == params["sha"])
            and (not params.get("ref") or p["ref"] == params["ref"])
        ]  # fmt: skip
        return self._paginate(call, found)

    def pipeline_jobs(self, call: Call, pid: str, pipeline_id: str):
        """GET /projects/:id/pipelines/:pipeline_id/jobs."""
        project = self._project_or_404(pid)
        pipeline = self._pipeline_or_404(project, pipeline_id)
        items = [{"id": j["id"], "name": j["name"], "status": j["status"],
                  "stage": j.get("stage", "test"), "allow_failure": j["allow_failure"],
                  "pipeline": {"id": pipeline["id"], "sha": pipeline["sha"]},
                  "web_url": f"{self.web}/{project.path}/-/jobs/{j['id']}"}
                 for j in pipeline["jobs"]]  # fmt: skip
        return self._paginate(call, items)

    def job_trace(self, call: Call, pid: str, job_id: str):
        """GET /projects/:id/jobs/:job_id/trace (text/plain)."""
        project = self._project_or_404(pid)
        for pipeline in project.pipelines:
            for job in pipeline["jobs"]:
                if job["id"] == int(job_id):
                    return 200, {"Content-Type": "text/plain"}, job["trace"]
        raise HttpError(404, "404 Not found")


P = r"([^/]+)"  # a project id: numeric or the URL-encoded path
MRP = rf"/projects/{P}/merge_requests/(\d+)"
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", r"/user", FakeGitLab.get_user),
    ("GET", r"/users", FakeGitLab.list_users),
    ("GET", rf"/users/{P}/projects", FakeGitLab.list_user_projects),
    ("GET", rf"/groups/{P}/projects", FakeGitLab.list_group_projects),
    ("GET", r"/projects", FakeGitLab.list_projects),
    ("GET", rf"/projects/{P}", FakeGitLab.get_project),
    ("GET", rf"/projects/{P}/repository/branches/(.+)", FakeGitLab.get_branch),
    ("GET", rf"/projects/{P}/merge_requests", FakeGitLab.list_mrs),
    ("POST", rf"/projects/{P}/merge_requests", FakeGitLab.create_mr),
    ("GET", MRP, FakeGitLab.get_mr),
    ("PUT", MRP, FakeGitLab.update_mr),
    ("PUT", rf"{MRP}/merge", FakeGitLab.merge_mr_endpoint),
    ("PUT", rf"{MRP}/rebase", FakeGitLab.rebase_mr),
    ("GET", rf"{MRP}/approvals", FakeGitLab.approvals),
    ("GET", rf"{MRP}/reviewers", FakeGitLab.reviewers),
    ("GET", rf"{MRP}/discussions", FakeGitLab.discussions),
    ("GET", rf"{MRP}/notes", FakeGitLab.list_notes),
    ("POST", rf"{MRP}/notes", FakeGitLab.add_note),
    ("GET", rf"/projects/{P}/pipelines", FakeGitLab.list_pipelines),
    ("GET", rf"/projects/{P}/pipelines/(\d+)/jobs", FakeGitLab.pipeline_jobs),
    ("GET", rf"/projects/{P}/jobs/(\d+)/trace", FakeGitLab.job_trace),
]
