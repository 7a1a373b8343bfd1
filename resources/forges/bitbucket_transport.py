"""How the Bitbucket forge talks to Bitbucket: one `requests.Session` per thread, one retry loop,
pagination, credentials for git, and Bitbucket's errors turned into redacted `ForgeError`s.

Both flavours go through here: Bitbucket Cloud (REST 2.0 at `https://api.bitbucket.org/2.0`) and
Bitbucket Data Center (REST 1.0 at `<web root>/rest/api/1.0`). A `requests.Session` is not safe to
share between threads, so each thread gets its own. Every request runs through `request`: network
errors, 5xx and 429 are retried with back-off; a 429's `Retry-After` is honoured and pauses every
thread of this forge (Bitbucket limits per account, not per connection); waits end when the
worker is cancelled (`stoppable_sleep`). A write retried after a 5xx or a lost answer may
already have landed: the caller passes `recover`, which looks for what the write did, and what it
finds is returned instead of writing again. What the three transports share (counters,
redaction, `git_env()`, back-off, recovery, pushes) is `transport.ForgeTransport`'s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from resources.forges.base import ForgeError
from resources.forges.github_pacing import HostBudget, WriteLimits
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

Flavor = Literal["cloud", "dc"]
CLOUD_API = "https://api.bitbucket.org/2.0"


stoppable_sleep = stoppable_sleep_for("Bitbucket")


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


class BitbucketTransport(ForgeTransport):
    """Authenticated, retried access to one Bitbucket (Cloud or Data Center) API.

    Cloud: `base_url` is the REST 2.0 root; `token` is an access token (sent as Bearer) or, with
    `username`, an app password (Basic). Data Center: `base_url` is the web root, the REST root is
    `<base_url>/rest/api/1.0`, and `token` is an HTTP access token (Bearer). `max_retries`,
    `backoff_s` and `max_wait_s` shape the retries; `sleep` and `clock` are injectable so tests
    do not wait. `stats` counts api_calls, writes, retries, rate_limited, server_errors,
    recovered_writes, git_pushes and the waits (rate_limit_wait_s, backoff_wait_s).
    """

    rate_limit_backoff_s = 10.0
    _log = log

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
        base = (base_url or (CLOUD_API if flavor == "cloud" else "")).rstrip("/")
        if not base:
            raise ForgeError("Bitbucket Data Center forge: base_url (the web root) is required")
        if flavor == "cloud" and username:
            credentials = basic(username, token)
            self._api_auth = self._git_auth = f"Basic {credentials}"
        elif flavor == "cloud":
            # git over HTTPS takes an access token as the password of user x-token-auth
            credentials = basic("x-token-auth", token)
            self._api_auth, self._git_auth = f"Bearer {token}", f"Basic {credentials}"
        else:
            credentials = ""
            self._api_auth = self._git_auth = f"Bearer {token}"
        super().__init__(
            secrets=secret_forms(token, credentials),
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_wait_s=max_wait_s,
            sleep=sleep,
            clock=clock,
        )
        self.flavor: Flavor = flavor
        self.name = "Bitbucket Cloud" if flavor == "cloud" else "Bitbucket Data Center"
        if flavor == "dc":  # the web root, also when given as the REST root
            base = re.sub(r"/rest/api/(1\.0|latest)$", "", base)
        self.base_url = base
        self.web_root = web_root_of(flavor, base)
        self.api_root = base if flavor == "cloud" else f"{base}/rest/api/1.0"
        self.page_size = page_size
        self.timeout_s = timeout_s
        # Bitbucket limits per account, not per connection: a 429 pauses every thread of this
        # forge (no write pacing, no concurrency cap: only the pause of a budget of its own)
        self.budget = HostBudget(WriteLimits())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(flavor={self.flavor!r}, base_url={self.base_url!r})"

    # credentials ---------------------------------------------------------------------------------

    def _git_root(self) -> str:
        return self.web_root

    def _git_header(self) -> str:
        """Cloud: Basic (`x-token-auth:TOKEN`, or the user's app password); Data Center: Bearer."""
        return f"Authorization: {self._git_auth}"

    # sessions ------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """This thread's HTTP session (a session is not thread-safe)."""
        return self._thread_client(self._new_session)

    def _new_session(self) -> requests.Session:
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
        return s

    @property
    def _sessions(self) -> list[requests.Session]:
        """The sessions open now, one per thread that made a request."""
        return self._clients

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
            response: requests.Response | None = None
            failure: requests.Response | Exception
            with self._attempt(write):
                try:
                    response = self.session().request(
                        method, url, params=params, json=json, timeout=self.timeout_s
                    )
                except NETWORK_ERRORS as exc:
                    failure = exc
                    kind, wait = "network", None
            if response is not None:
                if response.status_code < 400:
                    if response.status_code == 204 or not response.content:
                        return None
                    try:
                        return response.json()
                    except ValueError:
                        return response.text
                failure = response
                retry_after = number(response.headers.get("Retry-After"))
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
                raise ForgeError(self.redact(self._unreachable(subject, action, failure)))
            reason = (
                f"HTTP {failure.status_code}"
                if isinstance(failure, requests.Response)
                else str(failure)
            )
            what = f"{method} {urlsplit(url).path}"
            found = self._retry_or_found(write, kind, wait, attempt, what, reason, recover)
            if found is not None:
                return found
            attempt += 1

    def pause(self, seconds: float) -> None:
        """Wait `seconds` on the forge's (injectable, cancellable) sleep."""
        self._sleep(seconds)
        self._bump("backoff_wait_s", seconds)

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
