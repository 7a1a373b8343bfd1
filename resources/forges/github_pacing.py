"""How fast the GitHub forge may talk to one GitHub: GitHub's documented limits as shared budgets.

GitHub's secondary rate limits ("Rate limits for the REST API" → secondary rate limits) allow at
most 80 content-generating requests per minute and at most 500 per hour, and no more than 100
concurrent requests; they count per token, across every thread and client of it. `HostBudget`
holds what one process may still do against one API host with one token:

- two sliding-window buckets for writes (POST, PATCH, PUT, DELETE — every one is treated as
  content-generating, the safe reading): a bucket of `per_minute` tokens, each coming back one
  minute after it was spent, and one of `per_hour` tokens, each coming back one hour after. A
  burst of up to `per_minute` writes goes at once; then writes follow at the per-minute rate; and
  no window of one minute (one hour) ever holds more than `per_minute` (`per_hour`) writes — a
  classic refilling token bucket would let a full bucket plus a window's refill through, i.e.
  up to twice the limit in some window;
- a cap on concurrent requests (reads and writes), well below GitHub's 100;
- the pause a rate-limit answer starts, which holds every thread that uses the token.

The budget only decides (`reserve` returns how long to wait); the caller sleeps, on its own
injectable and cancellable sleep, so tests assert the decisions on a fake clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

MINUTE = 60.0
HOUR = 3600.0


@dataclass(frozen=True)
class WriteLimits:
    """GitHub's limits the forge keeps to, per API host and token (defaults: GitHub's documented
    secondary limits, and a concurrency cap well below its 100)."""

    per_minute: int = 80
    per_hour: int = 500
    max_concurrent_requests: int = 20
    # GitHub counts writes as they arrive, and a request's latency varies: a slot comes back this
    # much after its window, so a write sent right on time cannot land inside the previous
    # window on GitHub's side (without it the emulator saw 81 writes in one 60 s window).
    margin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.per_hour < 1 or self.max_concurrent_requests < 1:
            raise ValueError(f"GitHub limits must be at least 1: {self}")


class HostBudget:
    """The writes one process may still make to one GitHub API host with one token, the
    requests it may have in flight, and the rate-limit pause every thread waits out."""

    def __init__(self, limits: WriteLimits):
        self.limits = limits
        self.requests = threading.BoundedSemaphore(limits.max_concurrent_requests)
        self._lock = threading.Lock()
        # when each recent write was (or is reserved to be) sent, oldest first; enough of them to
        # answer both windows
        self._writes: deque[float] = deque(maxlen=max(limits.per_minute, limits.per_hour))
        self.pause_until = 0.0

    def next_slot(self, now: float) -> float:
        """When the next write could go, without reserving it."""
        with self._lock:
            return self._slot(now)

    def _slot(self, now: float) -> float:
        writes, limits = self._writes, self.limits
        at = max(now, writes[-1]) if writes else now  # first come, first served
        if len(writes) >= limits.per_minute:
            at = max(at, writes[-limits.per_minute] + MINUTE + limits.margin_s)
        if len(writes) >= limits.per_hour:
            at = max(at, writes[-limits.per_hour] + HOUR + limits.margin_s)
        return at

    def reserve(self, now: float) -> float:
        """Reserve the next write slot; returns the time it is at (`now` or later)."""
        with self._lock:
            at = self._slot(now)
            self._writes.append(at)
            return at

    def release(self, at: float) -> None:
        """Give back a reserved slot that was not used (its wait was cancelled)."""
        # ValueError: already out of the window's memory
        with self._lock, contextlib.suppress(ValueError):
            self._writes.remove(at)

    def pause(self, until: float) -> None:
        """Hold every request until `until` (a rate-limit answer said so)."""
        with self._lock:
            self.pause_until = max(self.pause_until, until)

    def writes_within(self, now: float, window: float) -> int:
        """How many writes were sent (or are reserved) in `(now - window, now]`."""
        with self._lock:
            return sum(1 for t in self._writes if now - window < t <= now)


_budgets: dict[tuple, HostBudget] = {}
_budgets_lock = threading.Lock()


def shared_budget(
    base_url: str, token: str, limits: WriteLimits, clock: Callable[[], float]
) -> HostBudget:
    """The budget every forge of this process shares for `base_url`'s host and `token`.

    Keyed by host, a digest of the token (GitHub counts per token; the token itself is not kept
    as a key), the limits and the clock (times of different clocks cannot be compared: a test's
    fake clock gets its own budget, every forge on the real clock shares one)."""
    host = urlparse(base_url).netloc or base_url
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    key = (host, digest, limits, clock)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = HostBudget(limits)
        return budget


def campaign_duration_s(writes: int, limits: WriteLimits = WriteLimits()) -> float:
    """The least time `writes` content-generating requests take under `limits` (the first one
    at 0 s): what the README's campaign estimates are computed with."""
    budget = HostBudget(limits)
    at = 0.0
    for _ in range(writes):
        at = budget.reserve(0.0)
    return at
