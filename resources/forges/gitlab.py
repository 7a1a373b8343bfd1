"""GitLab as a forge: gitlab.com and self-managed GitLab, through python-gitlab and git over HTTPS.

A project is named by its web URL on the forge's host (`https://HOST/group/sub/name`, any depth,
with or without `.git`) or by its path `group/sub/name` (see `gitlab_names`). Merge requests are
the pull requests of the `Forge` protocol:

- a draft MR is one whose title starts with `Draft: ` (GitLab has no other switch for it: its
  `draft` attribute is read from the title); the platform's title is kept without the prefix;
- labels are added (`add_labels`), never removed; reviewers and assignees are given by username
  (looked up once per forge as user ids) and added to those already there, never removed;
- `find_pull_request` is the newest MR from the branch of the project itself (not a fork's);
- a merge takes the method `merge`, `squash` (`squash=true`) or `rebase` (the rebase endpoint,
  waited for, then a merge at the rebased head; whether GitLab then writes a merge commit is the
  project's merge method), optionally "when the pipeline succeeds";
- close/reopen are `state_event` updates; a comment is a note, its URL `<MR URL>#note_<id>`.

How requests reach GitLab (one client per thread, retries, rate limits, errors) is
`gitlab_transport.GitLabTransport`, which `GitLabForge` extends; reading status is
`gitlab_status`, discovery `gitlab_discovery`. A write retried after a lost answer is not made
twice: creating an MR then answers 409 ("Another open merge request already exists for this
source branch") and that MR is adopted and updated; a note is looked for before it is posted
again; a merge is read back before its failure is reported.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gitlab.exceptions import GitlabError

from resources.forges.base import (
    BranchChecks,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    PullRequestStatus,
    RepoLocation,
    ResolvedRepo,
    refuse_push,
    resolved_repo,
)
from resources.forges.gitlab_discovery import DiscoveredRepo, GitLabSelector, discover
from resources.forges.gitlab_names import project_path
from resources.forges.gitlab_status import (
    failing_jobs,
    list_all,
    mr_state,
    pipeline_checks,
    pipeline_jobs,
    pull_request_status,
)
from resources.forges.gitlab_transport import GitLabTransport, error_text

__all__ = ["GitLabForge", "GitLabSelector", "draft_title", "split_title"]

log = logging.getLogger(__name__)

DRAFT_PREFIX = "Draft: "
# the title prefixes GitLab reads as "draft" (any case)
_DRAFT_TITLE = re.compile(r"^\s*(?:\[draft\]|\(draft\)|draft:|draft\s+-\s)\s*", re.I)
MERGE_METHODS = ("merge", "squash", "rebase")
# why a merge GitLab refused failed, by status (others are reported as GitLab said them)
MERGE_REFUSALS = {
    # GitLab answers 405 for anything that blocks a merge (a draft, a pipeline, approvals,
    # discussions, and in practice conflicts too): its detailed_merge_status says which
    405: "cannot be merged now",
    406: "cannot be merged: conflicts with its target branch",
    409: "head moved while merging",
    422: "cannot be merged",
}
TRACE_TAIL_CHARS = 4000  # what `failed_check_logs` keeps of a job's log: its end says why


def split_title(title: str) -> tuple[str, bool]:
    """(title without a draft prefix, whether it had one)."""
    match = _DRAFT_TITLE.match(title)
    if match is None:
        return title, False
    return title[match.end() :], True


def draft_title(title: str, draft: bool) -> str:
    """The MR title GitLab needs for `title` as a draft (prefixed) or ready (not)."""
    bare = split_title(title)[0]
    return f"{DRAFT_PREFIX}{bare}" if draft else bare


def _parse_time(value: Any) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class GitLabForge(GitLabTransport):
    """Projects and merge requests on gitlab.com or a self-managed GitLab.

    `base_url` is the web root; `rebase_wait_s` bounds how long a `rebase` merge waits for
    GitLab's rebase (polling every `rebase_poll_s`); `default_branch_ttl_s` how long the default
    branch `resolve` read serves a push's refusal of it without reading the project again.
    Everything else (token, retries, `stats`) is the transport's: see `GitLabTransport`.
    """

    def __init__(
        self,
        token: str,
        base_url: str = "https://gitlab.com",
        *,
        rebase_wait_s: float = 120.0,
        rebase_poll_s: float = 2.0,
        default_branch_ttl_s: float = 900.0,
        **transport: Any,
    ):
        super().__init__(token, base_url, **transport)
        self.rebase_wait_s = rebase_wait_s
        self.rebase_poll_s = rebase_poll_s
        self.default_branch_ttl_s = default_branch_ttl_s
        # group/sub/name -> (default branch, when read): a push refuses it without reading again
        self._default_branches: dict[str, tuple[str, float]] = {}
        self._info_lock = threading.Lock()
        self._user_ids: dict[str, int | None] = {}
        self._users_lock = threading.Lock()

    # names ---------------------------------------------------------------------------------------

    def _path(self, url: str) -> tuple[str, str]:
        """(`group/sub/name`, its URL-encoded form: the project id in API paths)."""
        path = project_path(url, self.web_url)
        return path, quote(path, safe="")

    def _mr_path(self, pid: str, number: int) -> str:
        return f"/projects/{pid}/merge_requests/{number}"

    def _get_mr(self, name: str, pid: str, number: int, action: str) -> dict[str, Any]:
        with self._op(name, action, f"{name}: merge request !{number} not found"):
            return self.client().http_get(self._mr_path(pid, number))  # type: ignore[return-value]

    # discovery -----------------------------------------------------------------------------------

    def discover(self, selector: GitLabSelector | dict[str, Any]) -> list[DiscoveredRepo]:
        """The projects a `GitLabSelector` (or its fields) picks, sorted by full path."""
        if isinstance(selector, dict):
            selector = GitLabSelector.model_validate(selector)
        return discover(self, selector)

    # repositories and branches -------------------------------------------------------------------

    def _project(self, name: str, pid: str, action: str) -> dict[str, Any]:
        with self._op(name, action):
            return self.client().http_get(f"/projects/{pid}")  # type: ignore[return-value]

    def _remember_default(self, name: str, branch: str | None) -> None:
        if branch:
            with self._info_lock:
                self._default_branches[name] = (branch, self._clock())

    def _known_default(self, name: str) -> str | None:
        """The default branch `resolve` (or a push) read within `default_branch_ttl_s`."""
        with self._info_lock:
            known = self._default_branches.get(name)
        if known is None or self._clock() - known[1] > self.default_branch_ttl_s:
            return None
        return known[0]

    def _clone_url(self, name: str) -> str:
        """Where git reaches the project: on the web root, so that `git_env`'s header (scoped
        to it) goes along even when GitLab reports another external URL."""
        return f"{self.web_url}/{name}.git"

    def _branch_sha(self, pid: str, branch: str) -> str | None:
        try:
            data = self.client().http_get(
                f"/projects/{pid}/repository/branches/{quote(branch, safe='')}"
            )
        except GitlabError as exc:
            if exc.response_code == 404:
                return None
            raise
        return data["commit"]["id"]  # type: ignore[index]

    def locate(self, url: str) -> RepoLocation:
        """The clone URL and default branch: the one read lately (within
        `default_branch_ttl_s`), else one read of the project."""
        name, pid = self._path(url)
        default_branch = self._known_default(name)
        if default_branch is None:
            default_branch = self._project(name, pid, "resolve").get("default_branch")
            self._remember_default(name, default_branch)
        return RepoLocation(
            url=url, subject=name, clone_url=self._clone_url(name),
            default_branch=default_branch, holder="project",
        )  # fmt: skip

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """The clone URL, base branch (default: the project's default) and sha, branch sha."""
        name, pid = self._path(url)
        project = self._project(name, pid, "resolve")
        default_branch = project.get("default_branch")
        self._remember_default(name, default_branch)
        location = RepoLocation(
            url=url, subject=name, clone_url=self._clone_url(name),
            default_branch=default_branch, holder="project",
        )  # fmt: skip
        with self._op(name, "resolve"):
            return resolved_repo(location, base, branch, lambda b: self._branch_sha(pid, b))

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to campaign `branch` over HTTPS with a lease on `expected` (None: absent).

        Refuses branches outside `campaign/` and the default branch. A transient failure is
        retried; a push whose answer was lost but which landed counts as done.
        """
        name, _ = self._path(url)
        refuse_push(name, branch)  # before any request
        location = self.locate(url)
        refuse_push(name, branch, location.default_branch)
        self.push_with_lease(
            workspace, location.clone_url, branch, sha, expected, what=f"{name}: push of {branch}"
        )

    # merge requests ------------------------------------------------------------------------------

    def _model(self, mr: dict[str, Any]) -> PullRequest:
        title, prefixed = split_title(mr.get("title") or "")
        return PullRequest(
            number=mr["iid"],
            url=mr["web_url"],
            head=mr["source_branch"],
            base=mr["target_branch"],
            title=title,
            body=mr.get("description") or "",
            labels=list(mr.get("labels") or []),
            draft=bool(mr.get("draft", mr.get("work_in_progress", prefixed))),
            state=mr_state(mr),
            head_sha=mr.get("sha"),
            created_at=_parse_time(mr.get("created_at")),
            updated_at=_parse_time(mr.get("updated_at")),
        )

    def _mrs_for(self, pid: str, head: str, state: str) -> list[dict[str, Any]]:
        """The project's own merge requests from `head` (not a fork's), newest first."""
        found = list_all(
            self.client(),
            f"/projects/{pid}/merge_requests",
            {"source_branch": head, "state": state, "order_by": "created_at"},
        )
        own = [
            mr
            for mr in found
            if mr.get("source_branch") == head
            and mr.get("source_project_id", mr.get("project_id")) == mr.get("project_id")
        ]
        return sorted(own, key=lambda mr: mr["iid"], reverse=True)

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """The most recent merge request (open, merged or closed) from branch `head`."""
        name, pid = self._path(url)
        with self._op(name, f"looking up the merge request for {head}"):
            found = self._mrs_for(pid, head, "all")
        return self._model(found[0]) if found else None

    def _user_id(self, name: str, username: str) -> int | None:
        """The id of the user `username` (looked up once per forge), None when unknown."""
        key = username.lower().lstrip("@")
        # one lookup at a time: workers that need the same reviewer wait for its answer
        # instead of asking GitLab again (lookups are rare: once per user and forge)
        with self._users_lock:
            if key in self._user_ids:
                return self._user_ids[key]
            with self._op(name, f"looking up user {username}"):
                users = self.client().http_list(
                    "/users", query_data={"username": key}, get_all=False
                )
            uid = next((u["id"] for u in users if str(u.get("username", "")).lower() == key), None)
            if uid is None:
                log.warning("%s: GitLab has no user %r; not asked", name, username)
            self._user_ids[key] = uid
            return uid

    def _ids(self, name: str, usernames: list[str], have: list[dict[str, Any]]) -> list[int]:
        """The ids of `usernames` not among `have` (user dicts), in order, known users only."""
        present = {str(u.get("username", "")).lower() for u in have}
        ids = []
        for username in usernames:
            if username.lower().lstrip("@") in present:
                continue
            uid = self._user_id(name, username)
            if uid is not None and uid not in ids:
                ids.append(uid)
        return ids

    def _team_reviewers_ignored(self, name: str, draft: PullRequestDraft) -> None:
        teams = list(getattr(draft, "team_reviewers", None) or [])
        if teams:
            log.warning("%s: GitLab has no team reviewers; %s not asked", name, ", ".join(teams))

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a merge request with its labels, reviewers (and assignees); idempotent per
        source branch: when GitLab answers that an open MR from the branch exists (a retry of a
        create that did land, or a second create), that MR is updated and returned."""
        name, pid = self._path(url)
        self._team_reviewers_ignored(name, draft)
        action = f"creating a merge request for {draft.head}"
        data: dict[str, Any] = {
            "source_branch": draft.head,
            "target_branch": draft.base,
            "title": draft_title(draft.title, draft.draft),
            "description": draft.body,
        }
        if draft.labels:
            data["labels"] = ",".join(draft.labels)
        reviewers = self._ids(name, list(draft.reviewers), [])
        if reviewers:
            data["reviewer_ids"] = reviewers
        assignees = self._ids(name, list(getattr(draft, "assignees", None) or []), [])
        if assignees:
            data["assignee_ids"] = assignees
        with self._op(name, action):
            try:
                mr = self.client().http_post(f"/projects/{pid}/merge_requests", post_data=data)
            except GitlabError as exc:
                if exc.response_code != 409:
                    raise
                existing = self._mrs_for(pid, draft.head, "opened")
                if not existing:
                    raise
                log.info("%s: merge request !%d for %s exists; updating it",
                         name, existing[0]["iid"], draft.head)  # fmt: skip
                return self._update(name, pid, existing[0], draft)
        return self._model(mr)  # type: ignore[arg-type]

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """Bring title, body, target branch, labels, draft flag, reviewers and assignees in line
        with `draft`; nothing is written when the MR already says it (labels, reviewers and
        assignees are added, never removed)."""
        name, pid = self._path(url)
        mr = self._get_mr(name, pid, number, f"updating merge request !{number}")
        with self._op(name, f"updating merge request !{number}"):
            return self._update(name, pid, mr, draft)

    def _update(
        self, name: str, pid: str, mr: dict[str, Any], draft: PullRequestDraft
    ) -> PullRequest:
        edits: dict[str, Any] = {}
        title, is_draft = split_title(mr.get("title") or "")
        is_draft = bool(mr.get("draft", is_draft))
        want_draft = draft.draft if mr_state(mr) == "open" else is_draft  # only open MRs flip
        if title != split_title(draft.title)[0] or is_draft != want_draft:
            edits["title"] = draft_title(draft.title, want_draft)
        if (mr.get("description") or "") != draft.body:
            edits["description"] = draft.body
        if mr.get("target_branch") != draft.base:
            edits["target_branch"] = draft.base
        have = {label.lower() for label in mr.get("labels") or []}
        missing = [label for label in draft.labels if label.lower() not in have]
        if missing:
            edits["add_labels"] = ",".join(missing)
        current_reviewers = list(mr.get("reviewers") or [])
        new = self._ids(name, list(draft.reviewers), current_reviewers)
        if new:
            edits["reviewer_ids"] = [u["id"] for u in current_reviewers] + new
        current_assignees = list(mr.get("assignees") or [])
        new = self._ids(name, list(getattr(draft, "assignees", None) or []), current_assignees)
        if new:
            edits["assignee_ids"] = [u["id"] for u in current_assignees] + new
        if not edits:
            return self._model(mr)
        updated = self.client().http_put(self._mr_path(pid, mr["iid"]), post_data=edits)
        return self._model(updated)  # type: ignore[arg-type]

    # ending merge requests -----------------------------------------------------------------------

    def merge_pull_request(
        self, url: str, number: int, method: str = "merge", when_checks_pass: bool = False
    ) -> PullRequest:
        """Merge an open MR at its current head with `method` (merge, squash or rebase); with
        `when_checks_pass`, GitLab merges it once its pipeline succeeds (the MR returned is then
        still open). A merged MR stays merged; a closed one is refused."""
        if method not in MERGE_METHODS:
            raise ForgeError(
                f"{url}: unknown merge method {method!r} (expected one of "
                f"{', '.join(MERGE_METHODS)})"
            )
        name, pid = self._path(url)
        action = f"merging merge request !{number}"
        mr = self._get_mr(name, pid, number, action)
        state = mr_state(mr)
        if state == "merged":
            return self._model(mr)
        if state == "closed":
            raise ForgeError(f"{name}: merge request !{number} is closed, not open")
        with self._op(name, action):
            if method == "rebase":
                mr = self._rebase(name, pid, mr)
            data: dict[str, Any] = {"squash": method == "squash"}
            if mr.get("sha"):
                data["sha"] = mr["sha"]  # GitLab refuses (409) if the head moved since
            if when_checks_pass:
                # auto_merge since GitLab 17.11, which keeps the older name (deprecated) working;
                # an older GitLab ignores the newer one
                data["auto_merge"] = True
                data["merge_when_pipeline_succeeds"] = True
            try:
                merged = self.client().http_put(
                    f"{self._mr_path(pid, number)}/merge", post_data=data
                )
            except GitlabError as exc:
                fresh = self.client().http_get(self._mr_path(pid, number))
                if mr_state(fresh) == "merged" or (  # type: ignore[arg-type]
                    when_checks_pass and fresh.get("merge_when_pipeline_succeeds")  # type: ignore[union-attr]
                ):  # a retried merge that had landed
                    return self._model(fresh)  # type: ignore[arg-type]
                if exc.response_code in MERGE_REFUSALS:
                    why = MERGE_REFUSALS[exc.response_code]
                    word = fresh.get("detailed_merge_status")  # type: ignore[union-attr]
                    detail = f" ({word})" if word else ""
                    raise ForgeError(
                        self.redact(
                            f"{name}: merge request !{number} {why}{detail}: {error_text(exc)}"
                        )
                    ) from None
                raise
        return self._model(merged)  # type: ignore[arg-type]

    def enable_auto_merge(self, url: str, number: int, method: str = "merge") -> PullRequest:
        """Ask GitLab to merge the MR by itself once its pipeline succeeds ("merge when
        pipeline succeeds"; at once when it already has): `merge_pull_request(...,
        when_checks_pass=True)`."""
        return self.merge_pull_request(url, number, method, when_checks_pass=True)

    def _rebase(self, name: str, pid: str, mr: dict[str, Any]) -> dict[str, Any]:
        """Rebase the MR's source branch onto its target (GitLab does it in the background)
        and wait for it; returns the MR after. A failed rebase is a ForgeError."""
        path = self._mr_path(pid, mr["iid"])
        gl = self.client()
        gl.http_put(f"{path}/rebase", post_data={})
        waited = 0.0
        while True:
            fresh: dict[str, Any] = gl.http_get(
                path, query_data={"include_rebase_in_progress": "true"}
            )  # type: ignore[assignment]
            if not fresh.get("rebase_in_progress"):
                if fresh.get("merge_error"):
                    raise ForgeError(
                        f"{name}: merge request !{mr['iid']} could not be rebased: "
                        f"{fresh['merge_error']}"
                    )
                return fresh
            if waited >= self.rebase_wait_s:
                raise ForgeError(
                    f"{name}: merge request !{mr['iid']}: GitLab's rebase did not finish in "
                    f"{self.rebase_wait_s:.0f} s; not merged"
                )
            self._sleep(self.rebase_poll_s)
            waited += self.rebase_poll_s

    def _set_state(self, name: str, pid: str, mr: dict[str, Any], event: str) -> dict[str, Any]:
        with self._op(name, f"{event} of merge request !{mr['iid']}"):
            return self.client().http_put(  # type: ignore[return-value]
                self._mr_path(pid, mr["iid"]), post_data={"state_event": event}
            )

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Comment (when given), then close without merging; closing a closed MR does nothing,
        a merged one cannot be closed."""
        name, pid = self._path(url)
        mr = self._get_mr(name, pid, number, f"closing merge request !{number}")
        state = mr_state(mr)
        if state == "merged":
            raise ForgeError(f"{name}: merge request !{number} is merged and cannot be closed")
        if state == "closed":
            return self._model(mr)
        if comment:
            self._post_note(name, pid, mr, comment)
        return self._model(self._set_state(name, pid, mr, "close"))

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """Reopen a closed (not merged) MR; reopening an open one does nothing."""
        name, pid = self._path(url)
        mr = self._get_mr(name, pid, number, f"reopening merge request !{number}")
        state = mr_state(mr)
        if state == "merged":
            raise ForgeError(f"{name}: merge request !{number} is merged and cannot be reopened")
        if state == "open":
            return self._model(mr)
        return self._model(self._set_state(name, pid, mr, "reopen"))

    def comment(self, url: str, number: int, body: str) -> str:
        """Add a note to the MR's conversation; returns its URL (`<MR URL>#note_<id>`)."""
        name, pid = self._path(url)
        mr = self._get_mr(name, pid, number, f"commenting on !{number}")
        return self._post_note(name, pid, mr, body)

    def _post_note(self, name: str, pid: str, mr: dict[str, Any], body: str) -> str:
        """POST a note; a retry after a 5xx or lost answer first looks for the note it made."""
        notes_path = f"{self._mr_path(pid, mr['iid'])}/notes"
        gl = self.client()
        since = datetime.now(UTC) - timedelta(minutes=10)

        def landed() -> dict[str, Any] | None:
            recent = gl.http_list(
                notes_path,
                query_data={"sort": "desc", "order_by": "created_at", "per_page": 50},
                get_all=False,
            )
            for note in recent:
                if note.get("system") or note.get("body") != body:
                    continue
                if _parse_time(note.get("created_at")) >= since:
                    return note
            return None

        with self._op(name, f"commenting on !{mr['iid']}"), self._recovering(landed):
            note = gl.http_post(notes_path, post_data={"body": body})
        return f"{mr['web_url']}#note_{note['id']}"  # type: ignore[index]

    # status --------------------------------------------------------------------------------------

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """State, mergeability, head pipeline as checks and approvals/reviewers as reviews."""
        name, pid = self._path(url)
        action = f"reading merge request !{number}"
        mr = self._get_mr(name, pid, number, action)
        with self._op(name, action):
            return pull_request_status(self.client(), pid, mr)

    def branch_checks(self, url: str, branch: str) -> BranchChecks:
        """The checks of `branch`'s head commit: its newest pipeline (none: state `none`)."""
        name, pid = self._path(url)
        with self._op(name, f"reading the checks of {branch}"):
            sha = self._branch_sha(pid, branch)
            if sha is None:
                raise ForgeError(f"{name}: branch {branch!r} does not exist")
            gl = self.client()
            newest = gl.http_list(
                f"/projects/{pid}/pipelines",
                query_data={"sha": sha, "order_by": "id", "sort": "desc", "per_page": 1},
                get_all=False,
            )
            pipeline = next(iter(newest), None)
            state, failing, _ = pipeline_checks(gl, pid, pipeline, sha)  # type: ignore[arg-type]
        return BranchChecks(branch=branch, sha=sha, state=state, failing=failing)

    def failed_check_logs(
        self, url: str, number: int, tail: int = TRACE_TAIL_CHARS
    ) -> dict[str, str]:
        """job name -> the last `tail` characters of its log, for the failing jobs of the MR's
        head pipeline (empty when it has none, or none failed)."""
        name, pid = self._path(url)
        action = f"reading the failed jobs of merge request !{number}"
        mr = self._get_mr(name, pid, number, action)
        pipeline = mr.get("head_pipeline") or {}
        if not pipeline.get("id"):
            return {}
        logs: dict[str, str] = {}
        with self._op(name, action):
            gl = self.client()
            for job in failing_jobs(pipeline_jobs(gl, pid, pipeline["id"])):
                raw = gl.http_get(f"/projects/{pid}/jobs/{job['id']}/trace", raw=True)
                content = getattr(raw, "content", raw)
                text = (
                    content.decode("utf-8", "replace")
                    if isinstance(content, bytes)
                    else str(content)
                )
                logs[job["name"]] = self.redact(text[-tail:])
        return logs
