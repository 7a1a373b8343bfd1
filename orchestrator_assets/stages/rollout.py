"""Rollout waves: which wave each target belongs to, which waves are open, and when the rollout
halts. Free of Dagster: it reads each target's report status (and PR checks) and says whether a
target may publish.

Waves are cumulative counts of targets in the campaign's target order (`spec.rollout.waves`). A
wave is open when every target of the waves before it is settled: its PR merged (or, with
`wait_for: checks_green`, its checks green), or it needs no PR (no change, removed), or it
failed. A wave's failure rate is the share of its targets whose PR checks failed, whose PR was
closed unmerged, or which failed outright; when an open wave's rate passes
`halt_failure_rate` the rollout halts and no further wave opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.rollout import Rollout
from orchestrator_assets.stages.status import TargetStatus

WAITING = "waiting for wave {wave}"
HALTED = "rollout halted: {why}"

# statuses that end a target badly (counted against its wave) and those that need no PR
FAILED = frozenset(
    {
        TargetStatus.SETUP_FAILED, TargetStatus.CHANGE_FAILED, TargetStatus.VERIFICATION_FAILED,
        TargetStatus.JUDGE_VETOED, TargetStatus.PR_FAILED, TargetStatus.REJECTED,
        TargetStatus.CLOSED,
    }
)  # fmt: skip
NOTHING_TO_SHIP = frozenset({TargetStatus.NO_CHANGE, TargetStatus.SKIPPED})


@dataclass(frozen=True)
class TargetState:
    """What the rollout needs to know of one target: its report status and its PR's checks."""

    status: str
    checks: str | None = None


@dataclass
class Wave:
    """One wave: its number (1-based), targets, and how far they got."""

    number: int
    targets: list[str]
    settled: int = 0
    failed: int = 0
    open: bool = False

    @property
    def failure_rate(self) -> float:
        """The share of the wave's targets that failed."""
        return self.failed / len(self.targets) if self.targets else 0.0

    def describe(self) -> str:
        """One line: the wave's size, how many settled and failed, and whether it is open."""
        state = "open" if self.open else "waiting"
        return (
            f"wave {self.number}: {len(self.targets)} target(s), {self.settled} settled, "
            f"{self.failed} failed ({state})"
        )


@dataclass
class Standing:
    """Where a campaign's rollout stands: its waves, the newest open one, and why it halted."""

    waves: list[Wave]
    halted: str | None = None
    wave_of: dict[str, int] = field(default_factory=dict)

    @property
    def open_wave(self) -> int:
        """The number of the newest open wave (0: none)."""
        return max((w.number for w in self.waves if w.open), default=0)

    def hold_reason(self, key: str) -> str | None:
        """Why `key` may not publish yet (None: it may): its wave is not open, or the rollout
        halted before reaching it."""
        wave = self.wave_of.get(key)
        if wave is None:
            return None  # not a target the rollout knows (a new one): the last wave's rule
        if self.halted is not None and wave > self.open_wave:
            return HALTED.format(why=self.halted)
        if wave > self.open_wave:
            return WAITING.format(wave=wave)
        return None

    def describe(self) -> str:
        """A short text for the report and the CLI."""
        total = len(self.waves)
        head = f"wave {self.open_wave} of {total} open"
        if self.halted:
            head += f"; halted: {self.halted}"
        elif self.open_wave == total:
            head += " (the last)"
        return head + "\n" + "\n".join(f"- {w.describe()}" for w in self.waves)


def waves_of(rollout: Rollout, keys: list[str]) -> list[list[str]]:
    """The targets of each wave, in order (`keys`: the campaign's target order)."""
    start, found = 0, []
    for end in rollout.bounds(len(keys)):
        found.append(keys[start:end])
        start = end
    return found


def is_settled(state: TargetState, wait_for: str) -> bool:
    """True when a target no longer holds back the next wave."""
    status = TargetStatus(state.status)
    if status in FAILED or status in NOTHING_TO_SHIP or status == TargetStatus.MERGED:
        return True
    return (
        wait_for == "checks_green"
        and status == TargetStatus.PR_OPEN
        and (state.checks == "success")
    )


def is_failed(state: TargetState) -> bool:
    """True when a target counts against its wave's failure rate."""
    status = TargetStatus(state.status)
    return status in FAILED or (status == TargetStatus.PR_OPEN and state.checks == "failure")


def standing(spec: CampaignSpec, states: Mapping[str, TargetState]) -> Standing | None:
    """The rollout's standing given each target's state (None: the campaign has no rollout)."""
    rollout = spec.rollout
    if rollout is None:
        return None
    keys = [t.key for t in spec.targets]
    waves: list[Wave] = []
    wave_of: dict[str, int] = {}
    for number, members in enumerate(waves_of(rollout, keys), start=1):
        wave = Wave(number, members)
        for key in members:
            wave_of[key] = number
            state = states.get(key, TargetState(TargetStatus.PENDING.value))
            wave.settled += is_settled(state, rollout.wait_for)
            wave.failed += is_failed(state)
        waves.append(wave)
    result = Standing(waves, wave_of=wave_of)
    for wave in waves:
        wave.open = True
        if wave.failure_rate > rollout.halt_failure_rate:
            result.halted = (
                f"wave {wave.number} failure rate {wave.failure_rate:.0%} > "
                f"{rollout.halt_failure_rate:.0%} ({wave.failed} of {len(wave.targets)} failed)"
            )
            break
        if wave.settled < len(wave.targets):
            break
    return result


def max_prs_per_hour(spec: CampaignSpec) -> int | None:
    """The campaign's PR rate limit: the lower of `pull_request.max_per_hour` and
    `rollout.max_prs_per_hour` (None: no limit)."""
    limits = [spec.pull_request.max_per_hour]
    if spec.rollout is not None:
        limits.append(spec.rollout.max_prs_per_hour)
    given = [n for n in limits if n is not None]
    return min(given) if given else None


def rollout_hold(current: Standing | None, key: str) -> str | None:
    """The deliver stage's rollout gate: why a target without a PR may not publish yet (None:
    it may, or the campaign has no rollout)."""
    return current.hold_reason(key) if current is not None else None
