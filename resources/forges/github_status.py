"""Reading where a GitHub pull request stands: its state, combined checks and review decision.

Checks combine commit statuses and check runs; the review decision is what each reviewer's
standing review adds up to, and a standing change request brings its body and line comments
along (what a steer prompt tells the agent).
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Literal

from github import GithubException
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository as GhRepository

from resources.forges.base import BranchChecks, PullRequestStatus

log = logging.getLogger(__name__)

MAX_NOTE_LINES = 50  # line comments of one change request passed on (a steer prompt stays short)
# check-run conclusions that mean "not passing" (success, neutral and skipped pass)
FAILING_CONCLUSIONS = frozenset(
    {"failure", "timed_out", "cancelled", "action_required", "startup_failure", "stale"}
)

Checks = Literal["success", "failure", "pending", "none"]
Review = Literal["approved", "changes_requested", "commented", "none"]


def pr_state(pr: GhPullRequest) -> Literal["open", "merged", "closed"]:
    """The pull request's state as the forge contract says it: a merged PR is not just closed."""
    if pr.merged_at is not None:
        return "merged"
    return "open" if pr.state == "open" else "closed"


def pull_request_status(repo: GhRepository, pr: GhPullRequest) -> PullRequestStatus:
    """State (draft apart), mergeability, combined checks of the head and review decision."""
    state: Literal["open", "draft", "merged", "closed"] = pr_state(pr)
    if state == "open" and pr.draft:
        state = "draft"
    sha = pr.head.sha
    checks, failing, pending = combined_checks(repo, sha)
    review, reviews, notes = review_decision(pr)
    return PullRequestStatus(
        number=pr.number,
        url=pr.html_url,
        state=state,
        head_sha=sha,
        mergeable=pr.mergeable,
        mergeable_state=pr.mergeable_state,
        checks=checks,
        failing_checks=failing,
        pending_checks=pending,
        review=review,
        reviews=reviews,
        review_notes=notes,
    )


def combined_checks(repo: GhRepository, sha: str) -> tuple[Checks, list[str], list[str]]:
    """What the statuses and check runs of `sha` add up to, with the failing and pending names."""
    commit = repo.get_commit(sha)  # lazy: no request
    failing: list[str] = []
    pending: list[str] = []
    passing = 0
    combined = commit.get_combined_status()
    for status in combined.statuses:
        if status.state in ("failure", "error"):
            failing.append(status.context)
        elif status.state == "pending":
            pending.append(status.context)
        else:
            passing += 1
    for run in commit.get_check_runs():
        if run.status != "completed":
            pending.append(run.name)
        elif (run.conclusion or "") in FAILING_CONCLUSIONS:
            failing.append(run.name)
        else:
            passing += 1
    if failing:
        return "failure", failing, pending
    if pending:
        return "pending", failing, pending
    return ("success" if passing else "none"), failing, pending


def review_decision(pr: GhPullRequest) -> tuple[Review, dict[str, str], list[str]]:
    """Each reviewer's standing review (their latest approval, change request or dismissal;
    a comment only when they gave nothing else), the decision they add up to, and what the
    standing change requests ask for: their bodies and line comments."""
    standing: dict[str, str] = {}
    bodies: dict[str, str] = {}
    review_ids: dict[str, int] = {}
    for review in pr.get_reviews():  # oldest first
        if review.user is None:
            continue
        login, state = review.user.login, (review.state or "").upper()
        if state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            standing[login] = state.lower()
            bodies[login] = review.body or ""
            review_ids[login] = review.id
        elif state == "COMMENTED" and login not in standing:
            standing[login] = "commented"
    notes = []
    for login, state in standing.items():
        if state != "changes_requested":
            continue
        lines = review_lines(pr, review_ids[login])
        if bodies[login] or lines:
            notes.append("\n".join([f"{login}: {bodies[login]}".strip(), *lines]))
    values = set(standing.values())
    if "changes_requested" in values:
        return "changes_requested", standing, notes
    if "approved" in values:
        return "approved", standing, notes
    if "commented" in values:
        return "commented", standing, notes
    return "none", standing, notes


def review_lines(pr: GhPullRequest, review_id: int) -> list[str]:
    """The line comments of one review as "  path:line: what to change"; when GitHub answers
    404 for them (the review was deleted meanwhile, or the token cannot see them), one line that
    says so: the rest of the pull request's status still holds and is reported."""
    try:
        return [
            f"  {c.path}:{c.line or c.original_line}: {c.body}"
            for c in islice(pr.get_single_review_comments(review_id), MAX_NOTE_LINES)
        ]
    except GithubException as exc:
        if exc.status != 404:
            raise
        log.warning("%s: the line comments of review %s answered 404", pr.html_url, review_id)
        return [
            f"  (the line comments of review {review_id} could not be read: GitHub answered "
            "404 Not Found)"
        ]


def failed_check_logs(repo: GhRepository, sha: str) -> dict[str, str]:
    """Check name -> what GitHub holds of each failed check of `sha`: a check run's output
    (title, summary, text) and details URL; a commit status's description and target URL (its
    log lives on the CI system the URL names)."""
    commit = repo.get_commit(sha)
    logs: dict[str, str] = {}
    for status in commit.get_combined_status().statuses:
        if status.state in ("failure", "error"):
            parts = [status.description or status.state, status.target_url or ""]
            logs[status.context] = "\n".join(p for p in parts if p)
    for run in commit.get_check_runs():
        if run.status == "completed" and (run.conclusion or "") in FAILING_CONCLUSIONS:
            output = run.output
            parts = [
                f"conclusion: {run.conclusion}",
                getattr(output, "title", None) or "",
                getattr(output, "summary", None) or "",
                getattr(output, "text", None) or "",
                run.details_url or run.html_url or "",
            ]
            logs[run.name] = "\n".join(p for p in parts if p)
    return logs


def branch_checks(repo: GhRepository, branch: str) -> BranchChecks:
    """The combined checks (statuses and check runs) of a branch's head commit."""
    sha = repo.get_branch(branch).commit.sha
    state, failing, _ = combined_checks(repo, sha)
    return BranchChecks(branch=branch, sha=sha, state=state, failing=failing)
