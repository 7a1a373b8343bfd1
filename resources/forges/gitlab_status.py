"""Reading where a GitLab merge request stands: state, mergeability, pipeline and reviews.

- state: GitLab's `opened` (and `locked`, a merge in progress) is open, a draft MR (its `draft`
  attribute, i.e. a `Draft:` title) is `draft`, `merged` and `closed` as they are;
- mergeable: from `detailed_merge_status` — `mergeable` and the statuses that only wait for
  something else (a pipeline, approvals, a draft flag, discussions) are True, conflicts and a
  needed rebase False, `checking`/`unchecked` None (GitLab is still computing it); the word is
  kept as `mergeable_state`;
- checks: the head pipeline's status (`success`, `failed`, `canceled` are final; `created`,
  `pending`, `running`, `manual`, `scheduled`... pending), with the names of its failing jobs
  (failed, not `allow_failure`) and unfinished ones; no head pipeline is `none`, and a head
  pipeline of another commit than the MR's head (its pipeline has not started yet) is pending;
- review: the approvals (`/approvals`: who approved) and each reviewer's state (`/reviewers`:
  `requested_changes`, `reviewed`, `approved`); a reviewer who requested changes — or
  `detailed_merge_status` `requested_changes` — makes it `changes_requested`, and the unresolved
  discussion threads those reviewers opened are its `review_notes`. An unresolved discussion
  alone is not a change request (anyone may open one; GitLab blocks the merge on it, which
  `mergeable_state` says).
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Literal

import gitlab
from gitlab.exceptions import GitlabError

from resources.forges.base import PullRequestStatus

log = logging.getLogger(__name__)

MAX_NOTE_LINES = 50  # discussion notes passed on per reviewer (a steer prompt stays short)
PIPELINE_DONE_OK = frozenset({"success"})
PIPELINE_FAILED = frozenset({"failed", "canceled"})
PIPELINE_NONE = frozenset({"skipped"})
JOB_UNFINISHED = frozenset(
    {"created", "pending", "running", "waiting_for_resource", "preparing", "scheduled", "manual"}
)
# detailed_merge_status words: False = cannot be merged as it is, None = not known yet
MERGE_BLOCKED = frozenset({"conflict", "need_rebase", "broken_status"})
MERGE_UNKNOWN = frozenset({"checking", "unchecked", "preparing", "approvals_syncing"})

Checks = Literal["success", "failure", "pending", "none"]
Review = Literal["approved", "changes_requested", "commented", "none"]


def mr_state(mr: dict[str, Any]) -> Literal["open", "merged", "closed"]:
    """The merge request's state as the forge contract says it."""
    state = mr.get("state")
    if state == "merged":
        return "merged"
    if state == "closed":
        return "closed"
    return "open"  # opened, or locked (being merged)


def mergeable(mr: dict[str, Any]) -> tuple[bool | None, str | None]:
    """(mergeable, GitLab's word) from `detailed_merge_status` (or, on an old GitLab,
    `merge_status` and `has_conflicts`)."""
    word = mr.get("detailed_merge_status")
    if word is None:
        old = mr.get("merge_status")
        if old in ("unchecked", "checking", "cannot_be_merged_recheck", None):
            return None, old
        if old == "can_be_merged":
            return True, old
        return False, old
    if mr_state(mr) != "open":
        return None, word
    if word in MERGE_BLOCKED or mr.get("has_conflicts"):
        return False, word
    if word in MERGE_UNKNOWN:
        return None, word
    return True, word


def pull_request_status(gl: gitlab.Gitlab, pid: str, mr: dict[str, Any]) -> PullRequestStatus:
    """State (draft apart), mergeability, head pipeline and review decision of `mr` (the full
    single-MR answer, which carries `head_pipeline`) of project `pid` (its URL-encoded path)."""
    state: Literal["open", "draft", "merged", "closed"] = mr_state(mr)
    if state == "open" and mr.get("draft"):
        state = "draft"
    sha = mr.get("sha")
    checks, failing, pending = pipeline_checks(gl, pid, mr.get("head_pipeline"), sha)
    review, reviews, notes = review_decision(gl, pid, mr)
    can_merge, word = mergeable(mr)
    return PullRequestStatus(
        number=mr["iid"],
        url=mr["web_url"],
        state=state,
        head_sha=sha,
        mergeable=can_merge,
        mergeable_state=word,
        checks=checks,
        failing_checks=failing,
        pending_checks=pending,
        review=review,
        reviews=reviews,
        review_notes=notes,
    )


