"""GitHub as a forge: github.com and GitHub Enterprise Server, through PyGithub and git over HTTPS.

Repositories are named by their web URL (`https://github.com/OWNER/NAME`, with or without `.git`,
any host — a GHE web host differs from its API host) or by `OWNER/NAME`. Campaign branches are
pushed with git to the `clone_url` the API reports; the token travels only as an HTTP header in
the git process's environment, never in a URL, a config file, a message or a log.

Every API request goes through one retry loop (`GitHubForge._request`): 5xx, network errors, 429
and rate-limit 403s are retried with backoff that honours `Retry-After` and `X-RateLimit-Reset`;
a rate limit pauses every thread of the forge, not just the one that hit it. Writes (POST, PATCH,
PUT, DELETE and git pushes) share a bounded semaphore and are paced, so hundreds of targets do not
trip GitHub's secondary (abuse) limits. A write retried after an ambiguous failure (a 5xx or a
lost response) may already have been applied: creating a pull request then answers 422 "already
exists" and the existing PR is adopted; a comment is looked up before it is posted again.

PyGithub's `Github` client is not thread-safe (its connection object keeps the pending request in
attributes), so the forge keeps one client per thread.
"""

from __future__ import annotations

import base64
import functools
import logging
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import requests
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository as GhRepository
from pydantic import Field

from resources import cancel
from resources.forges.base import (
    BRANCH_PREFIX,
    ForgeError,
    PullRequest,
    PullRequestDraft,
    PullRequestStatus,
    ResolvedRepo,
)
from resources.git import GitError, run_git
from resources.redact import redact, secret_values

log = logging.getLogger(__name__)

WRITE_VERBS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
MAX_NOTE_LINES = 50  # line comments of one change request passed on (a steer prompt stays short)
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# check-run conclusions that mean "not passing" (success, neutral and skipped pass)
FAILING_CONCLUSIONS = frozenset(
    {"failure", "timed_out", "cancelled", "action_required", "startup_failure", "stale"}
)
# git failures worth another try: the server or the network, not the request
TRANSIENT_GIT = re.compile(
    r"returned error: (5\d\d|429)|could not resolve host|connection (reset|refused|timed out)"
    r"|operation timed out|early eof|remote end hung up|rpc failed|ssl_",
    re.I,
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?P<path>.+)$")


def stoppable_sleep(seconds: float) -> None:
    """The forge's default wait (back-off, rate-limit pause, write pacing): it ends at once, with
    a ForgeError, when the calling worker is cancelled, so that a target in a retry loop cannot
    outlive the run's shutdown grace (a back-off can reach `max_wait_s` per retry)."""
    if cancel.sleep(seconds):
        raise ForgeError(f"GitHub: {cancel.CANCELLED_MESSAGE}")


# models ------------------------------------------------------------------------------------------


class GitHubPullRequestDraft(PullRequestDraft):
    """A pull request draft that also asks teams (`org` team slugs) to review.

    Users to ask are the base draft's `reviewers`; `GitHubForge` reads `team_reviewers` from any
    draft that has them.
    """

    team_reviewers: list[str] = Field(default_factory=list)


# repository names --------------------------------------------------------------------------------


def _display(url: str) -> str:
    """`url` without any user:password part, for messages."""
    parsed = urlparse(url)
    if parsed.scheme and "@" in parsed.netloc:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()
    return url


def repo_full_name(url: str) -> str:
    """`OWNER/NAME` of a repository given as a web or clone URL (any host), scp-like or as is."""
    text = url.strip()
    scp = _SCP_LIKE.match(text)
    if scp and "://" not in text:
        path = scp["path"]
    elif "://" in text:
        path = urlparse(text).path
    else:
        path = text
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) == 2:
        owner, name = parts[0], parts[1].removesuffix(".git")
        if _NAME.match(owner) and _NAME.match(name) and name not in (".", ".."):
            return f"{owner}/{name}"
    raise ForgeError(
        f"{_display(url)}: not a GitHub repository (expected https://HOST/OWNER/NAME or OWNER/NAME)"
    )


