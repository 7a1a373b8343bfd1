"""What every stage works with: the outside systems of a run (`Workbench`), a follow-up pass,
the campaign's pull request rate (`PullRequestLimiter`), and the callbacks for logs and
notifications."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator_assets.spec.steps import JudgeConfig
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.budget import Budget
from resources import cancel
from resources.agents.base import Agent
from resources.agents.judge import Verdict
from resources.env_cache import DEFAULT_MANIFESTS, EnvCache
from resources.forges.base import Forge
from resources.repo_cache import RepoCache
from resources.sandboxes.base import SandboxProvider

if TYPE_CHECKING:
    from orchestrator_assets.stages.rollout import Standing

Log = Callable[[str], None]
Notify = Callable[[str, str], None]  # (event kind, message)
Judge = Callable[[str, str, JudgeConfig], Verdict]  # (request, diff, config) -> verdict


@dataclass
class FollowUp:
    """A further pass over a target's existing change: a reviewer's steer (the agent's session
    resumed with a new prompt), a partial approval (the change cut down to some files), or a
    repair after a failed verifier."""

    kind: str  # steer | partial | repair | judge (the kinds of `Iteration`)
    prompt: str | None = None
    files: list[str] = field(default_factory=list)
    decision_id: str | None = None
    # start from the base as it is now, not from the change (a CI repair after a conflict)
    onto_base: bool = False


HOUR_S = 3600.0


@dataclass
class PullRequestLimiter:
    """At most `per_hour` pull requests opened by one campaign in any hour (its
    `pull_request.max_per_hour`): rollout pacing that spares the targets' CI.

    Shared by the targets of a run; `opened` starts with the times (epoch seconds) of the pull
    requests the campaign's records say were opened in the last hour, so a re-run counts them
    too. A target waits for a slot up to `patience_s`; a slot further away is left to a later
    run (`deliver` holds the target, pending). `clock` and `sleep` (True: the wait was
    cancelled) are injectable so tests decide without waiting.
    """

    per_hour: int
    opened: list[float] = field(default_factory=list)
    patience_s: float = 300.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], bool] = cancel.sleep
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> float | None:
        """Take a slot now: None when taken, else when (epoch seconds) the next one opens."""
        with self._lock:
            now = self.clock()
            self.opened = sorted(t for t in self.opened if t > now - HOUR_S)
            if len(self.opened) < self.per_hour:
                self.opened.append(now)
                return None
            return self.opened[-self.per_hour] + HOUR_S

    def give_back(self) -> None:
        """Return the slot taken last by a creation that failed (no pull request was opened)."""
        with self._lock:
            if self.opened:
                self.opened.pop()

    def acquire(self) -> float | None:
        """Take a slot, waiting for it up to `patience_s`: None when taken, else when the next
        slot opens (further away than the patience, or the wait was cancelled)."""
        while True:
            next_slot = self.take()
            if next_slot is None:
                return None
            wait = next_slot - self.clock()
            if wait > self.patience_s or self.sleep(max(wait, 0.0)):
                return next_slot


@dataclass
class Workbench:
    """The outside systems a stage works with."""

    forge: Forge
    cache: RepoCache
    sandboxes: SandboxProvider
    author: tuple[str, str] = ("Campaign Bot", "campaigns@localhost")
    network: bool = False
    default_timeout_s: int = 900
    agent: Agent | None = None
    agent_homes: Path | None = None  # per campaign and target: the agent's session store
    transcripts: Path | None = None  # per campaign and target: the agent's event streams
    budget: Budget = field(default_factory=lambda: Budget(None))
    profile_setup: list = field(default_factory=list)  # setup when the campaign names none
    setup_network: bool = True
    setup_timeout_s: int = 900
    profile_name: str = "default"
    env_cache: EnvCache | None = None
    cache_paths: list[str] = field(default_factory=lambda: [".venv"])
    manifests: list[str] = field(default_factory=lambda: list(DEFAULT_MANIFESTS))
    use_cache: bool = True  # False: redo changes and setup whose inputs did not change
    tags: dict[str, str] = field(default_factory=dict)  # campaign and run, on every sandbox
    environment: str = "local"  # the sandbox's image, part of a change's cache key
    output_lines: int = 200  # lines of each command's output streamed into the run log
    notify: Notify = field(default=lambda kind, message: None)  # optional notifier
    judge: Judge | None = None  # the LLM judge (agentic campaigns with `judge:`)
    pr_limiter: PullRequestLimiter | None = None  # the campaign's `pull_request.max_per_hour`
    rollout: Standing | None = None  # the rollout's waves (stages/rollout.py): who may publish
    # a mirror fetched this recently (by the run's prefetch) is not fetched again by a change
    mirror_fresh_s: float = 0.0
    # the profile's `command_slots`, shared by the run's workers (None: no cap)
    command_slots: threading.Semaphore | None = None

    @contextmanager
    def command_slot(self) -> Iterator[None]:
        """Hold one of the run's command slots while a transformation's or a verifier's command
        runs (waiting for one when all are taken)."""
        if self.command_slots is None:
            yield
            return
        with self.command_slots:
            yield

    def open_sandbox(self, stage: str, target: Target):
        """A sandbox for one stage of one target, tagged with campaign, target and run."""
        return self.sandboxes.open(f"{stage}-{target.key}", {**self.tags, "target": target.key})

    def streamer(self, target: Target, what: str, log: Log):
        """An output callback that passes a command's first lines into the run log."""
        left = [self.output_lines]

        def on_output(line: str) -> None:
            if left[0] > 0:
                left[0] -= 1
                log(f"{target.key} | {what}: {line}")
            elif left[0] == 0:
                left[0] -= 1
                log(f"{target.key} | {what}: … (further output in the output tail)")

        return on_output


def quiet(_: str) -> None:
    """A log that drops what it is given: the default where a caller wants no output."""
    return None
