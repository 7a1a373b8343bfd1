"""GitHub as a forge: github.com and GitHub Enterprise Server, through PyGithub and git over HTTPS.

Repositories are named by their web URL (`https://github.com/OWNER/NAME`, with or without `.git`,
any host — a GHE web host differs from its API host) or by `OWNER/NAME`. Campaign branches are
pushed with git to the `clone_url` the API reports; the token travels only as an HTTP header in
the git process's environment, never in a URL, a config file, a message or a log.

The forge verbs live here; how requests reach GitHub (one client per thread, retries, rate
limits, write pacing, counters) is `github_transport.GitHubTransport`, which `GitHubForge`
extends, and reading a pull request's checks and reviews is `github_status`. A retried write
that may have landed is not made twice: creating a pull request then answers 422 "already
exists" and the existing PR is adopted; a comment is looked up before it is posted again; a
merge is read back before its failure is reported.

No request asks for what the forge already knows: `locate` and a push take the default branch and
clone URL that discovery's listing, `locate` or `resolve` read (for `repo_info_ttl_s`), creating
a pull request needs no read of the repository, and an update rewrites the pull request
`find_pull_request` just returned (same thread, within `found_ttl_s`) instead of reading it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from github import GithubException
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository as GhRepository
from pydantic import Field

from resources.forges import github_status
from resources.forges.base import (
    MERGE_METHODS,
    BranchChecks,
    DiscoveredRepo,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    PullRequestStatus,
    RepoLocation,
    ResolvedRepo,
    refuse_push,
    resolved_repo,
)
from resources.forges.github_names import repo_full_name, web_root
from resources.forges.github_status import pr_state, pull_request_status
from resources.forges.github_transport import GitHubTransport, error_text

# what other modules import from here (repository names moved to github_names)
__all__ = ["GitHubForge", "GitHubPullRequestDraft", "repo_full_name", "web_root"]

log = logging.getLogger(__name__)

# why a merge GitHub refused failed, by status (others are reported as GitHub said them)
MERGE_REFUSALS = {405: "cannot be merged", 409: "head moved"}


# models ------------------------------------------------------------------------------------------


class GitHubPullRequestDraft(PullRequestDraft):
    """A pull request draft that also asks teams (`org` team slugs) to review.

    Users to ask are the base draft's `reviewers`; `GitHubForge` reads `team_reviewers` from any
    draft that has them.
    """

    team_reviewers: list[str] = Field(default_factory=list)


def _why(exc: GithubException, sep: str = "; ") -> str:
    """GitHub's message and its `errors` list's messages, in one line."""
    message, details = error_text(exc)
    return sep.join([message, *details])


def _mentions(exc: GithubException, phrase: str) -> bool:
    """Whether GitHub's message or its `errors` list says `phrase` (any case)."""
    return phrase.lower() in _why(exc, " ").lower()


def _moves(name: str, pr: GhPullRequest, to: str, *, never_from: str, refusal: str) -> bool:
    """Whether `pr` still has to move to state `to`: False when it is there already (a repeated
    or retried call, which changes nothing); a ForgeError ("#N `refusal`") when it stands at
    `never_from`, from where it cannot get there."""
    state = pr_state(pr)
    if state == never_from:
        raise ForgeError(f"{name}: pull request #{pr.number} {refusal}")
    return state != to


# the forge ---------------------------------------------------------------------------------------


