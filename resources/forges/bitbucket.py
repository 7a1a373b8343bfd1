"""Bitbucket as a forge: Bitbucket Cloud (REST 2.0) and Bitbucket Data Center (REST 1.0), through
plain `requests` and git over HTTPS.

`BitbucketForge(flavor="cloud"|"dc", token=..., base_url=..., username=None)` implements the
`Forge` verbs once; what differs between the flavours (addresses, endpoints, JSON shapes, Data
Center's optimistic locking) is the adapter's: `bitbucket_cloud.CloudApi` or `bitbucket_dc.DcApi`.
Requests, retries, credentials and errors are `bitbucket_transport.BitbucketTransport`'s.

Bitbucket has no labels: a draft's labels are recorded nowhere (and no error is raised); a
pull request reports none. A retried write is not made twice: a create whose answer was lost (or
that Bitbucket refuses as a duplicate) adopts the open pull request from the campaign branch, a
comment is looked up before it is posted again, and a merge is read back before its failure is
reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

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
from resources.forges.bitbucket_api import (
    MERGE_METHODS,
    BbPull,
    BitbucketApi,
    BuildStatus,
    DiscoveredRepo,
    RepoRef,
)
from resources.forges.bitbucket_cloud import CloudApi
from resources.forges.bitbucket_dc import DcApi
from resources.forges.bitbucket_discovery import BitbucketSelector
from resources.forges.bitbucket_discovery import discover as discover_repos
from resources.forges.bitbucket_transport import BitbucketHttpError, BitbucketTransport
from resources.forges.transport import RequestTally

log = logging.getLogger(__name__)

# a build status -> the platform's checks word
# how often a merge Bitbucket accepted but has not finished is read again
MERGE_POLLS = 5
CHECK_STATES = {"SUCCESSFUL": "success", "FAILED": "failure", "STOPPED": "failure"}


class BitbucketForge:
    """Repositories and pull requests on Bitbucket Cloud or Data Center.

    Cloud: `base_url` is the REST root (default `https://api.bitbucket.org/2.0`; the web root
    is `https://bitbucket.org`), `token` an access token or, with `username`, an app password.
    Data Center: `base_url` is the web root, `token` an HTTP access token. `transport` options
    (retries, waits, the injectable sleep and clock) go to `BitbucketTransport`.
    """

    def __init__(
        self,
        flavor: Literal["cloud", "dc"],
        token: str,
        base_url: str = "",
        username: str | None = None,
        **transport: Any,
    ):
        self.http = BitbucketTransport(flavor, token, base_url, username, **transport)
        self.flavor = flavor
        self.api: BitbucketApi = CloudApi(self.http) if flavor == "cloud" else DcApi(self.http)
        self.stats = self.http.stats
        # OWNER/SLUG -> (default branch, clone URL) that resolve read, for the push after it
        self._repo_info: dict[str, tuple[str, str]] = {}
        self._info_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BitbucketForge(flavor={self.flavor!r}, base_url={self.http.base_url!r})"

    # what the platform asks of every forge besides the verbs ------------------------------------

    def git_env(self) -> dict[str, str]:
        """Credentials for git over HTTPS, scoped to this Bitbucket's web root."""
        return self.http.git_env()

    def redact(self, text: str) -> str:
        """`text` with the credentials masked."""
        return self.http.redact(text)

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """While inside, this thread's API requests are counted in the tally yielded."""
        with self.http.counting() as tally:
            yield tally

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def discover(self, selector: BitbucketSelector | dict[str, Any]) -> list[DiscoveredRepo]:
        """The repositories `selector` picks (see `bitbucket_discovery`)."""
        if isinstance(selector, dict):
            selector = BitbucketSelector.model_validate(selector)
        return discover_repos(self.api, selector)

    # repositories and branches -------------------------------------------------------------------

    def _info(self, ref: RepoRef) -> tuple[str, str]:
        with self._info_lock:
            known = self._repo_info.get(ref.name)
        if known is None:
            known = self.api.repo(ref)
            with self._info_lock:
                self._repo_info[ref.name] = known
        return known

    def locate(self, url: str) -> RepoLocation:
        """The clone URL and default branch: the ones this forge read before, else one read of
        the repository."""
        ref = self.api.parse(url)
        default_branch, clone_url = self._info(ref)
        return RepoLocation(
            url=url, subject=ref.name, clone_url=clone_url, default_branch=default_branch
        )

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """The clone URL, base branch (default: the repository's default) and sha, branch sha."""
        ref = self.api.parse(url)
        default_branch, clone_url = self.api.repo(ref)
        with self._info_lock:
            self._repo_info[ref.name] = (default_branch, clone_url)
        location = RepoLocation(
            url=url, subject=ref.name, clone_url=clone_url, default_branch=default_branch
        )
        return resolved_repo(location, base, branch, lambda b: self.api.branch_sha(ref, b))

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to campaign `branch` over HTTPS with a lease on `expected` (None: absent);
        refuses branches outside `campaign/` and the default branch."""
        ref = self.api.parse(url)
        refuse_push(ref.name, branch)  # before any request
        default_branch, clone_url = self._info(ref)
        refuse_push(ref.name, branch, default_branch)
        self.http.push_with_lease(
            workspace, clone_url, branch, sha, expected, what=f"{ref.name}: push of {branch}"
        )

    # pull requests -------------------------------------------------------------------------------

    def _model(self, pull: BbPull) -> PullRequest:
        return PullRequest(
            number=pull.number,
            url=pull.url,
            head=pull.source,
            base=pull.destination,
            title=pull.title,
            body=pull.description,
            labels=[],  # Bitbucket has no labels
            draft=pull.draft,
            state=pull.state,
            head_sha=pull.source_sha,
            created_at=pull.created_at,
            updated_at=pull.updated_at,
        )

    def find_pull_request(self, url: str, head: str) -> PullRequest | None:
        """The most recent pull request (open, merged or declined) whose source is `head`."""
        ref = self.api.parse(url)
        pulls = self.api.pulls_from(ref, head)
        return self._model(max(pulls, key=lambda p: p.number)) if pulls else None

    def _open_from(self, ref: RepoRef, head: str, base: str) -> BbPull | None:
        pulls = [p for p in self.api.pulls_from(ref, head, open_only=True) if p.destination == base]
        return max(pulls, key=lambda p: p.number) if pulls else None

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request asking the draft's reviewers; idempotent per source branch.

        A create whose answer was lost, or that Bitbucket refuses because one is open already
        from the branch, adopts that pull request (updated to say what `draft` says)."""
        ref = self.api.parse(url)
        fields = {
            "title": draft.title,
            "description": draft.body,
            "source": draft.head,
            "destination": draft.base,
            "draft": draft.draft,
        }
        if draft.labels:
            log.debug("%s: Bitbucket has no labels; %s not recorded", ref.name, draft.labels)
        unsupported = [
            field
            for field in ("team_reviewers", "assignees")
            if getattr(draft, field, None)  # fields of the GitHub forge's drafts
        ]
        if unsupported:
            log.warning("%s: Bitbucket has no %s; ignored", ref.name, " or ".join(unsupported))
        adopted: list[BbPull] = []

        def landed() -> BbPull | None:  # a create whose answer was lost: did it open one?
            found = self._open_from(ref, draft.head, draft.base)
            if found is not None:
                adopted.append(found)
            return found

        try:
            pull = self.api.create_pull(ref, fields, list(draft.reviewers), recover=landed)
        except ForgeError as exc:
            if getattr(exc, "status", None) not in (400, 409):
                raise
            existing = self._open_from(ref, draft.head, draft.base)
            if existing is None and draft.reviewers and _about_reviewers(exc):
                log.warning("%s: reviewers not requested: %s", ref.name, exc)  # as on GitHub
                pull = self.api.create_pull(ref, fields, [], recover=landed)
                return self._model(pull)
            if existing is None:
                raise
            log.info("%s: pull request #%d for %s exists; updating it",
                     ref.name, existing.number, draft.head)  # fmt: skip
            return self._update(ref, existing, draft)
        if adopted:  # it may be an older one: make it say what the draft says
            return self._update(ref, pull, draft)
        return self._model(pull)

    def update_pull_request(self, url: str, number: int, draft: PullRequestDraft) -> PullRequest:
        """Bring title, description, destination, draft flag and reviewers in line with `draft`
        (reviewers added, never removed); nothing is written when it says that already."""
        ref = self.api.parse(url)
        return self._update(ref, self.api.get_pull(ref, number), draft)

    def _update(self, ref: RepoRef, pull: BbPull, draft: PullRequestDraft) -> PullRequest:
        if pull.state != "open":
            return self._model(pull)
        if self.flavor == "cloud" and "reviewers" not in pull.raw:
            pull = self.api.get_pull(ref, pull.number)  # listings leave reviewers out
        changes: dict[str, Any] = {}
        if pull.title != draft.title:
            changes["title"] = draft.title
        if pull.description != draft.body:
            changes["description"] = draft.body
        if pull.destination != draft.base:
            changes["destination"] = draft.base
        if pull.draft != draft.draft:
            changes["draft"] = draft.draft
        asked = {r.lower() for r in [*pull.reviewers, *pull.reviews]}
        missing = [r for r in draft.reviewers if r.lower() not in asked]
        if missing:
            changes["reviewers"] = [*pull.reviewers, *missing]
        elif changes:
            changes["reviewers"] = list(pull.reviewers)  # a PUT without them would drop them
        if not changes:
            return self._model(pull)
        try:
            return self._model(self.api.edit_pull(ref, pull, changes))
        except ForgeError as exc:
            if not (missing and getattr(exc, "status", None) == 400 and _about_reviewers(exc)):
                raise
            log.warning("%s #%d: reviewers not requested: %s", ref.name, pull.number, exc)
            changes["reviewers"] = list(pull.reviewers)
            if set(changes) == {"reviewers"}:
                return self._model(pull)
            return self._model(self.api.edit_pull(ref, pull, changes))

    def merge_pull_request(self, url: str, number: int, method: str = "merge") -> PullRequest:
        """Merge an open pull request (`method`: merge, squash or rebase — Cloud's merge_commit,
        squash, fast_forward; Data Center merges with the repository's default strategy and
        refuses another); a merged one is returned as it is, a declined one is refused."""
        ref = self.api.parse(url)
        if method not in MERGE_METHODS:
            raise ForgeError(
                f"{ref.name}: merge method {method!r} is not one of {', '.join(MERGE_METHODS)}"
            )
        pull = self.api.get_pull(ref, number)
        if pull.state == "merged":
            return self._model(pull)
        if pull.state == "closed":
            raise ForgeError(f"{ref.name}: pull request #{number} is closed, not open")
        try:
            self.api.merge(ref, pull, method)
        except ForgeError as exc:
            if getattr(exc, "status", None) is None:
                raise  # refused before asking Bitbucket
            fresh = self.api.get_pull(ref, number)
            if fresh.state == "merged":  # a retried merge that had landed
                return self._model(fresh)
            raise
        return self._model(self._merged(ref, number))

    def _merged(self, ref: RepoRef, number: int) -> BbPull:
        """The pull request after a merge was accepted: Cloud may merge in the background (a
        202 with a task to poll), so an open one is read again a few times, backing off."""
        pull = self.api.get_pull(ref, number)
        for attempt in range(MERGE_POLLS):
            if pull.state != "open":
                break
            self.http.pause(self.http.backoff_s * 2**attempt)
            pull = self.api.get_pull(ref, number)
        return pull

    @contextmanager
    def _read_back(self, ref: RepoRef, number: int, state: str) -> Iterator[list[BbPull]]:
        """Inside, a write Bitbucket refused (it may be a retry of one whose answer was lost)
        is read back: when the pull request stands at `state`, it landed, and the list
        yielded holds the pull request instead of the error being raised."""
        found: list[BbPull] = []
        try:
            yield found
        except BitbucketHttpError:
            fresh = self.api.get_pull(ref, number)
            if fresh.state != state:
                raise
            found.append(fresh)

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Comment (when given), then decline; declining a declined PR does nothing."""
        ref = self.api.parse(url)
        pull = self.api.get_pull(ref, number)
        if pull.state == "merged":
            raise ForgeError(f"{ref.name}: pull request #{number} is merged and cannot be closed")
        if pull.state == "closed":
            return self._model(pull)
        if comment:
            self.api.comment(ref, number, comment)
            pull = self.api.get_pull(ref, number)  # Data Center: a comment moves the version
        with self._read_back(ref, number, "closed") as fresh:
            self.api.decline(ref, pull)
        return self._model(fresh[0] if fresh else self.api.get_pull(ref, number))

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """Reopen a declined pull request (Data Center); Cloud cannot, which is a ForgeError."""
        ref = self.api.parse(url)
        pull = self.api.get_pull(ref, number)
        if pull.state == "merged":
            raise ForgeError(f"{ref.name}: pull request #{number} is merged and cannot be reopened")
        if pull.state == "open":
            return self._model(pull)
        with self._read_back(ref, number, "open") as fresh:
            self.api.reopen(ref, pull)
        return self._model(fresh[0] if fresh else self.api.get_pull(ref, number))

    def comment(self, url: str, number: int, body: str) -> str:
        """Add a comment to a pull request; returns its web URL."""
        ref = self.api.parse(url)
        return self.api.comment(ref, number, body)

    def branch_checks(self, url: str, branch: str) -> BranchChecks:
        """The build statuses of a branch's head commit, combined (the post-merge watch)."""
        ref = self.api.parse(url)
        sha = self.api.branch_sha(ref, branch)
        if sha is None:
            raise ForgeError(f"{ref.name}: branch {branch!r} does not exist")
        word, failing, _ = _combined(self.api.checks(ref, sha))
        return BranchChecks(branch=branch, sha=sha, state=word, failing=failing)  # type: ignore[arg-type]

    def failed_check_logs(self, url: str, number: int) -> dict[str, str]:
        """Check name -> what Bitbucket knows of each failed build of the pull request's head:
        Bitbucket keeps no build logs (a build status is a state, a description and a link to
        the CI), so this is the description and the link, for CI-driven repair."""
        ref = self.api.parse(url)
        pull = self.api.get_pull(ref, number)
        if not pull.source_sha:
            return {}
        return {
            b.name: "\n".join(x for x in (b.description, f"build: {b.url}" if b.url else "") if x)
            for b in self.api.checks(ref, pull.source_sha)
            if CHECK_STATES.get(b.state) == "failure"
        }

    def pull_request_status(self, url: str, number: int) -> PullRequestStatus:
        """State, mergeability (Data Center's merge check; unknown on Cloud), the head commit's
        build statuses as checks and the participants' approvals as reviews."""
        ref = self.api.parse(url)
        pull = self.api.get_pull(ref, number)
        state = "draft" if pull.state == "open" and pull.draft else pull.state
        checks = self.api.checks(ref, pull.source_sha) if pull.source_sha else []
        word, failing, pending = _combined(checks)
        mergeable, mergeable_state = (
            self.api.mergeable(ref, pull) if pull.state == "open" else (None, None)
        )
        reviews = dict(pull.reviews)
        values = set(reviews.values())
        review = next(
            (v for v in ("changes_requested", "approved", "commented") if v in values), "none"
        )
        return PullRequestStatus(
            number=number,
            url=pull.url,
            state=state,  # type: ignore[arg-type]
            head_sha=pull.source_sha,
            mergeable=mergeable,
            mergeable_state=mergeable_state,
            checks=word,  # type: ignore[arg-type]
            failing_checks=failing,
            pending_checks=pending,
            review=review,  # type: ignore[arg-type]
            reviews=reviews,
        )


def _about_reviewers(exc: ForgeError) -> bool:
    """Whether Bitbucket refused a write for its reviewers (unknown user, the author...)."""
    return "reviewer" in str(exc).lower()


def _combined(checks: list[BuildStatus]) -> tuple[str, list[str], list[str]]:
    """(checks word, failing names, pending names) of a commit's build statuses: any failed
    or stopped one fails it, else any other than successful keeps it pending."""
    failing = [b.name for b in checks if CHECK_STATES.get(b.state) == "failure"]
    pending = [b.name for b in checks if b.state not in CHECK_STATES]
    word = "failure" if failing else "pending" if pending else "success" if checks else "none"
    return word, failing, pending