def web_root(api_url: str) -> str:
    """The web root of the GitHub whose REST API root is `api_url`, where `OWNER/NAME` lives:
    `https://api.github.com` -> `https://github.com`, a GHE server's `https://HOST/api/v3` ->
    `https://HOST`, GHE.com's `https://api.SUB.ghe.com` -> `https://SUB.ghe.com`."""
    parsed = urlparse(api_url.strip().rstrip("/"))
    netloc, path = parsed.netloc, parsed.path
    if path.endswith("/api/v3"):
        path = path.removesuffix("/api/v3")
    elif netloc.startswith("api."):
        netloc = netloc.removeprefix("api.")
    return f"{parsed.scheme or 'https'}://{netloc}{path}".rstrip("/")


def _error_text(exc: GithubException) -> tuple[str, list[str]]:
    """GitHub's message and the messages of its `errors` list."""
    data = exc.data
    message = ""
    details: list[str] = []
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("data") or "")
        for err in data.get("errors") or []:
            if isinstance(err, dict):
                text = err.get("message") or " ".join(
                    str(err[k]) for k in ("resource", "field", "code") if err.get(k)
                )
                details.append(str(text))
            else:
                details.append(str(err))
    return message or (exc.message or ""), details


def _mentions(exc: GithubException, phrase: str) -> bool:
    message, details = _error_text(exc)
    return phrase.lower() in " ".join([message, *details]).lower()


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# the forge ---------------------------------------------------------------------------------------


def _review_lines(pr: GhPullRequest, review_id: int) -> list[str]:
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


