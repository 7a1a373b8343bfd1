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

What the three transports share (counters, redaction, `git_env()`, back-off, recovery, pushes,
`_op`) is `transport.ForgeTransport`'s; GitLab's answers, backend and error texts are here.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import gitlab
import requests
from gitlab._backends import RequestsBackend, RequestsResponse
from gitlab.exceptions import GitlabError

from resources.forges.base import ForgeError
from resources.forges.github_pacing import HostBudget, WriteLimits, shared_budget
from resources.forges.gitlab_names import web_root
from resources.forges.transport import (
    NETWORK_ERRORS,
    WRITE_VERBS,
    ForgeTransport,
    basic,
    number,
    secret_forms,
    stoppable_sleep_for,
)

log = logging.getLogger(__name__)

# What a write that may have landed is found as: the JSON its answer would have carried.
Found = Any

stoppable_sleep = stoppable_sleep_for("GitLab")


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


class GitLabTransport(ForgeTransport):
    """Authenticated, retried access to one GitLab (gitlab.com or self-managed).

    `base_url` is the web root (`https://gitlab.com`, `https://gitlab.example.com`); the API is
    `<base_url>/api/v4`. `max_retries`, `backoff_s` and `max_wait_s` shape the retries;
    `max_concurrent_requests` caps requests in flight per host and token (shared by every forge
    of the process), `write_concurrency` this forge's simultaneous writes and pushes; `sleep` and
    `clock` are injectable so tests do not wait. `stats` counts api_calls, writes, retries,
    rate_limited, server_errors, rate_limit_wait_s, backoff_wait_s, git_pushes and
    recovered_writes.
    """

    name = "GitLab"
    _log = log
    _recover_errors = (GitlabError, ForgeError, *NETWORK_ERRORS)
    # RedirectError is a GitlabError: its forge_error says "<action> failed: <why>"
    _api_errors = (GitlabError,)

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
        credentials = basic("oauth2", token)
        super().__init__(
            secrets=secret_forms(token, credentials),
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_wait_s=max_wait_s,
            sleep=sleep,
            clock=clock,
        )
        self._token = token
        self.web_url = web_root(base_url)
        self.api_url = f"{self.web_url}/api/v4"
        self.per_page = per_page
        self.timeout_s = timeout_s
        limits = WriteLimits(max_concurrent_requests=max_concurrent_requests)
        self.budget: HostBudget = shared_budget(self.api_url, token, limits, clock)
        self._request_slots = self.budget.requests
        self._write_slots = threading.BoundedSemaphore(write_concurrency)
        self._auth_header = f"Authorization: Basic {credentials}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.web_url!r})"

    # credentials ---------------------------------------------------------------------------------

    def _git_root(self) -> str:
        return self.web_url

    def _git_header(self) -> str:
        """Basic `oauth2:TOKEN`: GitLab takes every kind of token with user `oauth2`."""
        return self._auth_header

    # clients -------------------------------------------------------------------------------------

    def client(self) -> gitlab.Gitlab:
        """This thread's python-gitlab client (a requests session is not shared across threads),
        whose every request runs through the retry loop."""
        return self._thread_client(
            lambda: gitlab.Gitlab(
                self.web_url,
                oauth_token=self._token,
                per_page=self.per_page,
                timeout=self.timeout_s,
                retry_transient_errors=False,  # retries are ours: see the module docstring
                user_agent="campaign-orchestrator",
                backend=functools.partial(_RetryingBackend, self),
            )
        )

    def _close_client(self, client: gitlab.Gitlab) -> None:
        client.session.close()

    # the retry loop ------------------------------------------------------------------------------

    def _send(
        self, send: Callable[..., RequestsResponse], method: str, url: str, **kwargs: Any
    ) -> RequestsResponse:
        """Send one request, retrying 5xx, network errors and 429s; a write that may have
        landed is looked for (`_recovering`) before it is sent again."""
        write = method.upper() in WRITE_VERBS
        what = f"{method.upper()} {urlparse(url).path}"
        attempt = 0
        while True:
            result: RequestsResponse | None = None
            failure: Exception | None = None
            with self._attempt(write):
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
            found = self._retry_or_found(write, kind, wait, attempt, what, reason)
            if found is not None:
                return _answer(200, found, url)
            attempt += 1

    def _plan(
        self, result: RequestsResponse | None, failure: Exception | None
    ) -> tuple[str, float | None, str]:
        """`(kind, wait, reason)` of a failed attempt: a network error, a 5xx or a 429 (whose
        wait is `Retry-After`, else `RateLimit-Reset` minus now; one further than `max_wait_s`
        fails at once)."""
        if result is None:
            return "network", None, type(failure).__name__
        if result.status_code >= 500:
            return "server", number(result.headers.get("Retry-After")), f"HTTP {result.status_code}"
        wait = number(result.headers.get("Retry-After"))
        if wait is None:
            reset = number(result.headers.get("RateLimit-Reset"))
            if reset is not None:
                # whole seconds: a second more, so that the retry lands after the reset
                wait = max(0.0, reset - time.time()) + 1.0
        if wait is not None and wait > self.max_wait_s:
            when = ""
            reset = number(result.headers.get("RateLimit-Reset"))
            if reset is not None:
                when = " until " + datetime.fromtimestamp(reset, UTC).strftime("%H:%M:%SZ")
            raise ForgeError(
                f"GitLab API rate limit exhausted{when} (retry in {wait:.0f} s); not waiting "
                "that long — try again later"
            )
        return "rate_limit", wait, "HTTP 429"

    # errors --------------------------------------------------------------------------------------

    def _unreachable(self, subject: str, action: str, exc: Exception) -> str:
        where = f"GitLab at {self.web_url}"
        return f"{subject}: {action} failed: cannot reach {where} ({type(exc).__name__})"

    def forge_error(  # type: ignore[override]
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
