"""How the GitLab forge talks to GitLab: one python-gitlab client per thread, one retry loop.

Every API request of python-gitlab goes through its HTTP backend; the forge gives each client a
backend (`_RetryingBackend`) whose every request runs `GitLabTransport._send`, the one retry
loop: 5xx answers and network errors are retried with jittered exponential back-off, a 429 waits
what its `Retry-After` (seconds) or `RateLimit-Reset` (a Unix time) says — and pauses every thread
of the process that uses the same host and token (`github_pacing.HostBudget`, whose pause and
concurrency cap serve GitLab as they serve GitHub; GitLab has no per-minute write limit to pace
to, so writes are not paced). A wait longer than `max_wait_s` fails at once, with a ForgeError
that says when to come back. Waits end when the worker is cancelled (`stoppable_sleep`).

A write retried after an ambiguous failure (a 5xx or a lost answer) may have landed: the caller
can say how to find it (`_recovering`), and what is found is returned as the answer instead of
writing again.

python-gitlab's own retry is switched off: `retry_transient_errors=False` (its default) leaves
5xx and network errors to the loop here, and its rate-limit handling (`obey_rate_limit`, on by
default for every call, which sleeps `Retry-After` with `time.sleep`, up to 10 times per
request, however long each wait) never sees a 429: the backend either retries it here or
raises a ForgeError, so no answer python-gitlab gets is ever a 429.

The token is sent as `Authorization: Bearer` (GitLab takes personal, project, group and OAuth
tokens that way), and to git as HTTP Basic `oauth2:TOKEN` through `GIT_CONFIG_*` variables scoped
to the web root; it never appears in a URL, a message or a log.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gitlab
import requests
from gitlab._backends import RequestsBackend, RequestsResponse
from gitlab.exceptions import GitlabError, RedirectError

from resources import cancel
from resources.forges.base import ForgeError
from resources.forges.github_pacing import HostBudget, WriteLimits, shared_budget
from resources.forges.github_transport import (
    NETWORK_ERRORS,
    TRANSIENT_GIT,
    WRITE_VERBS,
    RequestTally,
)
from resources.forges.gitlab_names import web_root
from resources.git import GitError, run_git
from resources.redact import redact, secret_values

log = logging.getLogger(__name__)

# What a write that may have landed is found as: the JSON its answer would have carried.
Found = Any


def stoppable_sleep(seconds: float) -> None:
    """The forge's default wait (back-off, rate-limit pause): it ends at once, with a
    ForgeError, when the calling worker is cancelled."""
    if cancel.sleep(seconds):
        raise ForgeError(f"GitLab: {cancel.CANCELLED_MESSAGE}")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def error_text(exc: GitlabError) -> str:
    """GitLab's message in one line: a string as it is, a field -> messages dict (validation
    errors) as `field: message, message; ...`."""
    body: Any = None
    raw = getattr(exc, "response_body", None)
    if raw:
        try:
            body = json.loads(raw)
        except (TypeError, ValueError):
            body = None
    message: Any = exc.error_message
    if isinstance(body, dict):
        message = body.get("message", body.get("error", message))
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    if isinstance(message, dict):
        parts = []
        for key, value in message.items():
            values = value if isinstance(value, list) else [value]
            parts.append(f"{key}: {', '.join(str(v) for v in values)}")
        return "; ".join(parts)
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    text = str(message or "").strip()
    if text.startswith("<"):  # a proxy's HTML error page: the status says it all
        return ""
    # GitLab's messages repeat the status ("404 Project Not Found"): said once, by the caller
    return re.sub(rf"^{exc.response_code}\s+", "", text) if exc.response_code else text


def _answer(status: int, data: Any, url: str) -> RequestsResponse:
    """A backend answer carrying `data` as JSON: what a recovered write returns instead of
    the answer that was lost."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(data).encode()
    response.headers["Content-Type"] = "application/json"
    response.url = url
    response.reason = "OK"
    return RequestsResponse(response)