class GitHubForge:
    """Repositories and pull requests on github.com or a GitHub Enterprise Server.

    `base_url` is the REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GHE.
    `write_concurrency` bounds simultaneous writes and pushes across threads; `write_interval_s`
    spaces API writes (GitHub asks integrations for about one second between mutating requests).
    `max_retries`, `backoff_s` and `max_wait_s` shape the retries; `sleep` and `clock` are
    injectable so tests do not wait. `stats` counts api_calls, retries, rate_limited,
    server_errors, rate_limit_wait_s, backoff_wait_s, write_pacing_wait_s, git_pushes and
    recovered_writes (writes found applied after a lost answer). Waits are summed over threads.
    """

    def __init__(
        self,
        token: str,
        base_url: str = "https://api.github.com",
        *,
        write_concurrency: int = 4,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        write_interval_s: float = 1.0,
        per_page: int = 100,
        timeout_s: int = 30,
        merge_method: Literal["merge", "squash", "rebase"] = "merge",
        sleep: Callable[[float], None] = stoppable_sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not token:
            raise ForgeError("GitHub forge: no token given")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.write_concurrency = write_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.write_interval_s = write_interval_s
        self.per_page = per_page
        self.timeout_s = timeout_s
        self.merge_method = merge_method
        self._sleep = sleep
        self._clock = clock
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self._auth_header = f"Authorization: Basic {basic}"
        self._secrets = sorted(
            {token, basic, base64.b64encode(token.encode()).decode()}, key=len, reverse=True
        )
        self._write_slots = threading.BoundedSemaphore(write_concurrency)
        self._lock = threading.Lock()  # stats, pause and client list
        self._pace_lock = threading.Lock()
        self._pause_until = 0.0
        self._next_write_at = 0.0
        self._local = threading.local()
        self._clients: list[Github] = []
        self.stats: dict[str, float] = {
            "api_calls": 0,
            "retries": 0,
            "rate_limited": 0,
            "server_errors": 0,
            "rate_limit_wait_s": 0.0,
            "backoff_wait_s": 0.0,
            "write_pacing_wait_s": 0.0,
            "git_pushes": 0,
            "recovered_writes": 0,
        }

    def __repr__(self) -> str:
        return f"GitHubForge(base_url={self.base_url!r})"

    # plumbing ------------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` with the token (plain or base64, and any secret in the environment) masked."""
        return redact(text, self._secrets + secret_values())

    def git_env(self) -> dict[str, str]:
        """Environment for git processes that talk to this GitHub over HTTPS with the token.

        The token goes in an `Authorization: Basic` header set through `GIT_CONFIG_*` variables
        (command-line scope: nothing is written to any config file); redirects are not followed,
        so the header cannot be carried to another host. Pass it as `run_git(..., env=...)`.
        """
        return {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": self._auth_header,
            "GIT_CONFIG_KEY_1": "http.followRedirects",
            "GIT_CONFIG_VALUE_1": "false",
        }

    def client(self) -> Github:
        """This thread's PyGithub client, whose every request runs through the retry loop."""
        gh = getattr(self._local, "gh", None)
        if gh is None:
            gh = Github(
                auth=Auth.Token(self._token),
                base_url=self.base_url,
                per_page=self.per_page,
                timeout=self.timeout_s,
                retry=None,  # retries are ours: see _request
                seconds_between_requests=None,
                seconds_between_writes=None,  # pacing is ours, shared by all threads
                lazy=True,
                user_agent="campaign-orchestrator",
            )
            requester = gh.requester
            send = requester.requestJsonAndCheck
            requester.requestJsonAndCheck = functools.partial(self._request, send)  # type: ignore[method-assign]
            self._local.gh = gh
            with self._lock:
                self._clients.append(gh)
        return gh

    def close(self) -> None:
        """Close every thread's HTTP connections."""
        with self._lock:
            clients, self._clients = self._clients, []
        for gh in clients:
            gh.close()

    def _bump(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self.stats[key] = round(self.stats[key] + amount, 6)

    def _request(self, send: Callable[..., Any], verb: str, url: str, *args: Any, **kwargs: Any):
        """One API request with retries; writes take a write slot and are paced."""
        write = verb.upper() in WRITE_VERBS
        attempt = 0
        while True:
            self._await_pause()
            failure: Exception
            with self._write_slots if write else nullcontext():
                if write:
                    self._pace_write()
                self._bump("api_calls")
                try:
                    return send(verb, url, *args, **kwargs)
                except (GithubException, *NETWORK_ERRORS) as exc:
                    failure = exc
            plan = self._retry_plan(failure)
            if plan is None or attempt >= self.max_retries:
                raise failure
            kind, wait = plan
            if write and kind != "rate_limit":  # a 5xx or lost response: it may have been applied
                found = self._recovered()
                if found is not None:
                    self._bump("server_errors")
                    self._bump("recovered_writes")
                    return found
            attempt += 1
            self._back_off(kind, wait, attempt, f"{verb} {urlparse(url).path}", failure)

    def _recovered(self) -> tuple[dict, Any] | None:
        """What this thread's recovery hook finds of a write that may have landed (or None)."""
        recover = getattr(self._local, "recover", None)
        if recover is None:
            return None
        try:
            return recover()
        except (GithubException, *NETWORK_ERRORS):
            return None  # cannot tell: retry the write

    def _retry_plan(self, exc: Exception) -> tuple[str, float | None] | None:
        """`(kind, wait)` for a failure worth retrying (wait None: back off), else None."""
        if not isinstance(exc, GithubException):
            return ("network", None)
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        retry_after = _float(headers.get("retry-after"))
        message = _error_text(exc)[0].lower()
        if exc.status in (403, 429):
            if headers.get("x-ratelimit-remaining") == "0" and retry_after is None:
                reset = _float(headers.get("x-ratelimit-reset"))
                if reset is not None:
                    wait = max(0.0, reset - time.time()) + 1.0
                    if wait > self.max_wait_s:
                        when = datetime.fromtimestamp(reset, UTC).strftime("%H:%M:%SZ")
                        raise ForgeError(
                            f"GitHub API rate limit exhausted until {when} (in {wait:.0f} s); "
                            "not waiting that long — try again after the reset"
                        )
                    return ("rate_limit", wait)
                return ("rate_limit", None)
            if (
                exc.status == 429
                or retry_after is not None
                or "secondary rate limit" in message
                or "abuse" in message
                or "rate limit" in message
            ):
                return ("rate_limit", retry_after)
            return None
        if exc.status >= 500:
            return ("server", retry_after)
        return None

    def _back_off(
        self, kind: str, wait: float | None, attempt: int, what: str, exc: Exception | None
    ) -> None:
        """Wait before retry `attempt`: rate limits pause every thread, other failures this one."""
        self._bump("retries")
        if kind == "rate_limit":
            self._bump("rate_limited")
            if wait is None:  # GitHub: without a hint, wait at least a minute, then longer
                wait = 60.0 * 2 ** (attempt - 1)
            wait = min(wait, self.max_wait_s)
            with self._lock:
                self._pause_until = max(self._pause_until, self._clock() + wait)
        else:
            self._bump("server_errors")
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            wait = min(wait, self.max_wait_s)
        reason = self.redact(str(exc)) if exc is not None else kind
        log.warning(
            "GitHub %s: %s (%s); retry %d/%d in %.1f s",
            what, kind, reason[:200], attempt, self.max_retries, wait,
        )  # fmt: skip
        if kind != "rate_limit":  # a rate-limit pause is slept out before the next request
            self._sleep(wait)
            self._bump("backoff_wait_s", wait)

    def _await_pause(self) -> None:
        """Sleep out a rate-limit pause that any thread started."""
        with self._lock:
            wait = self._pause_until - self._clock()
        if wait > 0:
            self._sleep(wait)
            self._bump("rate_limit_wait_s", wait)

    def _pace_write(self) -> None:
        """Space writes at least `write_interval_s` apart, across threads."""
        if self.write_interval_s <= 0:
            return
        with self._pace_lock:
            now = self._clock()
            wait = self._next_write_at - now
            if wait > 0:
                self._sleep(wait)
                self._bump("write_pacing_wait_s", wait)
                now += wait
            self._next_write_at = now + self.write_interval_s

    @contextmanager
    def _recovering(self, recover: Callable[[], tuple[dict, Any] | None]) -> Iterator[None]:
        """While inside, a write retried after a 5xx first asks `recover` whether it landed."""
        previous = getattr(self._local, "recover", None)
        self._local.recover = recover
        try:
            yield
        finally:
            self._local.recover = previous

    @contextmanager
    def _op(self, subject: str, action: str, not_found: str | None = None) -> Iterator[None]:
        """Turn PyGithub and network failures inside into a clear, redacted ForgeError."""
        try:
            yield
        except GithubException as exc:
            raise self.forge_error(exc, subject, action, not_found) from None
        except NETWORK_ERRORS as exc:
            raise ForgeError(
                self.redact(f"{subject}: {action} failed: cannot reach GitHub ({exc})")
            ) from None

    def forge_error(
        self, exc: GithubException, subject: str, action: str, not_found: str | None = None
    ) -> ForgeError:
        """A redacted ForgeError saying what `action` on `subject` ran into (404 -> `not_found`)."""
        message, details = _error_text(exc)
        status = exc.status
        if status == 404:
            text = not_found or f"{subject}: repository not found (or the token cannot see it)"
        elif status == 401:
            text = f"{subject}: {action} failed: GitHub rejected the token (401 {message})"
        elif status == 403:
            text = (
                f"{subject}: {action} forbidden (403 {message}); does the token have the "
                "permission it needs?"
            )
        elif status == 422:
            text = f"{subject}: {action} rejected by GitHub (422 {message})"
            if details:
                text += ": " + "; ".join(details)
        else:
            text = f"{subject}: {action} failed: HTTP {status} {message}".rstrip()
        return ForgeError(self.redact(text))

    def _repo(self, url: str) -> tuple[str, GhRepository]:
        name = repo_full_name(url)
        return name, self.client().get_repo(name)

    # repositories and branches -------------------------------------------------------------------

    def _branch_sha(self, repo: GhRepository, branch: str) -> str | None:
        try:
            return repo.get_branch(branch).commit.sha
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise

    def resolve(self, url: str, base: str | None, branch: str) -> ResolvedRepo:
        """The clone URL, base branch (default: the repository's default) and sha, branch sha."""
        name, repo = self._repo(url)
        with self._op(name, "resolve"):
            base_branch = base or repo.default_branch
            clone_url = repo.clone_url
            if not base_branch:
                raise ForgeError(f"{name}: repository has no default branch (empty repository?)")
            base_sha = self._branch_sha(repo, base_branch)
            if base_sha is None:
                raise ForgeError(f"{name}: base branch {base_branch!r} does not exist")
            branch_sha = self._branch_sha(repo, branch)
        return ResolvedRepo(
            url=url,
            clone_url=clone_url,
            base_branch=base_branch,
            base_sha=base_sha,
            branch_sha=branch_sha,
        )

    def _remote_sha(self, clone_url: str, branch: str) -> str | None:
        try:
            out = run_git(
                ["ls-remote", clone_url, f"refs/heads/{branch}"], env=self.git_env(), timeout=120
            )
        except (GitError, subprocess.TimeoutExpired):
            return None
        return out.split()[0] if out.strip() else None

    def push_branch(
        self, url: str, workspace: Path, branch: str, sha: str, expected: str | None
    ) -> None:
        """Push `sha` to campaign `branch` over HTTPS with a lease on `expected` (None: absent).

        Refuses branches outside `campaign/` and the default branch. A transient failure is
        retried; a push whose answer was lost but which landed counts as done.
        """
        name = repo_full_name(url)
        if not branch.startswith(BRANCH_PREFIX):
            raise ForgeError(f"{name}: refusing to push to {branch!r}: not a campaign branch")
        repo = self.client().get_repo(name)
        with self._op(name, f"push of {branch}"):
            default_branch = repo.default_branch
            clone_url = repo.clone_url
        if branch == default_branch:
            raise ForgeError(f"{name}: refusing to push to {branch!r}: the default branch")
        argv = [
            "push", "--quiet", f"--force-with-lease=refs/heads/{branch}:{expected or ''}",
            clone_url, f"{sha}:refs/heads/{branch}",
        ]  # fmt: skip
        attempt = 0
        while True:
            with self._write_slots:
                self._bump("git_pushes")
                try:
                    run_git(argv, workspace, env=self.git_env())
                    return
                except GitError as exc:
                    reason = exc.stderr
                except subprocess.TimeoutExpired:
                    reason = "timed out"
            if self._remote_sha(clone_url, branch) == sha:
                return  # it landed; only the answer was lost
            transient = reason == "timed out" or TRANSIENT_GIT.search(reason)
            if not transient or attempt >= self.max_retries:
                raise ForgeError(self.redact(f"{name}: push of {branch} failed: {reason}"))
            attempt += 1
            self._back_off("server", None, attempt, f"git push {name} {branch}", None)

    # pull requests -------------------------------------------------------------------------------

    @staticmethod
    def _state(pr: GhPullRequest) -> Literal["open", "merged", "closed"]:
        if pr.merged_at is not None:
            return "merged"
        return "open" if pr.state == "open" else "closed"

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
            state=self._state(pr),
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
        with self._op(name, f"looking up the pull request for {head}"):
            pulls = self._pulls_for(repo, name, head, "all")
            if not pulls:
                return None
            return self._model(max(pulls, key=lambda pr: pr.number))

    def create_pull_request(self, url: str, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request, label it and ask its reviewers; idempotent per head branch.

        When GitHub answers that a pull request for the head already exists (a retry of a
        create that did land, or a second create), that pull request is updated and returned.
        A repository without draft support gets a ready pull request (with a warning).
        """
        name, repo = self._repo(url)
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
        with self._op(
            name, f"updating pull request #{number}", f"{name}: pull request #{number} not found"
        ):
            return self._update(repo, name, repo.get_pull(number), draft)

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
                self.redact(" ".join([_error_text(exc)[0], *_error_text(exc)[1]])),
            )  # fmt: skip
            return False

    def _request_reviewers(
        self, name: str, pr: GhPullRequest, draft: PullRequestDraft, *, fresh: bool
    ) -> bool:
        """Ask the draft's reviewers who are not asked yet and have not reviewed; True if any."""
        users = list(draft.reviewers)
        teams = list(getattr(draft, "team_reviewers", None) or [])
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
            message, details = _error_text(exc)
            log.warning("%s #%d: reviewers not requested: %s", name, pr.number,
                        self.redact("; ".join([message, *details])))  # fmt: skip
            return False
        return True

    def merge_pull_request(self, url: str, number: int) -> PullRequest:
        """Merge an open pull request at its current head (`merge_method`); merged stays merged."""
        name, repo = self._repo(url)
        with self._op(
            name, f"merging pull request #{number}", f"{name}: pull request #{number} not found"
        ):
            pr = repo.get_pull(number)
            state = self._state(pr)
            if state == "merged":
                return self._model(pr)
            if state == "closed":
                raise ForgeError(f"{name}: pull request #{number} is closed, not open")
            try:
                pr.merge(merge_method=self.merge_method, sha=pr.head.sha)
            except GithubException as exc:
                fresh = repo.get_pull(number)
                if self._state(fresh) == "merged":  # a retried merge that had landed
                    return self._model(fresh)
                message, details = _error_text(exc)
                why = "; ".join([message, *details])
                if exc.status == 405:
                    raise ForgeError(
                        self.redact(f"{name}: pull request #{number} cannot be merged: {why}")
                    ) from None
                if exc.status == 409:
                    raise ForgeError(
                        self.redact(f"{name}: pull request #{number} head moved: {why}")
                    ) from None
                raise
            return self._model(repo.get_pull(number))

    def close_pull_request(self, url: str, number: int, comment: str | None = None) -> PullRequest:
        """Comment (when given), then close without merging; closing a closed PR does nothing."""
        name, repo = self._repo(url)
        with self._op(
            name, f"closing pull request #{number}", f"{name}: pull request #{number} not found"
        ):
            pr = repo.get_pull(number)
            state = self._state(pr)
            if state == "closed":
                return self._model(pr)
            if state == "merged":
                raise ForgeError(f"{name}: pull request #{number} is merged and cannot be closed")
            if comment:
                self._post_comment(pr, comment)
            pr.edit(state="closed")
            return self._model(pr)

    def reopen_pull_request(self, url: str, number: int) -> PullRequest:
        """Reopen a closed (not merged) pull request."""
        name, repo = self._repo(url)
        with self._op(
            name, f"reopening pull request #{number}", f"{name}: pull request #{number} not found"
        ):
            pr = repo.get_pull(number)
            state = self._state(pr)
            if state == "merged":
                raise ForgeError(f"{name}: pull request #{number} is merged and cannot be reopened")
            if state == "closed":
                pr.edit(state="open")
            return self._model(pr)

    def comment(self, url: str, number: int, body: str) -> str:
        """Add a conversation comment to a pull request; returns the comment's web URL."""
        name, repo = self._repo(url)
        with self._op(
            name, f"commenting on #{number}", f"{name}: pull request #{number} not found"
        ):
            return self._post_comment(repo.get_pull(number), body)

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
        name, repo = self._repo(url)
        with self._op(
            name, f"reading pull request #{number}", f"{name}: pull request #{number} not found"
        ):
            pr = repo.get_pull(number)
            state: Literal["open", "draft", "merged", "closed"] = self._state(pr)
            if state == "open" and pr.draft:
                state = "draft"
            sha = pr.head.sha
            checks, failing, pending = self._checks(repo, sha)
            review, reviews, notes = self._reviews(pr)
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

    @staticmethod
    def _checks(repo: GhRepository, sha: str) -> tuple[Any, list[str], list[str]]:
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

    @staticmethod
    def _reviews(pr: GhPullRequest) -> tuple[Any, dict[str, str], list[str]]:
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
            lines = _review_lines(pr, review_ids[login])
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
