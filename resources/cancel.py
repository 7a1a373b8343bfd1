"""Cancelling one worker's outside work: its git processes are killed, its back-off sleeps end.

A worker thread (one target of a run) runs inside a `CancelScope`. Code deep below it that waits
on the outside world asks the scope of its own thread: `run_git` registers its process group so
that `CancelScope.cancel()` kills it (git's children too: a push spawns `git-remote-https`, an
alias or a local push a shell), and a forge's back-off sleeps with `sleep()`, which returns at
once when the scope is cancelled. Code outside any scope (the CLI, sensors) is not affected.
Dagster-free, like the rest of `resources/`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

CANCELLED_MESSAGE = "cancelled: the run is stopping"


class CancelScope:
    """The outside work one worker started: a cancel flag and the process groups it runs."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Kill every process group registered now or later, and wake every `sleep()`."""
        with self._lock:
            self._event.set()
            procs = list(self._procs)
        for proc in procs:
            kill_group(proc)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True (at once) when the scope is or gets cancelled."""
        return self._event.wait(max(0.0, seconds))

    @contextlib.contextmanager
    def watching(self, proc: subprocess.Popen) -> Iterator[None]:
        """While inside, `cancel()` kills `proc`'s process group (at once if already cancelled)."""
        with self._lock:
            self._procs.add(proc)
            cancelled = self._event.is_set()
        if cancelled:
            kill_group(proc)
        try:
            yield
        finally:
            with self._lock:
                self._procs.discard(proc)


# One per thread: a ContextVar is not inherited by threads, so helper threads a worker starts
# are outside its scope, which is what we want (they end with the worker's own calls).
_scope: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "cancel_scope", default=None
)


def current() -> CancelScope | None:
    """The scope of the calling thread's worker, if it runs inside one."""
    return _scope.get()


@contextlib.contextmanager
def scope(cancel_scope: CancelScope) -> Iterator[CancelScope]:
    """Run the body of this thread inside `cancel_scope`."""
    token = _scope.set(cancel_scope)
    try:
        yield cancel_scope
    finally:
        _scope.reset(token)


def cancelled() -> bool:
    """Whether the calling thread's worker was cancelled (False outside any scope)."""
    s = _scope.get()
    return s is not None and s.cancelled


def sleep(seconds: float) -> bool:
    """`time.sleep` that ends early when the calling worker is cancelled; True if it was."""
    s = _scope.get()
    if s is None:
        return threading.Event().wait(max(0.0, seconds))  # nothing can set it: a plain sleep
    return s.wait(seconds)


@contextlib.contextmanager
def scope_watching(cancel_scope: CancelScope | None, proc: subprocess.Popen) -> Iterator[None]:
    """`cancel_scope.watching(proc)`, or nothing outside any scope."""
    if cancel_scope is None:
        yield
        return
    with cancel_scope.watching(proc):
        yield


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL `proc`'s whole process group (it must lead one: `start_new_session=True`)."""
    # ProcessLookupError: already gone (and reaped); PermissionError: the pid is not ours now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
