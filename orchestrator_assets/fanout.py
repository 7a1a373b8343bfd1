"""Running one stage over the targets of a run: a bounded thread pool, failures kept per target."""

from __future__ import annotations

import queue
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

R = TypeVar("R")

Log = Callable[[str], None]


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
    cancelled), `cancel` stops what the workers started and no new target is begun.
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
            log("\n".join(batch))

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
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                yield futures[future], future.result()
        drain()
        finished = True
    finally:
        if not finished:
            pool.shutdown(wait=False, cancel_futures=True)
            cancel()
        pool.shutdown(wait=True)
