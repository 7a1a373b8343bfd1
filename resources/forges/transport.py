"""What the GitHub, GitLab and Bitbucket transports share: `ForgeTransport`, their base.

Each host's transport (`github_transport`, `gitlab_transport`, `bitbucket_transport`) keeps its
client library (PyGithub, python-gitlab, plain `requests`), its retry loop's reading of answers
(which statuses and headers mean "retry", "rate limited", "wait until") and its error texts. What
is the same for all three lives here:

- the `stats` counters and the per-thread request tallies (`counting()`, `RequestTally`);
- redaction of the token (every form it is sent in) and the environment's secrets;
- the scoped `git_env()` (an `Authorization` header for the web root only, no redirects);
- one client per thread (a client or session is not thread-safe), closed together;
- the slots a request attempt takes (a rate-limit pause is slept out first; a write takes a
  write slot, and is paced where the host asks; a request a concurrency slot);
- write recovery: a write that failed ambiguously (a 5xx, a lost answer) is first looked for, and
  what is found is its answer, instead of writing it again;
- back-off (jittered exponential; a rate limit pauses every thread sharing the pause) on a sleep
  that ends when the worker is cancelled (`stoppable_sleep`), and git pushes retried the same way
  (a push whose answer was lost counts as done when the branch is at its sha).
"""

from __future__ import annotations

import base64
import logging
import random
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from resources import cancel
from resources.forges.base import ForgeError
from resources.forges.github_pacing import HostBudget
from resources.git import GitError, run_git
from resources.redact import redact, secret_values

WRITE_VERBS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
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
# The counters every transport keeps (a host's transport may add its own).
STATS = (
    "api_calls",
    "writes",
    "retries",
    "rate_limited",
    "server_errors",
    "rate_limit_wait_s",
    "backoff_wait_s",
    "git_pushes",
    "recovered_writes",
)


@dataclass
class RequestTally:
    """The API requests one worker made while counting (`ForgeTransport.counting`): all of
    them, the writes among them, and the conditional reads answered 304 (GitHub: not counted
    against its primary rate limit)."""

    requests: int = 0
    writes: int = 0
    not_modified: int = 0


def stoppable_sleep_for(host: str) -> Callable[[float], None]:
    """The default wait of `host`'s forge (back-off, rate-limit pause, write pacing): it ends at
    once, with a ForgeError `"<host>: cancelled: …"`, when the calling worker is cancelled, so
    that a target in a retry loop cannot outlive the run's shutdown grace."""

    def stoppable_sleep(seconds: float) -> None:
        """Sleep `seconds`; a ForgeError if the worker is cancelled meanwhile."""
        if cancel.sleep(seconds):
            raise ForgeError(f"{host}: {cancel.CANCELLED_MESSAGE}")

    return stoppable_sleep


def number(value: Any) -> float | None:
    """`value` (a header's text) as a number, or None when it is not one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def basic(user: str, password: str) -> str:
    """The credentials of an HTTP Basic `Authorization` header (base64 of `user:password`)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_forms(token: str, *headers: str) -> list[str]:
    """What to redact for `token`: the token, its base64, and the `headers` values it is sent
    in (empty ones left out), longest first (so that a longer form is masked whole)."""
    forms = {token, base64.b64encode(token.encode()).decode(), *headers}
    return sorted((s for s in forms if s), key=len, reverse=True)


