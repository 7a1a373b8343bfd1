"""How the Bitbucket forge talks to Bitbucket: one `requests.Session` per thread, one retry loop,
pagination, credentials for git, and Bitbucket's errors turned into redacted `ForgeError`s.

Both flavours go through here: Bitbucket Cloud (REST 2.0 at `https://api.bitbucket.org/2.0`) and
Bitbucket Data Center (REST 1.0 at `<web root>/rest/api/1.0`). A `requests.Session` is not safe to
share between threads, so each thread gets its own. Every request runs through `request`: network
errors, 5xx and 429 are retried with back-off; a 429's `Retry-After` is honoured and pauses every
thread of this forge (Bitbucket limits per account, not per connection); waits end when the
worker is cancelled (`github_transport.stoppable_sleep`). A write retried after a 5xx or a lost
answer may already have landed: the caller passes `recover`, which looks for what the write did,
and what it finds is returned instead of writing again.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from resources import cancel
from resources.forges.base import ForgeError
from resources.forges.github_transport import RequestTally
from resources.git import GitError, run_git
from resources.redact import redact, secret_values

log = logging.getLogger(__name__)

Flavor = Literal["cloud", "dc"]
WRITE_VERBS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# git failures worth another try: the server or the network, not the request
TRANSIENT_GIT = re.compile(
    r"returned error: (5\d\d|429)|could not resolve host|connection (reset|refused|timed out)"
    r"|operation timed out|early eof|remote end hung up|rpc failed|ssl_",
    re.I,
)
CLOUD_API = "https://api.bitbucket.org/2.0"


def stoppable_sleep(seconds: float) -> None:
    """A wait that ends at once, with a ForgeError, when the calling worker is cancelled."""
    if cancel.sleep(seconds):
        raise ForgeError(f"Bitbucket: {cancel.CANCELLED_MESSAGE}")


class BitbucketHttpError(ForgeError):
    """Bitbucket answered an error: the message names repository, action and reason (redacted);
    `status` is the HTTP status, for callers that handle one (404, 409)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def error_message(response: requests.Response) -> str:
    """Bitbucket's own words for an error answer: Cloud's `error.message`/`detail`, Data Center's
    `errors[].message`, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip()
    parts: list[str] = []
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            parts += [str(err[k]) for k in ("message", "detail") if err.get(k)]
            fields = err.get("fields")
            if isinstance(fields, dict):
                parts += [f"{k}: {v}" for k, v in fields.items()]
        for item in data.get("errors") or []:
            if isinstance(item, dict) and item.get("message"):
                parts.append(str(item["message"]))
    return "; ".join(parts) or str(data)[:200]


def web_root_of(flavor: Flavor, base_url: str) -> str:
    """The web root (where repositories and clone URLs live) of a Bitbucket API base URL: Cloud's
    `https://api.bitbucket.org/2.0` is `https://bitbucket.org`; Data Center's is its base URL."""
    base = base_url.rstrip("/")
    if flavor == "dc":
        return base
    parts = urlsplit(base)
    host = parts.netloc.removeprefix("api.")
    return f"{parts.scheme}://{host}"


