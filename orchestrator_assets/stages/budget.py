"""A campaign's budget: no new agent run once the spend reaches it."""

from __future__ import annotations

import threading
from collections.abc import Callable

THRESHOLDS = (0.5, 0.8, 1.0)


class Budget:
    """Spend against a limit, shared by the agent runs of one step (thread-safe).

    An agent run may start while the spend is below the limit; the overshoot is bounded by the
    runs already in flight. Crossing 50%, 80% and 100% is reported once each through `notify`.
    """

    def __init__(
        self,
        limit_usd: float | None,
        spent_usd: float = 0.0,
        notify: Callable[[str], None] = lambda _: None,
    ):
        self.limit = limit_usd
        self.spent = spent_usd
        self.notify = notify
        self._lock = threading.Lock()
        self._crossed = {t for t in THRESHOLDS if limit_usd and spent_usd >= t * limit_usd}

    def may_start(self) -> bool:
        """True while the spend is below the limit (always, without a limit)."""
        with self._lock:
            return self.limit is None or self.spent < self.limit

    def add(self, cost_usd: float) -> None:
        """Record what a finished run cost, and report thresholds it crossed."""
        with self._lock:
            self.spent += cost_usd
            if not self.limit:
                return
            for threshold in THRESHOLDS:
                if threshold not in self._crossed and self.spent >= threshold * self.limit:
                    self._crossed.add(threshold)
                    self.notify(
                        f"budget: {threshold:.0%} reached ({usd(self.spent)} of "
                        f"{usd(self.limit)} spent)"
                    )

    def describe(self) -> str:
        """One line: what was spent of what."""
        return f"{usd(self.spent)} of {usd(self.limit or 0)} spent"


def usd(amount: float) -> str:
    """An amount in US dollars with the digits a small agent cost needs ($0.0033, not $0.00),
    and two decimals where more say nothing ($12.50)."""
    text = f"{amount:,.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
