"""How the GitHub forge talks to GitHub: one PyGithub client per thread, retries, pacing, counters.

Every API request goes through one retry loop (`GitHubTransport._request`): 5xx, network errors,
429 and rate-limit 403s are retried with back-off that honours `Retry-After` and
`X-RateLimit-Reset`; a rate limit pauses every thread that uses the token, not just the one that
hit it. API writes (POST, PATCH, PUT, DELETE) take a token of GitHub's secondary limits (80 a
minute, 500 an hour, per token: `github_pacing.HostBudget`, shared by every forge of the process
on the same host and token), so hundreds of targets do not trip them, while writes to different
repositories still overlap; writes and git pushes share a bounded semaphore, every request a cap
on concurrent requests. A GET of something read before is conditional (`If-None-Match` with its
ETag): GitHub answers an unchanged resource 304, which does not count against the primary rate
limit, and the answer kept is returned. A write retried after an ambiguous failure (a 5xx or a
lost response) may already have been applied: the caller can say how to find it
(`_recovering`), and what is found is returned instead of writing again.

PyGithub's `Github` client is not thread-safe (its connection object keeps the pending request in
attributes), so the transport keeps one client per thread. What the GitHub, GitLab and Bitbucket
transports share (counters and tallies, redaction, the scoped `git_env()`, the attempt's slots,
write recovery, back-off, pushes, `_op`) is `transport.ForgeTransport`'s; what GitHub answers
mean, its pacing, conditional GETs and error texts are here.

What PyGithub offers and why it is switched off here (`Github(retry=None,
seconds_between_requests=None, seconds_between_writes=None)`):

- `GithubRetry` is a urllib3 `Retry`: it runs inside the HTTP adapter of one thread's connection
  and waits with `time.sleep`. It cannot (1) end a wait when the worker is cancelled, nor wait on
  the injected clock the tests use (`stoppable_sleep`, `sleep=`); (2) pause the other threads
  when one hits a rate limit; (3) ask "did my write land?" before retrying a write — that needs
  another request on the same, non-reentrant client, and to return what it found instead of a
  response; (4) count retries and waits (`stats`), or log them redacted; (5) retry a
  `ChunkedEncodingError`, which requests raises after urllib3 has returned. Its rate-limit test
  also reads only the message (`Requester.isRateLimitError`), where ours reads
  `X-RateLimit-Remaining: 0` too, and its 5xx back-off has no multiplicative jitter (its
  `max_rate_limit_wait`, failing at once on a far reset, is `max_wait_s` here). Wrapping it
  to do all that would override every method it has and still leave a loop here for writes, so
  the loop below is the only retry layer.
- `seconds_between_writes` keeps its last-write time in each `Requester`, i.e. per thread, and
  sleeps with `time.sleep`: GitHub's secondary limits count per token, so writes are paced here
  across all threads and forges (`_pace_write`, `github_pacing`), on the injectable, cancellable
  sleep.
  `seconds_between_requests` (PyGithub's default 0.25 s between any two requests of a client) is
  off for the same reason: reads are not paced, only rate limits slow them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlparse

from github import Auth, Github, GithubException

from resources.forges.base import ForgeError
from resources.forges.github_names import web_root
from resources.forges.github_pacing import HostBudget, WriteLimits, shared_budget
from resources.forges.transport import (
    NETWORK_ERRORS,
    STATS,
    TRANSIENT_GIT,
    WRITE_VERBS,
    ForgeTransport,
    RequestTally,
    basic,
    number,
    secret_forms,
    stoppable_sleep_for,
)

__all__ = [  # the shared names are imported from here too
    "NETWORK_ERRORS",
    "TRANSIENT_GIT",
    "WRITE_VERBS",
    "GitHubTransport",
    "RequestTally",
    "TokenSource",
    "error_text",
    "stoppable_sleep",
]

log = logging.getLogger(__name__)

# What a write that may have landed is found as: the (headers, data) its answer would have had.
Found = tuple[dict, Any]
# requestJsonAndCheck's parameters after (verb, url), in order
REQUEST_PARAMETERS = ("parameters", "headers", "input", "follow_302_redirect")


class TokenSource(Protocol):
    """Where a forge's token comes from when it changes over time (a GitHub App's installation
    tokens: github_app.py): the current one, and every one given out (to redact)."""

    identity: str  # stable and not secret: keys the write budget shared per token

    def current(self) -> str:
        """The token to use now (renewed before it expires)."""
        ...

    def secrets(self) -> list[str]:
        """Every token this source gave out, for redaction."""
        ...


class _SourceAuth(Auth.Token):
    """PyGithub authentication with the token a `TokenSource` gives now, read per request."""

    def __init__(self, source: TokenSource):
        super().__init__("unused")
        self._source = source

    @property
    def token(self) -> str:
        return self._source.current()


def _basic(token: str) -> str:
    """The value of git's Basic Authorization header for a GitHub token."""
    return basic("x-access-token", token)


def _token_secrets(token: str) -> list[str]:
    """A token and the forms it is sent in (plain, base64, in a Basic header)."""
    return secret_forms(token, _basic(token))


