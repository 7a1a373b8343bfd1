"""Running one stage over the targets of a run: a bounded thread pool, failures kept per target."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from orchestrator_assets.reports import json_logs
from resources.cancel import CancelScope
from resources.cancel import scope as cancel_scope

R = TypeVar("R")

Log = Callable[[str], None]

# Set when the process was asked to stop (SIGTERM): no new target is begun, the targets in flight
# get SHUTDOWN_GRACE_S to finish (and are recorded), then what still runs is cancelled.
SHUTDOWN = threading.Event()
SHUTDOWN_GRACE_S = float(os.environ.get("ORCHESTRATOR_SHUTDOWN_GRACE_S", "20"))
# After the grace, how long the cancelled targets get to unwind and return what they had done
# (killed processes return at once; this bounds a worker that is slow to notice).
CANCEL_WAIT_S = 5.0


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """While inside, SIGTERM sets SHUTDOWN (a second one interrupts at once, as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield SHUTDOWN  # signal handlers can only be set from the main thread
        return

    def on_term(signum: int, frame: object) -> None:
        if SHUTDOWN.is_set():
            raise KeyboardInterrupt
        SHUTDOWN.set()

    from orchestrator_assets.assets.dagster_private import interrupts

    # Dagster points SIGTERM at its own interrupt handler whenever it swaps the SIGINT one
    # (during execute_in_process), which would abort the step and drop the targets in flight.
    # While inside, SIGTERM stays ours; Ctrl-C keeps Dagster's behaviour.
    remap = interrupts.setup_interrupt_handlers
    interrupts.setup_interrupt_handlers = lambda: None
    SHUTDOWN.clear()
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield SHUTDOWN
    finally:
        signal.signal(signal.SIGTERM, previous)
        interrupts.setup_interrupt_handlers = remap


def fan_out(
    keys: Sequence[str],
    work: Callable[[str, Log], R],
    on_error: Callable[[str, BaseException], R],
    *,
    max_workers: int,
    log: Log,
    cancel: Callable[[], None] = lambda: None,
) -> Iterator[tuple[str, R]]:
    """Yield `(key, work(key))` as each finishes; an exception becomes `on_error(key, exc)`.

    Progress lines from worker threads are passed to `log` on the calling thread, so Dagster's
    run log is only written from the step's own thread. Each worker binds its target's key
    (`json_logs.bind`) while it works on it, and every line keeps the context bound where it was
    logged, so JSON logs name each line's target without reading it from the text. Once SHUTDOWN
    is set, targets not begun are dropped and those in flight get SHUTDOWN_GRACE_S to finish.
    Then what still runs is cancelled: `cancel` stops the sandboxes' commands, each worker's git
    processes are killed and its forge back-offs cut short (`resources.cancel`); the results
    those workers still return within CANCEL_WAIT_S are yielded like any other (what they had
    pushed or opened, and what their agent cost, is in them), and a worker stuck beyond that is
    abandoned: its thread is a daemon, so it cannot hold the process. If the caller is
    interrupted (run cancelled), the same cancellation happens and nothing more is yielded.
    """
    lines: queue.Queue[tuple[dict[str, Any], str]] = queue.Queue()  # (bound context, line)
    results: queue.Queue[tuple[str, R]] = queue.Queue()
    todo: queue.Queue[str] = queue.Queue()
    for key in keys:
        todo.put(key)
    lock = threading.Lock()
    scopes: dict[str, CancelScope] = {}  # the targets in flight
    closing = threading.Event()  # no new target is begun

    def drain() -> None:
        # One log message per drain: each message is an event-log write, which costs as much as
        # a small git command, so many targets' lines share one.
        batch = []
        while True:
            try:
                batch.append(lines.get_nowait())
            except queue.Empty:
                break
        if batch:
            # The run log is stored (event log, compute logs, the CLI's output): no secret in it,
            # whatever a target's command or agent printed (log_lines masks them).
            json_logs.log_lines(log, batch)

    def run(key: str) -> R:
        with json_logs.bind(target=key):

            def log_line(line: str) -> None:
                # What is bound where the line is logged (a stage, say), and the target even on
                # another thread: a command's output arrives from its reader thread.
                lines.put(({**json_logs.bound(), "target": key}, line))

            try:
                return work(key, log_line)
            except Exception as exc:
                log_line(f"{key}: unexpected error: {exc}\n{traceback.format_exc(limit=5)}")
                return on_error(key, exc)

    def worker() -> None:
        while not closing.is_set():
            try:
                key = todo.get_nowait()
            except queue.Empty:
                return
            scope = CancelScope()
            with lock:
                scopes[key] = scope
            with cancel_scope(scope):
                result = run(key)
            with lock:
                scopes.pop(key, None)
            results.put((key, result))

    def cancel_in_flight() -> int:
        closing.set()
        with lock:
            in_flight = list(scopes.values())
        for scope in in_flight:
            scope.cancel()
        cancel()
        return len(in_flight)

    # Daemon threads, not a ThreadPoolExecutor: the interpreter joins an executor's threads at
    # exit, so one worker stuck where nothing can interrupt it (a read from a server that never
    # answers) would keep the process alive past any grace.
    threads = [
        threading.Thread(target=worker, name=f"fan-out-{i}", daemon=True)
        for i in range(max(1, min(max_workers, len(keys) or 1)))
    ]
    for thread in threads:
        thread.start()
    waiting = set(keys)
    finished = False
    try:
        deadline: float | None = None
        given_up_at: float | None = None
        while waiting:
            try:
                key, result = results.get(timeout=0.5)
            except queue.Empty:
                pass
            else:
                drain()
                waiting.discard(key)
                yield key, result
                continue
            drain()
            if SHUTDOWN.is_set() and deadline is None:
                deadline = time.monotonic() + SHUTDOWN_GRACE_S
                closing.set()
                dropped = 0
                while True:
                    try:
                        waiting.discard(todo.get_nowait())
                    except queue.Empty:
                        break
                    dropped += 1
                log(f"stopping: {dropped} target(s) not begun; finishing those in flight")
            now = time.monotonic()
            if deadline is not None and given_up_at is None and waiting and now > deadline:
                given_up_at = now
                log(f"stopping: {cancel_in_flight()} target(s) did not finish in time; cancelled "
                    "(commands and git killed); recording what they had done")  # fmt: skip
            if given_up_at is not None and waiting and now > given_up_at + CANCEL_WAIT_S:
                log(f"stopping: {len(waiting)} target(s) did not stop when cancelled; left "
                    f"unrecorded: {', '.join(sorted(waiting))}")  # fmt: skip
                break
        drain()
        finished = not waiting
    finally:
        if not finished:
            cancel_in_flight()
            # Give the cancelled workers a moment to let go of their sandboxes and processes;
            # one that does not is abandoned (a daemon thread), never waited for without bound.
            until = time.monotonic() + CANCEL_WAIT_S
            for thread in threads:
                thread.join(max(0.0, until - time.monotonic()))
            cancel()  # again: removes what a late worker opened after the first call
