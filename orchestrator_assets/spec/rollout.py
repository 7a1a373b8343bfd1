"""Rollout settings of a campaign: publishing in waves (`rollout:`) and watching the default
branch after a merge (`post_merge:`)."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, field_validator

from orchestrator_assets.spec.steps import StrictModel

ALL = "all"


class Rollout(StrictModel):
    """Publish a campaign's pull requests in waves.

    `waves` are cumulative counts of targets in the campaign's target order: `[1, 10, 50, all]`
    publishes the first target, then up to the tenth, then up to the fiftieth, then every other
    one. A wave opens once every target of the waves before it meets `wait_for`; a wave whose
    failure rate passes `halt_failure_rate` halts the campaign (no further wave opens).
    """

    waves: list[int | Literal["all"]] = Field(
        min_length=1,
        description="cumulative target counts, increasing; `all` (last) for every target. "
        "Targets past the last count form a final wave",
    )
    wait_for: Literal["merged", "checks_green"] = Field(
        default="merged",
        description="what the targets of a wave must reach before the next one opens: their "
        "PRs merged, or their checks green",
    )
    max_prs_per_hour: int | None = Field(
        default=None,
        gt=0,
        description="open at most this many PRs in any hour (the same limiter as "
        "pull_request.max_per_hour; the lower of the two applies)",
    )
    halt_failure_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="halt the rollout when more than this share of an opened wave's targets "
        "failed (PR checks failed, PR closed unmerged, or the target failed)",
    )

    @field_validator("waves")
    @classmethod
    def _increasing(cls, value: list[int | str]) -> list[int | str]:
        counts = [v for v in value if v != ALL]
        if ALL in value and value.index(ALL) != len(value) - 1:
            raise ValueError("`all` can only be the last wave")
        if any(c <= 0 for c in counts):
            raise ValueError("wave sizes are target counts: positive integers (or `all`)")
        if any(b <= a for a, b in pairwise(counts)):
            raise ValueError(
                f"waves are cumulative target counts and must increase, got {counts} "
                "(e.g. [1, 10, 50, all])"
            )
        return value

    def bounds(self, targets: int) -> list[int]:
        """The cumulative count that ends each wave for a campaign of `targets` targets (the
        last wave always ends at `targets`; empty waves are dropped)."""
        ends: list[int] = []
        for wave in self.waves:
            end = targets if wave == ALL else min(int(wave), targets)
            if not ends or end > ends[-1]:
                ends.append(end)
        if not ends or ends[-1] < targets:
            ends.append(targets)
        return ends


class PostMerge(StrictModel):
    """After a campaign's PR merged, watch the target's default-branch checks for a while; a
    failure is recorded on the campaign and notified."""

    watch: str = Field(description="how long to watch after the merge, e.g. 30m, 2h, 1d")

    @field_validator("watch")
    @classmethod
    def _duration(cls, value: str) -> str:
        watch_seconds(value)
        return value

    @property
    def watch_s(self) -> float:
        """The watch in seconds."""
        return watch_seconds(self.watch)


def watch_seconds(text: str) -> float:
    """Seconds in a watch duration (`90s`, `30m`, `2h`, `1d`); ValueError for anything else."""
    from orchestrator_assets.stages.review import parse_duration

    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r}: the watch must be longer than 0")
    return seconds
