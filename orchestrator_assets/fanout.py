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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from resources.redact import redact

R = TypeVar("R")

Log = Callable[[str], None]

# Set when the process was asked to stop (SIGTERM): no new target is begun, the targets in flight
# get SHUTDOWN_GRACE_S to finish (and are recorded), then what still runs is cancelled.
SHUTDOWN = threading.Event()
SHUTDOWN_GRACE_S = float(os.environ.get("ORCHESTRATOR_SHUTDOWN_GRACE_S", "20"))


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

    from dagster._utils import interrupts

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
    run log is only written from the step's own thread. If the caller is interrupted (run
    cancelled), `cancel` stops what the workers started and no new target is begun. Once
    SHUTDOWN is set, targets not begun are dropped and those in flight get SHUTDOWN_GRACE_S to
    finish; what is still running then is cancelled and not yielded (the next run redoes it).
    """
    lines: queue.Queue[str] = queue.Queue()

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
            # whatever a target's command or agent printed.
            log(redact("\n".join(batch)))

    def run(key: str) -> R:
        try:
            return work(key, lines.put)
        except Exception as exc:
            lines.put(f"{key}: unexpected error: {exc}\n{traceback.format_exc(limit=5)}")
            return on_error(key, exc)

    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(keys) or 1)))
    futures: dict[Future, str] = {pool.submit(run, key): key for key in keys}
    finished = False
    try:
        pending = set(futures)
        deadline: float | None = None
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                if not future.cancelled():
                    yield futures[future], future.result()
            if SHUTDOWN.is_set() and deadline is None:
                deadline = time.monotonic() + SHUTDOWN_GRACE_S
                dropped = sum(f.cancel() for f in pending)
                log(f"stopping: {dropped} target(s) not begun; finishing those in flight")
            if deadline is not None and pending and time.monotonic() > deadline:
                log(f"stopping: {len(pending)} target(s) did not finish in time; cancelled")
                break
        drain()
        finished = not pending
    finally:
        if not finished:
            pool.shutdown(wait=False, cancel_futures=True)
            cancel()
        pool.shutdown(wait=True)