class ForgeTransport:
    """The part of a forge's transport that is the same on every host (see the module docstring).

    A host's transport sets, in its constructor after `super().__init__`: `budget` (a
    `HostBudget`, whose `pause_until` every thread sleeps out), and where it bounds them
    `_write_slots` (writes and pushes of this forge) and `_request_slots` (requests in flight);
    it implements `_git_header()` and `_git_root()` and, for `close()`, `_close_client`. `name` is
    the host in log lines; `_log` the host module's logger; `_recover_errors` what a recovery
    lookup may raise that means "cannot tell" (the write is then sent again);
    `rate_limit_backoff_s` the first wait of a rate limit that says no time; `_api_errors` what
    its client library raises for an error answer (`_op` turns them into `forge_error`s).
    """

    name = "forge"
    rate_limit_backoff_s = 60.0
    _log = logging.getLogger(__name__)
    _recover_errors: tuple[type[Exception], ...] = (ForgeError, *NETWORK_ERRORS)
    _api_errors: tuple[type[Exception], ...] = ()

    def __init__(
        self,
        *,
        secrets: list[str],
        max_retries: int,
        backoff_s: float,
        max_wait_s: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        stats: tuple[str, ...] = STATS,
    ):
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._secrets = secrets
        self.budget: HostBudget
        self._write_slots: AbstractContextManager[Any] = nullcontext()
        self._request_slots: AbstractContextManager[Any] = nullcontext()
        self._lock = threading.Lock()  # stats and the client list
        self._local = threading.local()
        self._clients: list[Any] = []
        self.stats: dict[str, float] = {k: 0.0 if k.endswith("_s") else 0 for k in stats}

    # credentials ---------------------------------------------------------------------------------

    def _current_secrets(self) -> list[str]:
        """The token's forms to redact now (a host whose token changes overrides this)."""
        return self._secrets

    def redact(self, text: str) -> str:
        """`text` with the token (plain, base64, inside its Authorization headers) and any secret
        in the environment masked."""
        return redact(text, self._current_secrets() + secret_values())

    def _git_root(self) -> str:
        """The web root git's header is scoped to."""
        raise NotImplementedError

    def _git_header(self) -> str:
        """The `Authorization: …` header git sends to the web root."""
        raise NotImplementedError

    def git_env(self) -> dict[str, str]:
        """Environment for git processes that talk to this host over HTTPS with the token.

        The credentials go in an `Authorization` header set through `GIT_CONFIG_*` variables
        (command-line scope: nothing is written to any config file), scoped to the web root
        (`http.<web root>/.extraHeader`), so that envs of several forges can be merged
        (resources/forges/router.py) and the header is never sent to another host; redirects
        are not followed either. Pass it as `run_git(..., env=...)`; take a fresh one for each
        git command (a GitHub App's token changes)."""
        return {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": f"http.{self._git_root()}/.extraHeader",
            "GIT_CONFIG_VALUE_0": self._git_header(),
            "GIT_CONFIG_KEY_1": "http.followRedirects",
            "GIT_CONFIG_VALUE_1": "false",
        }

    # clients and counting ------------------------------------------------------------------------

    def _thread_client(self, make: Callable[[], Any]) -> Any:
        """This thread's client (made by `make` on the thread's first request)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = make()
            with self._lock:
                self._clients.append(client)
        return client

    def _close_client(self, client: Any) -> None:
        client.close()

    def close(self) -> None:
        """Close every thread's HTTP connections."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            self._close_client(client)

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """While inside, this thread's API requests are counted in the tally yielded (a worker
        works on one target at a time: its requests are the target's)."""
        previous = getattr(self._local, "tally", None)
        tally = self._local.tally = RequestTally()
        try:
            yield tally
        finally:
            self._local.tally = previous

    def _tally(self) -> RequestTally | None:
        return getattr(self._local, "tally", None)

    def _bump(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self.stats[key] = round(self.stats[key] + amount, 6)

    def _count(self, write: bool) -> None:
        self._bump("api_calls")
        if write:
            self._bump("writes")
        tally = self._tally()
        if tally is not None:
            tally.requests += 1
            tally.writes += write

    # one attempt ---------------------------------------------------------------------------------

    def _pace_write(self) -> None:
        """Wait until a write may go (a host with write limits to keep to overrides this)."""

    @contextmanager
    def _attempt(self, write: bool) -> Iterator[None]:
        """The slots one request attempt runs in: a rate-limit pause is slept out first; a write
        takes a write slot and is paced; every request a concurrency slot, and is counted."""
        self._await_pause()
        with self._write_slots if write else nullcontext():
            if write:
                self._pace_write()
            with self._request_slots:
                self._count(write)
                yield

    def _await_pause(self) -> None:
        """Sleep out a rate-limit pause that any thread sharing the budget started."""
        wait = self.budget.pause_until - self._clock()
        if wait > 0:
            self._sleep(wait)
            self._bump("rate_limit_wait_s", wait)

    # recovery and back-off -----------------------------------------------------------------------

    @contextmanager
    def _recovering(self, recover: Callable[[], Any]) -> Iterator[None]:
        """While inside, a write of this thread retried after a 5xx or a lost answer first asks
        `recover` whether it landed (what it returns, not None, is the write's answer)."""
        previous = getattr(self._local, "recover", None)
        self._local.recover = recover
        try:
            yield
        finally:
            self._local.recover = previous

    def _recovered(self, recover: Callable[[], Any] | None = None) -> Any:
        """What `recover` (default: this thread's `_recovering` hook) finds of a write that may
        have landed, or None (nothing found, or it cannot tell)."""
        recover = recover or getattr(self._local, "recover", None)
        if recover is None:
            return None
        hook = getattr(self._local, "recover", None)
        self._local.recover = None  # the lookup's own requests are not writes to recover
        try:
            return recover()
        except self._recover_errors:
            return None  # cannot tell: send the write again
        finally:
            self._local.recover = hook

    def _retry_or_found(
        self,
        write: bool,
        kind: str,
        wait: float | None,
        attempt: int,
        what: str,
        reason: str,
        recover: Callable[[], Any] | None = None,
    ) -> Any:
        """After failed attempt number `attempt` (0: the first): a write that failed with a 5xx
        or a lost answer may have landed, and what the recovery finds of it is returned; else
        (None) waits out the back-off before attempt `attempt + 1`."""
        if write and kind != "rate_limit":
            found = self._recovered(recover)
            if found is not None:
                self._bump("server_errors")
                self._bump("recovered_writes")
                return found
        self._back_off(kind, wait, attempt + 1, what, reason)
        return None

    def _back_off(
        self, kind: str, wait: float | None, attempt: int, what: str, reason: str
    ) -> None:
        """Wait before retry `attempt`: a rate limit pauses every thread sharing the budget
        (slept out before the next request), other failures this one."""
        self._bump("retries")
        if kind == "rate_limit":
            self._bump("rate_limited")
            if wait is None:  # without a hint, wait long, then longer
                wait = self.rate_limit_backoff_s * 2 ** (attempt - 1)
            wait = min(wait, self.max_wait_s)
            self.budget.pause(self._clock() + wait)
        else:
            self._bump("server_errors")
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            wait = min(wait, self.max_wait_s)
        self._log.warning(
            "%s %s: %s (%s); retry %d/%d in %.1f s",
            self.name, what, kind, self.redact(reason)[:200], attempt, self.max_retries, wait,
        )  # fmt: skip
        if kind != "rate_limit":
            self._sleep(wait)
            self._bump("backoff_wait_s", wait)

    # git -----------------------------------------------------------------------------------------

    def remote_sha(self, clone_url: str, branch: str) -> str | None:
        """The sha `branch` has on the remote (None: absent or unreadable)."""
        try:
            out = run_git(
                ["ls-remote", clone_url, f"refs/heads/{branch}"], env=self.git_env(), timeout=120
            )
        except (GitError, subprocess.TimeoutExpired):
            return None
        return out.split()[0] if out.strip() else None

    def _git_write(
        self,
        argv: list[str],
        workspace: Path,
        *,
        landed: Callable[[], bool],
        what: str,
        label: str | None = None,
    ) -> None:
        """Run a git command that writes to the host (a push) in a write slot, retrying transient
        failures with back-off; when it failed but `landed()` (only the answer was lost), it is
        done. The error says "`what` failed: <git's reason>"; retries are logged as `label`
        (default `what`)."""
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
            self._back_off("server", None, attempt, label or what, reason)

    def push_with_lease(
        self,
        workspace: Path,
        clone_url: str,
        branch: str,
        sha: str,
        expected: str | None,
        *,
        what: str,
        label: str | None = None,
    ) -> None:
        """Push `sha` from `workspace` to `branch` of `clone_url` with a lease on `expected` (None:
        the branch must be absent), retried as `_git_write` says; a push whose answer was lost
        counts as done when the branch is at `sha`."""
        argv = [
            "push", "--quiet", f"--force-with-lease=refs/heads/{branch}:{expected or ''}",
            clone_url, f"{sha}:refs/heads/{branch}",
        ]  # fmt: skip
        self._git_write(
            argv,
            workspace,
            landed=lambda: self.remote_sha(clone_url, branch) == sha,
            what=what,
            label=label,
        )

    # errors --------------------------------------------------------------------------------------

    def forge_error(
        self, exc: Exception, subject: str, action: str, not_found: str | None = None
    ) -> ForgeError:
        """A redacted ForgeError saying what `action` on `subject` ran into: the host's words."""
        raise NotImplementedError

    def _unreachable(self, subject: str, action: str, exc: Exception) -> str:
        """What a network failure of `action` on `subject` says (before redaction)."""
        return f"{subject}: {action} failed: cannot reach {self.name} ({exc})"

    @contextmanager
    def _op(self, subject: str, action: str, not_found: str | None = None) -> Iterator[None]:
        """Turn the client library's error answers and network failures inside into a clear,
        redacted ForgeError (a 404 says `not_found` when given)."""
        try:
            yield
        except self._api_errors as exc:
            raise self.forge_error(exc, subject, action, not_found) from None
        except NETWORK_ERRORS as exc:
            raise ForgeError(self.redact(self._unreachable(subject, action, exc))) from None