stoppable_sleep = stoppable_sleep_for("GitHub")


def error_text(exc: GithubException) -> tuple[str, list[str]]:
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


class GitHubTransport(ForgeTransport):
    """Authenticated, retried, paced access to one GitHub API (github.com or an Enterprise Server).

    `base_url` is the REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GHE.
    `limits` are GitHub's secondary limits kept to (writes per minute and per hour, concurrent
    requests), in a budget shared by every forge of the process on the same host and token
    (`budget` replaces it, for tests); `write_concurrency` bounds simultaneous writes and pushes
    of this forge; `write_interval_s` (default 0: none) adds a fixed spacing between writes on
    top. `etag_cache_size` is how many GET answers are kept for conditional requests (0: none).
    `max_retries`, `backoff_s` and `max_wait_s` shape the retries; `sleep` and `clock` are
    injectable so tests do not wait. `stats` counts api_calls, retries, rate_limited,
    server_errors, rate_limit_wait_s, backoff_wait_s, write_pacing_wait_s, git_pushes,
    recovered_writes (writes found applied after a lost answer), writes (API writes sent) and
    not_modified (conditional GETs answered 304). Waits are summed over threads.
    """

    name = "GitHub"
    _log = log
    _recover_errors = (GithubException, *NETWORK_ERRORS)
    _api_errors = (GithubException,)

    def __init__(
        self,
        token: str | TokenSource,
        base_url: str = "https://api.github.com",
        *,
        write_concurrency: int = 4,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        write_interval_s: float = 0.0,
        limits: WriteLimits | None = None,
        budget: HostBudget | None = None,
        etag_cache_size: int = 1024,
        per_page: int = 100,
        timeout_s: int = 30,
        sleep: Callable[[float], None] = stoppable_sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not token:
            raise ForgeError("GitHub forge: no token given")
        # A TokenSource (a GitHub App installation) gives the current token per request.
        self._source: TokenSource | None = None if isinstance(token, str) else token
        self._token = token if isinstance(token, str) else ""
        super().__init__(
            secrets=_token_secrets(self._token) if self._token else [],
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_wait_s=max_wait_s,
            sleep=sleep,
            clock=clock,
            stats=(*STATS, "write_pacing_wait_s", "not_modified"),
        )
        identity = token if isinstance(token, str) else token.identity
        self.base_url = base_url.rstrip("/")
        self.write_concurrency = write_concurrency
        self.write_interval_s = write_interval_s
        self.per_page = per_page
        self.timeout_s = timeout_s
        self.limits = limits or WriteLimits()
        self.budget = budget or shared_budget(self.base_url, identity, self.limits, clock)
        self._request_slots = self.budget.requests
        self._write_slots = threading.BoundedSemaphore(write_concurrency)
        self.etag_cache_size = etag_cache_size
        # (url, parameters, Accept) -> (etag, headers, data) of GET answers, least recent first
        self._etags: OrderedDict[tuple[str, str, str], tuple[str, dict, Any]] = OrderedDict()
        self._pace_lock = threading.Lock()
        self._next_write_at = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # credentials ---------------------------------------------------------------------------------

    def _current_secrets(self) -> list[str]:
        """The token's forms; with a GitHub App, those of every installation token minted."""
        if self._source is None:
            return self._secrets
        minted = {s for t in self._source.secrets() for s in _token_secrets(t)}
        return sorted(minted, key=len, reverse=True)

    def _git_root(self) -> str:
        return web_root(self.base_url)

    def _git_header(self) -> str:
        """Basic `x-access-token:TOKEN`; with a GitHub App, the installation token current now."""
        token = self._source.current() if self._source is not None else self._token
        return f"Authorization: Basic {_basic(token)}"

    # clients -------------------------------------------------------------------------------------

    def client(self) -> Github:
        """This thread's PyGithub client, whose every request runs through the retry loop."""
        return self._thread_client(self._new_client)

    def _new_client(self) -> Github:
        gh = Github(
            auth=Auth.Token(self._token) if self._source is None else _SourceAuth(self._source),
            base_url=self.base_url,
            per_page=self.per_page,
            timeout=self.timeout_s,
            retry=None,  # retries are ours (see the module docstring): _request
            seconds_between_requests=None,
            seconds_between_writes=None,  # pacing is ours, shared by all threads
            lazy=True,
            user_agent="campaign-orchestrator",
        )
        requester = gh.requester
        send = requester.requestJsonAndCheck
        requester.requestJsonAndCheck = functools.partial(self._request, send)  # type: ignore[method-assign]
        # requestJsonAndCheck calls self.requestJson, which alone sees the HTTP status: kept
        # per thread, so that a 304 (its body is empty) is told from a 200
        raw = requester.requestJson
        requester.requestJson = functools.partial(self._status_of, raw)  # type: ignore[method-assign]
        return gh

    def _status_of(self, raw: Callable[..., tuple[int, dict, str]], *args: Any, **kwargs: Any):
        """PyGithub's `requestJson`, with the answer's status kept for this thread."""
        status, headers, output = raw(*args, **kwargs)
        self._local.status = status
        return status, headers, output

    # retries -------------------------------------------------------------------------------------

    def _request(self, send: Callable[..., Any], verb: str, url: str, *args: Any, **kwargs: Any):
        """One API request with retries; writes take a write slot and are paced, every request
        a concurrency slot; a GET read before is conditional."""
        write = verb.upper() in WRITE_VERBS
        kwargs.update(zip(REQUEST_PARAMETERS, args, strict=False))
        conditional = verb.upper() == "GET" and self.etag_cache_size > 0
        attempt = 0
        renewed = False
        while True:
            failure: Exception
            with self._attempt(write):
                try:
                    if conditional:
                        return self._conditional_get(send, url, kwargs)
                    return send(verb, url, **kwargs)
                except (GithubException, *NETWORK_ERRORS) as exc:
                    failure = exc
            if not renewed and self._renewed_after_401(failure):
                renewed = True  # once: a token minted just now that is refused is an error
                continue
            plan = self._retry_plan(failure)
            if plan is None or attempt >= self.max_retries:
                raise failure
            kind, wait = plan
            what = f"{verb} {urlparse(url).path}"
            found = self._retry_or_found(write, kind, wait, attempt, what, str(failure))
            if found is not None:
                return found
            attempt += 1

    def _conditional_get(self, send: Callable[..., Any], url: str, kwargs: dict[str, Any]):
        """A GET sent with the ETag of the answer kept for it (if any): on 304 the kept answer
        is returned (a copy: PyGithub objects are built from it), on 200 it is kept."""
        headers = dict(kwargs.get("headers") or {})
        params = json.dumps(kwargs.get("parameters") or {}, sort_keys=True, default=str)
        key = (url, params, str(headers.get("Accept", "")))
        with self._lock:
            kept = self._etags.get(key)
            if kept is not None:
                self._etags.move_to_end(key)
        if kept is not None:
            headers["If-None-Match"] = kept[0]
        self._local.status = None
        answer_headers, data = send("GET", url, **{**kwargs, "headers": headers})
        if kept is not None and self._local.status == 304:
            self._bump("not_modified")
            tally = self._tally()
            if tally is not None:
                tally.not_modified += 1
            return dict(kept[1]), copy.deepcopy(kept[2])
        etag = {str(k).lower(): v for k, v in (answer_headers or {}).items()}.get("etag")
        if etag and self._local.status == 200:
            with self._lock:
                self._etags[key] = (str(etag), dict(answer_headers), copy.deepcopy(data))
                self._etags.move_to_end(key)
                while len(self._etags) > self.etag_cache_size:
                    self._etags.popitem(last=False)
        return answer_headers, data

    def _renewed_after_401(self, exc: Exception) -> bool:
        """Whether a 401 was answered by renewing a token that comes from a source (a GitHub
        App's installation token revoked before its expiry): the request is then sent again,
        which is safe for a write too, as a 401 applied nothing."""
        renew = getattr(self._source, "renew", None)
        if not (isinstance(exc, GithubException) and exc.status == 401 and callable(renew)):
            return False
        return bool(renew())

    def _retry_plan(self, exc: Exception) -> tuple[str, float | None] | None:
        """`(kind, wait)` for a failure worth retrying (wait None: back off), else None."""
        if not isinstance(exc, GithubException):
            return ("network", None)
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        retry_after = number(headers.get("retry-after"))
        message = error_text(exc)[0].lower()
        if exc.status in (403, 429):
            if headers.get("x-ratelimit-remaining") == "0" and retry_after is None:
                reset = number(headers.get("x-ratelimit-reset"))
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
            # "rate limit" is in the primary and the secondary limit's messages ("abuse": the
            # secondary limit's older name)
            limited = "rate limit" in message or "abuse" in message
            if exc.status == 429 or retry_after is not None or limited:
                return ("rate_limit", retry_after)
            return None
        if exc.status >= 500:
            return ("server", retry_after)
        return None

    def _pace_write(self) -> None:
        """Wait for a write token of GitHub's secondary limits (and `write_interval_s`, if set).

        The slot is reserved first come, first served; a wait cut short (the worker was
        cancelled) gives it back."""
        now = self._clock()
        if self.write_interval_s > 0:
            with self._pace_lock:
                earliest = max(now, self._next_write_at)
                self._next_write_at = earliest + self.write_interval_s
        else:
            earliest = now
        at = self.budget.reserve(earliest)
        wait = at - now
        if wait <= 0:
            return
        try:
            self._sleep(wait)
        except BaseException:
            self.budget.release(at)
            raise
        self._bump("write_pacing_wait_s", wait)

    # errors --------------------------------------------------------------------------------------

    def forge_error(  # type: ignore[override]
        self, exc: GithubException, subject: str, action: str, not_found: str | None = None
    ) -> ForgeError:
        """A redacted ForgeError saying what `action` on `subject` ran into (404 -> `not_found`)."""
        message, details = error_text(exc)
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