class GitHubForge(GitHubTransport):
    """Repositories and pull requests on github.com or a GitHub Enterprise Server.

    `merge_method` is how pull requests are merged; `repo_info_ttl_s` how long a repository's
    default branch and clone URL read by `resolve` serve a push without reading them again;
    `found_ttl_s` how long the pull request `find_pull_request` returned serves an update of it
    (same thread). Everything else (`base_url`, the token, limits, pacing, retries, `stats`) is
    the transport's: see `GitHubTransport`.
    """

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.github.com",
        *,
        merge_method: Literal["merge", "squash", "rebase"] = "merge",
        repo_info_ttl_s: float = 900.0,
        found_ttl_s: float = 60.0,
        **transport: Any,
    ):
        super().__init__(token, base_url, **transport)
        self.merge_method = merge_method
        self.repo_info_ttl_s = repo_info_ttl_s
        self.found_ttl_s = found_ttl_s
        # OWNER/NAME -> (default branch, clone URL, when read)
        self._repo_info: dict[str, tuple[str, str, float]] = {}
        self._info_lock = threading.Lock()

    def _remember(self, name: str, default_branch: str, clone_url: str) -> None:
        with self._info_lock:
            self._repo_info[name] = (default_branch, clone_url, self._clock())

    def _known(self, name: str) -> tuple[str, str] | None:
        """The default branch and clone URL `resolve` read lately, if it did."""
        with self._info_lock:
            info = self._repo_info.get(name)
        if info is None or self._clock() - info[2] > self.repo_info_ttl_s:
            return None
        return info[0], info[1]

    def _repo(self, url: str) -> tuple[str, GhRepository]:
        name = repo_full_name(url)
        return name, self.client().get_repo(name)

    @contextmanager
    def _pull(
        self, url: str, number: int, action: str
    ) -> Iterator[tuple[str, GhRepository, GhPullRequest]]:
        """`(name, repository, pull request #number)` of `url`, with the failures of `action`
        inside turned into ForgeErrors (a 404: "pull request #N not found")."""
        name, repo = self._repo(url)
        self._forget_found()
        with self._op(name, action, f"{name}: pull request #{number} not found"):
            yield name, repo, repo.get_pull(number)

    # repositories and branches -------------------------------------------------------------------

    def _branch_sha(self, repo: GhRepository, branch: str) -> str | None:
        try:
            return repo.get_branch(branch).commit.sha
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise

    def locate(self, url: str) -> RepoLocation:
        """The clone URL and default branch: the ones read lately (within `repo_info_ttl_s`,
        by `resolve`, `locate` or discovery), else one read of the repository."""
        name = repo_full_name(url)
        known = self._known(name)
        if known is None:
            with self._op(name, "resolve"):
                _, repo = self._repo(url)
                known = repo.default_branch, repo.clone_url
            if known[0]:
                self._remember(name, *known)
        return RepoLocation(url=url, subject=name, clone_url=known[1], default_branch=known[0])

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """The clone URL, base branch (default: the repository's default) and sha, branch sha."""
        name, repo = self._repo(url)
        with self._op(name, "resolve"):
            default_branch = repo.default_branch
            clone_url = repo.clone_url
            if default_branch:
                self._remember(name, default_branch, clone_url)
            location = RepoLocation(
                url=url, subject=name, clone_url=clone_url, default_branch=default_branch
            )
            return resolved_repo(location, base, branch, lambda b: self._branch_sha(repo, b))

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to campaign `branch` over HTTPS with a lease on `expected` (None: absent).

        Refuses branches outside `campaign/` and the default branch. A transient failure is
        retried; a push whose answer was lost but which landed counts as done.
        """
        name = repo_full_name(url)
        refuse_push(name, branch)  # before any request
        location = self.locate(url)
        refuse_push(name, branch, location.default_branch)
        self._forget_found()  # a push moves the pull request's head and updated_at
        self.push_with_lease(
            workspace,
            location.clone_url,
            branch,
            sha,
            expected,
            what=f"{name}: push of {branch}",
            label=f"git push {name} {branch}",
        )

    # pull requests -------------------------------------------------------------------------------

    def _model(self, pr: GhPullRequest, labels: list[str] | None = None) -> PullRequest:
        return PullRequest(
            number=pr.number,
            url=pr.html_url,
            head=pr.head.ref,
            base=pr.base.ref,
            title=pr.title,
            body=pr.body or "",
            labels=labels if labels is not None else [label.name for label in pr.labels],
            draft=bool(pr.draft),
            state=pr_state(pr),
            head_sha=pr.head.sha,
            created_at=pr.created_at,
            updated_at=pr.updated_at,
        )

    def _pulls_for(self, repo: GhRepository, name: str, head: str, state: str):
        owner = name.split("/", 1)[0]
        pulls = repo.get_pulls(
            state=state, head=f"{owner}:{head}", sort="created", direction="desc"
        )
        return list(pulls)

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """The most recent pull request (open, merged or closed) whose head is `head`."""
        name, repo = self._repo(url)
        self._forget_found()
        with self._op(name, f"looking up the pull request for {head}"):
            pulls = self._pulls_for(repo, name, head, "all")
            if not pulls:
                return None
            found = max(pulls, key=lambda pr: pr.number)
            self._local.found = (name, found.number, found, self._clock())
            return self._model(found)

    def _forget_found(self) -> None:
        self._local.found = None

    def _just_found(self, name: str, number: int) -> GhPullRequest | None:
        """The pull request `find_pull_request` returned on this thread, if it is #`number` of
        `name` and no write of this thread touched it since (within `found_ttl_s`)."""
        found = getattr(self._local, "found", None)
        self._local.found = None  # used once
        if found is None or found[:2] != (name, number):
            return None
        if self._clock() - found[3] > self.found_ttl_s:
            return None
        return found[2]

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request, label it and ask its reviewers; idempotent per head branch.

        When GitHub answers that a pull request for the head already exists (a retry of a
        create that did land, or a second create), that pull request is updated and returned.
        A repository without draft support gets a ready pull request (with a warning).
        """
        name, repo = self._repo(url)
        self._forget_found()
        with self._op(name, f"creating a pull request for {draft.head}"):
            try:
                pr = self._create(repo, draft, draft.draft)
            except GithubException as exc:
                if exc.status == 422 and _mentions(exc, "already exists"):
                    pulls = self._pulls_for(repo, name, draft.head, "open")
                    if not pulls:
                        raise
                    existing = max(pulls, key=lambda p: p.number)
                    log.info("%s: pull request #%d for %s exists; updating it",
                             name, existing.number, draft.head)  # fmt: skip
                    return self._update(repo, name, existing, draft)
                if exc.status == 422 and draft.draft and _mentions(exc, "draft"):
                    log.warning("%s: draft pull requests are not available; opening a ready one",
                                name)  # fmt: skip
                    pr = self._create(repo, draft, False)
                else:
                    raise
            if draft.labels:
                pr.add_to_labels(*draft.labels)
            self._request_reviewers(name, pr, draft, fresh=True)
            self._assign(pr, draft)
            return self._model(pr, labels=list(draft.labels))

    def _create(self, repo: GhRepository, draft: PullRequestDraft, as_draft: bool) -> GhPullRequest:
        return repo.create_pull(
            base=draft.base, head=draft.head, title=draft.title, body=draft.body, draft=as_draft
        )

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """Bring title, body, base, labels, draft flag and reviewers in line with `draft`.

        Nothing is written when the pull request already says what `draft` says (its
        `updated_at` is then unchanged). Labels are added, never removed (people add their own).
        """
        name, repo = self._repo(url)
        found = self._just_found(name, number)
        if found is not None:  # what find_pull_request read a moment ago: no second read
            with self._op(name, f"updating pull request #{number}"):
                return self._update(repo, name, found, draft)
        with self._pull(url, number, f"updating pull request #{number}") as (name, repo, pr):
            return self._update(repo, name, pr, draft)

    def _update(
        self, repo: GhRepository, name: str, pr: GhPullRequest, draft: PullRequestDraft
    ) -> PullRequest:
        changed = False
        edits: dict[str, str] = {}
        if pr.title != draft.title:
            edits["title"] = draft.title
        if (pr.body or "") != draft.body:
            edits["body"] = draft.body
        if pr.base.ref != draft.base:
            edits["base"] = draft.base
        if edits:
            pr.edit(**edits)
            changed = True
        have = {label.name.lower() for label in pr.labels}
        missing = [label for label in draft.labels if label.lower() not in have]
        if missing:
            pr.add_to_labels(*missing)
            changed = True
        if pr.state == "open" and bool(pr.draft) != draft.draft:
            changed |= self._set_draft(name, pr, draft.draft)
        changed |= self._request_reviewers(name, pr, draft, fresh=False)
        changed |= self._assign(pr, draft)
        if changed:
            pr = repo.get_pull(pr.number)
        return self._model(pr)

    def _set_draft(self, name: str, pr: GhPullRequest, draft: bool) -> bool:
        """Flip the draft flag (GraphQL only); when GitHub refuses, leave it and warn."""
        try:
            if draft:
                pr.convert_to_draft()
            else:
                pr.mark_ready_for_review()
            return True
        except GithubException as exc:
            log.warning(
                "%s #%d: cannot mark the pull request %s (%s); left as it is",
                name, pr.number, "draft" if draft else "ready for review",
                self.redact(_why(exc, " ")),
            )  # fmt: skip
            return False

    def _request_reviewers(
        self, name: str, pr: GhPullRequest, draft: PullRequestDraft, *, fresh: bool
    ) -> bool:
        """Ask the draft's reviewers who are not asked yet and have not reviewed; True if any."""
        users = list(draft.reviewers)
        # GitHub takes a team's slug; CODEOWNERS and campaigns name it org/slug
        teams = [t.rsplit("/", 1)[-1] for t in getattr(draft, "team_reviewers", None) or []]
        if not users and not teams:
            return False
        author = (pr.user.login if pr.user else "").lower()
        users = [u for u in users if u.lower() != author]  # GitHub refuses the author
        if not fresh:
            asked = {u.login.lower() for u in pr.requested_reviewers}
            asked |= {r.user.login.lower() for r in pr.get_reviews() if r.user is not None}
            asked_teams = {t.slug.lower() for t in pr.requested_teams}
            users = [u for u in users if u.lower() not in asked]
            teams = [t for t in teams if t.lower() not in asked_teams]
        if not users and not teams:
            return False
        try:
            if teams:
                pr.create_review_request(reviewers=users, team_reviewers=teams)
            else:
                pr.create_review_request(reviewers=users)
        except GithubException as exc:
            if exc.status != 422:
                raise
            log.warning("%s #%d: reviewers not requested: %s", name, pr.number,
                        self.redact(_why(exc)))  # fmt: skip
            return False
        return True

    def _assign(self, pr: GhPullRequest, draft: PullRequestDraft) -> bool:
        """Assign the draft's assignees who are not yet (issue assignees endpoint); True if any."""
        have = {u.login.lower() for u in pr.assignees}
        missing = [u for u in getattr(draft, "assignees", None) or [] if u.lower() not in have]
        if missing:
            pr.add_to_assignees(*missing)
        return bool(missing)

    def enable_auto_merge(self, url: str, number: int, method: str = "merge") -> bool:
        """Ask GitHub to merge the pull request by itself once its requirements are met (GraphQL
        enablePullRequestAutoMerge); False when the repository does not allow auto-merge or
        GitHub refuses it for this pull request (e.g. it could be merged right now)."""
        with self._pull(url, number, f"enabling auto-merge of #{number}") as (name, repo, pr):
            if not repo.allow_auto_merge:
                return False
            try:
                pr.enable_automerge(merge_method=method.upper())
            except GithubException as exc:
                log.info("%s #%d: auto-merge not enabled: %s", name, number,
                         self.redact(_why(exc)))  # fmt: skip
                return False
        return True

    def merge_pull_request(self, url: str, number: int, method: str | None = None) -> PullRequest:
        """Merge an open pull request at its current head with `method` (merge, squash or
        rebase; None: `merge_method`); merged stays merged."""
        method = method or self.merge_method
        if method not in MERGE_METHODS:
            raise ForgeError(
                f"{url}: unknown merge method {method!r} (one of {', '.join(MERGE_METHODS)})"
            )
        with self._pull(url, number, f"merging pull request #{number}") as (name, repo, pr):
            if not _moves(name, pr, "merged", never_from="closed", refusal="is closed, not open"):
                return self._model(pr)
            try:
                pr.merge(merge_method=method, sha=pr.head.sha)
            except GithubException as exc:
                fresh = repo.get_pull(number)
                if pr_state(fresh) == "merged":  # a retried merge that had landed
                    return self._model(fresh)
                if exc.status in MERGE_REFUSALS:
                    raise ForgeError(
                        self.redact(
                            f"{name}: pull request #{number} {MERGE_REFUSALS[exc.status]}: "
                            f"{_why(exc)}"
                        )
                    ) from None
                raise
            return self._model(repo.get_pull(number))

    def discover(self, selector: Any) -> list[DiscoveredRepo]:
        """The repositories a `github:` selector (`GitHubSelector`) selects on this GitHub."""
        from resources.forges.github_discovery import GitHubSelector, discover

        if not isinstance(selector, GitHubSelector):
            raise ForgeError(
                f"GitHub ({self.base_url}) discovers repositories with a `github:` selector, "
                f"not {type(selector).__name__}"
            )
        found = discover(self, selector)
        for repo in found:  # a run in this process then needs no read of the repository
            self._remember(repo.full_name, repo.default_branch, repo.clone_url)
        return found

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Comment (when given), then close without merging; closing a closed PR does nothing."""
        with self._pull(url, number, f"closing pull request #{number}") as (name, _, pr):
            refusal = "is merged and cannot be closed"
            if _moves(name, pr, "closed", never_from="merged", refusal=refusal):
                if comment:
                    self._post_comment(pr, comment)
                pr.edit(state="closed")
            return self._model(pr)

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """Reopen a closed (not merged) pull request."""
        with self._pull(url, number, f"reopening pull request #{number}") as (name, _, pr):
            refusal = "is merged and cannot be reopened"
            if _moves(name, pr, "open", never_from="merged", refusal=refusal):
                pr.edit(state="open")
            return self._model(pr)

    def comment(self, url: str, number: int, body: str) -> str:
        """Add a conversation comment to a pull request; returns the comment's web URL."""
        with self._pull(url, number, f"commenting on #{number}") as (_, _, pr):
            return self._post_comment(pr, body)

    def _post_comment(self, pr: GhPullRequest, body: str) -> str:
        """POST an issue comment; a retry after a 5xx first looks for the comment it made."""
        requester = self.client().requester
        comments_url = f"{pr.issue_url}/comments"
        since = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def landed() -> tuple[dict, Any] | None:
            headers, data = requester.requestJsonAndCheck(
                "GET", comments_url, parameters={"since": since, "per_page": 100}
            )
            for item in data or []:
                if isinstance(item, dict) and item.get("body") == body:
                    return headers, item
            return None

        with self._recovering(landed):
            comment = pr.create_issue_comment(body)
        return comment.html_url

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """State, mergeability, combined checks (statuses and check runs) and review decision."""
        with self._pull(url, number, f"reading pull request #{number}") as (_, repo, pr):
            return pull_request_status(repo, pr)

    def failed_check_logs(self, url: str, number: int) -> dict[str, str]:
        """Check name -> output of the PR head's failed check runs (title, summary, text, details
        URL) and failed commit statuses (description, target URL)."""
        with self._pull(url, number, f"reading the checks of pull request #{number}") as (
            _,
            repo,
            pr,
        ):
            return github_status.failed_check_logs(repo, pr.head.sha)

    def branch_checks(self, url: str, branch: str) -> BranchChecks:
        """The combined checks of `branch`'s head commit (the post-merge watch)."""
        name, repo = self._repo(url)
        with self._op(
            name, f"reading the checks of {branch}", f"{name}: branch {branch} not found"
        ):
            return github_status.branch_checks(repo, branch)