class BitbucketTransport:
    """Authenticated, retried access to one Bitbucket (Cloud or Data Center) API.

    Cloud: `base_url` is the REST 2.0 root; `token` is an access token (sent as Bearer) or, with
    `username`, an app password (Basic). Data Center: `base_url` is the web root, the REST root is
    `<base_url>/rest/api/1.0`, and `token` is an HTTP access token (Bearer). `max_retries`,
    `backoff_s` and `max_wait_s` shape the retries; `sleep` and `clock` are injectable so tests
    do not wait. `stats` counts api_calls, writes, retries, rate_limited, server_errors,
    recovered_writes, git_pushes and the waits (rate_limit_wait_s, backoff_wait_s).
    """

    def __init__(
        self,
        flavor: Flavor,
        token: str,
        base_url: str,
        username: str | None = None,
        *,
        max_retries: int = 6,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        page_size: int = 50,
        timeout_s: int = 30,
        sleep: Callable[[float], None] = stoppable_sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if flavor not in ("cloud", "dc"):
            raise ForgeError(f"Bitbucket forge: flavor must be 'cloud' or 'dc', not {flavor!r}")
        if not token:
            raise ForgeError(f"Bitbucket {flavor} forge: no token given")
        self.flavor: Flavor = flavor
        self.name = "Bitbucket Cloud" if flavor == "cloud" else "Bitbucket Data Center"
        base = (base_url or (CLOUD_API if flavor == "cloud" else "")).rstrip("/")
        if not base:
            raise ForgeError("Bitbucket Data Center forge: base_url (the web root) is required")
        if flavor == "dc":  # the web root, also when given as the REST root
            base = re.sub(r"/rest/api/(1\.0|latest)$", "", base)
        self.base_url = base
        self.web_root = web_root_of(flavor, base)
        self.api_root = base if flavor == "cloud" else f"{base}/rest/api/1.0"
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.page_size = page_size
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock
        if flavor == "cloud" and username:
            basic = base64.b64encode(f"{username}:{token}".encode()).decode()
            self._api_auth = self._git_auth = f"Basic {basic}"
        elif flavor == "cloud":
            # git over HTTPS takes an access token as the password of user x-token-auth
            basic = base64.b64encode(f"x-token-auth:{token}".encode()).decode()
            self._api_auth, self._git_auth = f"Bearer {token}", f"Basic {basic}"
        else:
            basic = ""
            self._api_auth = self._git_auth = f"Bearer {token}"
        self._secrets = sorted(
            {s for s in (token, basic, base64.b64encode(token.encode()).decode()) if s},
            key=len,
            reverse=True,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._pause_until = 0.0
        self.stats: dict[str, float] = {
            "api_calls": 0,
            "writes": 0,
            "retries": 0,
            "rate_limited": 0,
            "server_errors": 0,
            "recovered_writes": 0,
            "git_pushes": 0,
            "rate_limit_wait_s": 0.0,
            "backoff_wait_s": 0.0,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flavor={self.flavor!r}, base_url={self.base_url!r})"

    # credentials ---------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` with the token (plain or inside a Basic header) and environment secrets masked."""
        return redact(text, self._secrets + secret_values())

    def git_env(self) -> dict[str, str]:
        """Environment for git processes that talk to this Bitbucket over HTTPS.

        The credentials go in an `Authorization` header scoped to the web root
        (`http.<web root>/.extraHeader`, command-line scope through `GIT_CONFIG_*`: no file), and
        redirects are not followed, so the header reaches no other host."""
        return {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": f"http.{self.web_root}/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: {self._git_auth}",
            "GIT_CONFIG_KEY_1": "http.followRedirects",
            "GIT_CONFIG_VALUE_1": "false",
        }

    # sessions and counting -----------------------------------------------------------------------

    def session(self) -> requests.Session:
        """This thread's HTTP session (a session is not thread-safe)."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers.update(
                {
                    "Authorization": self._api_auth,
                    "Accept": "application/json",
                    "User-Agent": "campaign-orchestrator",
                }
            )
            if self.flavor == "dc":
                # a POST without a JSON body (decline, merge, reopen) would otherwise be refused
                # by Data Center's XSRF check
                s.headers["X-Atlassian-Token"] = "no-check"
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        """Close every thread's HTTP connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """While inside, this thread's API requests are counted in the tally yielded."""
        previous = getattr(self._local, "tally", None)
        tally = self._local.tally = RequestTally()
        try:
            yield tally
        finally:
            self._local.tally = previous

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

    # requests ------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL: `path` under the REST root (or as it is, when absolute already)."""
        return path if "://" in path else f"{self.api_root}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        subject: str,
        action: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        not_found: str | None = None,
        recover: Callable[[], Any] | None = None,
    ) -> Any:
        """One API request with retries; the JSON answer (None when it has no body).

        A failure raises a `BitbucketHttpError` naming `subject` and `action` (404:
        `not_found`, else "repository not found"). A write retried after a 5xx or a lost answer
        first calls `recover`; what it returns (not None) is the write's answer."""
        method = method.upper()
        write = method in WRITE_VERBS
        url = self.url(path)
        attempt = 0
        while True:
            self._await_pause()
            self._count(write)
            try:
                response = self.session().request(
                    method, url, params=params, json=json, timeout=self.timeout_s
                )
            except NETWORK_ERRORS as exc:
                failure: requests.Response | Exception = exc
                kind, wait = "network", None
            else:
                if response.status_code < 400:
                    if response.status_code == 204 or not response.content:
                        return None
                    try:
                        return response.json()
                    except ValueError:
                        return response.text
                failure = response
                retry_after = _float(response.headers.get("Retry-After"))
                if response.status_code == 429:
                    kind, wait = "rate_limit", retry_after
                    if retry_after is not None and retry_after > self.max_wait_s:
                        raise BitbucketHttpError(
                            f"{subject}: {action}: {self.name} rate limit; it asks to wait "
                            f"{retry_after:.0f} s (more than {self.max_wait_s:.0f}), not waiting "
                            "that long — try again later",
                            429,
                        )
                elif response.status_code >= 500:
                    kind, wait = "server", retry_after
                else:
                    raise self._error(response, subject, action, not_found)
            if attempt >= self.max_retries:
                if isinstance(failure, requests.Response):
                    raise self._error(failure, subject, action, not_found)
                raise ForgeError(
                    self.redact(f"{subject}: {action} failed: cannot reach {self.name} ({failure})")
                )
            if write and kind != "rate_limit" and recover is not None:
                found = self._recovered(recover)
                if found is not None:
                    self._bump("recovered_writes")
                    return found
            attempt += 1
            self._back_off(kind, wait, attempt, f"{method} {urlsplit(url).path}", failure)

    def _recovered(self, recover: Callable[[], Any]) -> Any:
        try:
            return recover()
        except (ForgeError, *NETWORK_ERRORS):
            return None  # cannot tell: write again

    def _back_off(
        self, kind: str, wait: float | None, attempt: int, what: str, failure: object
    ) -> None:
        self._bump("retries")
        if kind == "rate_limit":
            self._bump("rate_limited")
            if wait is None:
                wait = 10.0 * 2 ** (attempt - 1)
            wait = min(wait, self.max_wait_s)
            with self._lock:  # every thread of this forge waits it out
                self._pause_until = max(self._pause_until, self._clock() + wait)
        else:
            self._bump("server_errors")
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            wait = min(wait, self.max_wait_s)
        if isinstance(failure, requests.Response):
            reason = f"HTTP {failure.status_code}"
        else:
            reason = self.redact(str(failure))[:200]
        log.warning(
            "%s %s: %s (%s); retry %d/%d in %.1f s",
            self.name, what, kind, reason, attempt, self.max_retries, wait,
        )  # fmt: skip
        if kind != "rate_limit":
            self._sleep(wait)
            self._bump("backoff_wait_s", wait)

    def pause(self, seconds: float) -> None:
        """Wait `seconds` on the forge's (injectable, cancellable) sleep."""
        self._sleep(seconds)
        self._bump("backoff_wait_s", seconds)

    def _await_pause(self) -> None:
        with self._lock:
            wait = self._pause_until - self._clock()
        if wait > 0:
            self._sleep(wait)
            self._bump("rate_limit_wait_s", wait)

    def _error(
        self, response: requests.Response, subject: str, action: str, not_found: str | None
    ) -> BitbucketHttpError:
        status = response.status_code
        message = error_message(response)
        if status == 404 and not_found:
            text = not_found
        elif status == 404 and action == "resolve":
            text = f"{subject}: repository not found (or the token cannot see it)"
        elif status == 404:
            text = f"{subject}: {action} failed: not found (404 {message})"
        elif status == 401:
            text = f"{subject}: {action} failed: {self.name} rejected the credentials (401)"
        elif status == 403:
            text = (
                f"{subject}: {action} forbidden (403 {message}); do the credentials have the "
                "permission it needs?"
            )
        elif status in (400, 409, 422):
            text = f"{subject}: {action} rejected by {self.name} ({status} {message})"
        else:
            text = f"{subject}: {action} failed: HTTP {status} {message}".rstrip()
        return BitbucketHttpError(self.redact(text), status)

    def paginate(
        self,
        path: str,
        *,
        subject: str,
        action: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        not_found: str | None = None,
    ) -> Iterator[dict]:
        """Every item of a paged listing: Cloud follows `next` links, Data Center asks for
        `start=nextPageStart` until `isLastPage`."""
        query = list(params.items()) if isinstance(params, dict) else list(params or [])
        if self.flavor == "cloud":
            url: str | None = path
            page_params: list[tuple[str, Any]] | None = [*query, ("pagelen", self.page_size)]
            while url:
                page = self.request(
                    "GET", url, subject=subject, action=action, params=page_params,
                    not_found=not_found,
                )  # fmt: skip
                yield from page.get("values") or []
                url, page_params = page.get("next"), None  # `next` carries the query
            return
        start = 0
        while True:
            page = self.request(
                "GET", path, subject=subject, action=action, not_found=not_found,
                params=[*query, ("limit", self.page_size), ("start", start)],
            )  # fmt: skip
            yield from page.get("values") or []
            if page.get("isLastPage", True) or page.get("nextPageStart") is None:
                return
            start = int(page["nextPageStart"])

    # git -----------------------------------------------------------------------------------------

    def git_write(
        self, argv: list[str], workspace: Path, *, landed: Callable[[], bool], what: str
    ) -> None:
        """Run a git command that writes to Bitbucket (a push), retrying transient failures; a
        failure after which `landed()` holds (only the answer was lost) counts as done."""
        attempt = 0
        while True:
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

    def remote_sha(self, clone_url: str, branch: str) -> str | None:
        """The sha `branch` has on the remote (None: absent or unreadable)."""
        try:
            out = run_git(
                ["ls-remote", clone_url, f"refs/heads/{branch}"], env=self.git_env(), timeout=120
            )
        except (GitError, subprocess.TimeoutExpired):
            return None
        return out.split()[0] if out.strip() else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