def list_all(
    gl: gitlab.Gitlab, path: str, query: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every item of a paginated listing (python-gitlab follows `Link: rel="next"`), asked in
    pages of the client's `per_page` (`http_list` does not add it by itself)."""
    query = dict(query or {})
    if gl.per_page:
        query.setdefault("per_page", gl.per_page)
    return list(gl.http_list(path, query_data=query, get_all=True))


def pipeline_jobs(gl: gitlab.Gitlab, pid: str, pipeline_id: int) -> list[dict[str, Any]]:
    """The jobs of a pipeline (the latest try of each; retried ones are left out by GitLab)."""
    return list_all(gl, f"/projects/{pid}/pipelines/{pipeline_id}/jobs")


def failing_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that fail their pipeline: failed or canceled, and not allowed to fail."""
    return [
        j for j in jobs if j.get("status") in ("failed", "canceled") and not j.get("allow_failure")
    ]


def pipeline_checks(
    gl: gitlab.Gitlab, pid: str, pipeline: dict[str, Any] | None, sha: str | None
) -> tuple[Checks, list[str], list[str]]:
    """What the head pipeline says, with the failing and unfinished job names."""
    if not pipeline:
        return "none", [], []
    status = pipeline.get("status") or ""
    if sha and pipeline.get("sha") and pipeline["sha"] != sha:
        return "pending", [], ["pipeline"]  # the head's own pipeline has not started yet
    if status in PIPELINE_DONE_OK:
        return "success", [], []
    if status in PIPELINE_NONE:
        return "none", [], []
    jobs = pipeline_jobs(gl, pid, pipeline["id"])
    failing = [j["name"] for j in failing_jobs(jobs)]
    pending = [j["name"] for j in jobs if j.get("status") in JOB_UNFINISHED]
    if status in PIPELINE_FAILED:
        return "failure", failing or [f"pipeline {status}"], pending
    return "pending", failing, pending or [f"pipeline {status or 'unknown'}"]


def _username(entry: dict[str, Any]) -> str:
    user = entry.get("user") if isinstance(entry.get("user"), dict) else entry
    return str((user or {}).get("username") or "")


def review_decision(
    gl: gitlab.Gitlab, pid: str, mr: dict[str, Any]
) -> tuple[Review, dict[str, str], list[str]]:
    """Each reviewer's standing (approved, changes_requested, commented), the decision they add
    up to, and what the reviewers who requested changes ask for (their unresolved threads)."""
    base = f"/projects/{pid}/merge_requests/{mr['iid']}"
    standing: dict[str, str] = {}
    for entry in _optional_list(gl, f"{base}/reviewers"):
        login, word = _username(entry), entry.get("state")
        if not login:
            continue
        if word == "requested_changes":
            standing[login] = "changes_requested"
        elif word == "approved":
            standing[login] = "approved"
        elif word == "reviewed":
            standing[login] = "commented"
    approvals = gl.http_get(f"{base}/approvals")
    approvers = [_username(a) for a in (approvals or {}).get("approved_by") or []]  # type: ignore[union-attr]
    for login in filter(None, approvers):
        if standing.get(login) != "changes_requested":
            standing[login] = "approved"
    values = set(standing.values())
    notes: list[str] = []
    requesters = [login for login, s in standing.items() if s == "changes_requested"]
    if requesters or mr.get("detailed_merge_status") == "requested_changes":
        notes = discussion_notes(gl, base, set(requesters))
        return "changes_requested", standing, notes
    approvals_left = (approvals or {}).get("approvals_left")  # type: ignore[union-attr]
    if "approved" in values and not approvals_left:
        return "approved", standing, notes
    if values:
        return "commented", standing, notes
    return "none", standing, notes


def _optional_list(gl: gitlab.Gitlab, path: str) -> list[dict[str, Any]]:
    """A listing an older GitLab may not have (404): empty then."""
    try:
        return list_all(gl, path)
    except GitlabError as exc:
        if exc.response_code != 404:
            raise
        log.info("GitLab has no %s (older than the API the forge reads); skipped", path)
        return []


def discussion_notes(gl: gitlab.Gitlab, base: str, authors: set[str]) -> list[str]:
    """The unresolved discussion threads `authors` opened (all unresolved ones when `authors`
    is empty), each as 'login: body' and, for a thread on a line, '  path:line: body'."""
    notes: list[str] = []
    for discussion in _optional_list(gl, f"{base}/discussions"):
        thread = [n for n in discussion.get("notes") or [] if not n.get("system")]
        if not thread or not thread[0].get("resolvable") or thread[0].get("resolved"):
            continue
        first = thread[0]
        login = _username(first.get("author") or {})
        if authors and login not in authors:
            continue
        position = first.get("position") or {}
        path = position.get("new_path") or position.get("old_path")
        if path:
            line = position.get("new_line") or position.get("old_line") or ""
            notes.append(f"{login}:\n  {path}:{line}: {first.get('body', '')}")
        else:
            notes.append(f"{login}: {first.get('body', '')}")
    return list(islice(notes, MAX_NOTE_LINES))