class _RetryingBackend(RequestsBackend):
    """python-gitlab's requests backend with every request sent through the transport's loop."""

    def __init__(self, transport: GitLabTransport, **kwargs: Any):
        super().__init__(**kwargs)
        self._transport = transport

    def http_request(self, method: str, url: str, **kwargs: Any) -> RequestsResponse:  # type: ignore[override]
        """One API request, retried by the transport."""
        send = functools.partial(super().http_request, method, url)
        return self._transport._send(send, method, url, **kwargs)


class GitLabTransport:
    """Authenticated, retried access to one GitLab (gitlab.com or self-managed).

    `base_url` is the web root (`https://gitlab.com`, `https://gitlab.example.com`); the API is
    `<base_url>/api/v4`. `max_retries`, `backoff_s` and `max_wait_s` shape the retries;
    `max_concurrent_requests` caps requests in flight per host and token (shared by every forge
    of the process), `write_concurrency` this forge's simultaneous writes and pushes; `sleep` and
    `clock` are injectable so tests do not wait. `stats` counts api_calls, writes, retries,
    rate_limited, server_errors, rate_limit_wait_s, backoff_wait_s, git_pushes and
    recovered_writes.
    """

    def __init__(
        self,
        token: str,
        base_url: str = "https://gitlab.com",
        *,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        max_concurrent_requests: int = 20,
        write_concurrency: int = 4,
        per_page: int = 100,
        timeout_s: int = 30,
        sleep: Callable[[float], None] = stoppable_sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not token:
            raise ForgeError("GitLab forge: no token given")
        self._token = token
        self.web_url = web_root(base_url)
        self.api_url = f"{self.web_url}/api/v4"
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.per_page = per_page
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock
        limits = WriteLimits(max_concurrent_requests=max_concurrent_requests)
        self.budget: HostBudget = shared_budget(self.api_url, token, limits, clock)
        basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
        self._auth_header = f"Authorization: Basic {basic}"
        self._secrets = sorted(
            {token, basic, base64.b64encode(token.encode()).decode()}, key=len, reverse=True
        )
        self._write_slots = threading.BoundedSemaphore(write_concurrency)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[gitlab.Gitlab] = []
        self.stats: dict[str, float] = {
            "api_calls": 0,
            "writes": 0,
            "retries": 0,
            "rate_limited": 0,
            "server_errors": 0,
            "rate_limit_wait_s": 0.0,
            "backoff_wait_s": 0.0,
            "git_pushes": 0,
            "recovered_writes": 0,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.web_url!r})"

    # credentials ---------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` with the token (plain or in its Basic form, and any secret in the environment)
        masked."""
        return redact(text, self._secrets + secret_values())

    def git_env(self) -> dict[str, str]:
        """Environment for git processes that talk to this GitLab over HTTPS with the token.

        The token goes in an `Authorization: Basic` header (user `oauth2`, which GitLab takes for
        every kind of token) set through `GIT_CONFIG_*` variables scoped to the web root
        (`http.<web root>/.extraHeader`: no other host gets it, and several forges' variables
        can be merged); redirects are not followed, so the header is not carried elsewhere.
        """
        return {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": f"http.{self.web_url}/.extraHeader",
            "GIT_CONFIG_VALUE_0": self._auth_header,
            "GIT_CONFIG_KEY_1": "http.followRedirects",
            "GIT_CONFIG_VALUE_1": "false",
        }

    # clients -------------------------------------------------------------------------------------

    def client(self) -> gitlab.Gitlab:
        """This thread's python-gitlab client (a requests session is not shared across threads),
        whose every request runs through the retry loop."""
        gl = getattr(self._local, "gl", None)
        if gl is None:
            gl = gitlab.Gitlab(
                self.web_url,
                oauth_token=self._token,
                per_page=self.per_page,
                timeout=self.timeout_s,
                retry_transient_errors=False,  # retries are ours: see the module docstring
                user_agent="campaign-orchestrator",
                backend=functools.partial(_RetryingBackend, self),
            )
            self._local.gl = gl
            with self._lock:
                self._clients.append(gl)
        return gl

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """While inside, this thread's API requests are counted in the tally yielded."""
        previous = getattr(self._local, "tally", None)
        tally = self._local.tally = RequestTally()
        try:
            yield tally
        finally:
            self._local.tally = previous

    def close(self) -> None:
        """Close every thread's HTTP session."""
        with self._lock:
            clients, self._clients = self._clients, []
        for gl in clients:
            gl.session.close()

    # the retry loop ------------------------------------------------------------------------------

    def _bump(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self.stats[key] = round(self.stats[key] + amount, 6)

    def _count(self, write: bool) -> None:
        self._bump("api_calls")
        if write:
            self._bump("writes")
        tally: RequestTally | None = getattr(self._local, "tally", None)
        if tally is not None:
            tally.requests += 1
            tally.writes += write

    def _send(
        self, send: Callable[..., RequestsResponse], method: str, url: str, **kwargs: Any
    ) -> RequestsResponse:
        """Send one request, retrying 5xx, network errors and 429s; a write that may have
        landed is looked for (`_recovering`) before it is sent again."""
        write = method.upper() in WRITE_VERBS
        what = f"{method.upper()} {urlparse(url).path}"
        attempt = 0
        while True:
            self._await_pause()
            result: RequestsResponse | None = None
            failure: Exception | None = None
            with self._write_slots if write else nullcontext(), self.budget.requests:
                self._count(write)
                try:
                    result = send(**kwargs)
                except NETWORK_ERRORS as exc:
                    failure = exc
            if result is not None and result.status_code != 429 and result.status_code < 500:
                return result
            kind, wait, reason = self._plan(result, failure)
            if attempt >= self.max_retries:
                if kind == "rate_limit":
                    raise ForgeError(
                        f"GitLab {what}: still rate limited (429) after {attempt} retries"
                    )
                if failure is not None:
                    raise failure
                assert result is not None
                return result  # python-gitlab turns the 5xx into an error
            if write and kind != "rate_limit":  # a 5xx or lost answer: it may have landed
                found = self._recovered()
                if found is not None:
                    self._bump("server_errors")
                    self._bump("recovered_writes")
                    return _answer(200, found, url)
            attempt += 1
            self._back_off(kind, wait, attempt, what, reason)

    def _plan(
        self, result: RequestsResponse | None, failure: Exception | None
    ) -> tuple[str, float | None, str]:
        """`(kind, wait, reason)` of a failed attempt: a network error, a 5xx or a 429 (whose
        wait is `Retry-After`, else `RateLimit-Reset` minus now; one further than `max_wait_s`
        fails at once)."""
        if result is None:
            return "network", None, type(failure).__name__
        if result.status_code >= 500:
            return "server", _float(result.headers.get("Retry-After")), f"HTTP {result.status_code}"
        wait = _float(result.headers.get("Retry-After"))
        if wait is None:
            reset = _float(result.headers.get("RateLimit-Reset"))
            if reset is not None:
                # whole seconds: a second more, so that the retry lands after the reset
                wait = max(0.0, reset - time.time()) + 1.0
        if wait is not None and wait > self.max_wait_s:
            when = ""
            reset = _float(result.headers.get("RateLimit-Reset"))
            if reset is not None:
                when = " until " + datetime.fromtimestamp(reset, UTC).strftime("%H:%M:%SZ")
            raise ForgeError(
                f"GitLab API rate limit exhausted{when} (retry in {wait:.0f} s); not waiting "
                "that long — try again later"
            )
        return "rate_limit", wait, "HTTP 429"

    def _back_off(
        self, kind: str, wait: float | None, attempt: int, what: str, reason: str
    ) -> None:
        """Wait before retry `attempt`: a rate limit pauses every thread, other failures this
        one."""
        self._bump("retries")
        if kind == "rate_limit":
            self._bump("rate_limited")
            if wait is None:
                wait = 60.0 * 2 ** (attempt - 1)
            wait = min(wait, self.max_wait_s)
            self.budget.pause(self._clock() + wait)
        else:
            self._bump("server_errors")
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            wait = min(wait, self.max_wait_s)
        log.warning(
            "GitLab %s: %s (%s); retry %d/%d in %.1f s",
            what, kind, self.redact(reason)[:200], attempt, self.max_retries, wait,
        )  # fmt: skip
        if kind != "rate_limit":  # a rate-limit pause is slept out before the next request
            self._sleep(wait)
            self._bump("backoff_wait_s", wait)

    def _await_pause(self) -> None:
        """Sleep out a rate-limit pause that any thread (of any forge on the token) started."""
        wait = self.budget.pause_until - self._clock()
        if wait > 0:
            self._sleep(wait)
            self._bump("rate_limit_wait_s", wait)

    def _recovered(self) -> Found | None:
        """What this thread's recovery hook finds of a write that may have landed (or None)."""
        recover = getattr(self._local, "recover", None)
        if recover is None:
            return None
        self._local.recover = None  # the lookup's own requests are not writes to recover
        try:
            return recover()
        except (GitlabError, ForgeError, *NETWORK_ERRORS):
            return None  # cannot tell: send the write again
        finally:
            self._local.recover = recover

    @contextmanager
    def _recovering(self, recover: Callable[[], Found | None]) -> Iterator[None]:
        """While inside, a write retried after a 5xx or lost answer first asks `recover`
        whether it landed (its JSON, or None)."""
        previous = getattr(self._local, "recover", None)
        self._local.recover = recover
        try:
            yield
        finally:
            self._local.recover = previous

    def _git_write(
        self, argv: list[str], workspace: Path, *, landed: Callable[[], bool], what: str
    ) -> None:
        """Run a git command that writes to GitLab (a push), retrying transient failures; when
        it failed but `landed()` (only the answer was lost), it is done."""
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
            if landed():
                return
            transient = reason == "timed out" or TRANSIENT_GIT.search(reason)
            if not transient or attempt >= self.max_retries:
                raise ForgeError(self.redact(f"{what} failed: {reason}"))
            attempt += 1
            self._back_off("server", None, attempt, what, reason)

    # errors --------------------------------------------------------------------------------------

    @contextmanager
    def _op(self, subject: str, action: str, not_found: str | None = None) -> Iterator[None]:
        """Turn python-gitlab and network failures inside into a clear, redacted ForgeError."""
        try:
            yield
        except GitlabError as exc:
            raise self.forge_error(exc, subject, action, not_found) from None
        except RedirectError as exc:
            raise ForgeError(self.redact(f"{subject}: {action} failed: {exc}")) from None
        except NETWORK_ERRORS as exc:
            raise ForgeError(
                self.redact(
                    f"{subject}: {action} failed: cannot reach GitLab at {self.web_url} "
                    f"({type(exc).__name__})"
                )
            ) from None

    def forge_error(
        self, exc: GitlabError, subject: str, action: str, not_found: str | None = None
    ) -> ForgeError:
        """A redacted ForgeError saying what `action` on `subject` ran into (404 -> `not_found`)."""
        message = error_text(exc)
        status = exc.response_code
        if status == 404:
            text = not_found or (
                f"{subject}: project not found on {self.web_url} (or the token cannot see it)"
            )
        elif status == 401:
            text = f"{subject}: {action} failed: GitLab rejected the token (401 {message})"
        elif status == 403:
            text = (
                f"{subject}: {action} forbidden (403 {message}); does the token have the scope "
                "(api) and role it needs?"
            )
        elif status in (400, 409, 422):
            text = f"{subject}: {action} rejected by GitLab ({status} {message})"
        elif status is None:
            text = f"{subject}: {action} failed: {message}"
        else:
            text = f"{subject}: {action} failed: HTTP {status} {message}".rstrip()
        return ForgeError(self.redact(text))
