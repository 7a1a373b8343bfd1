"""Keeping a campaign's dynamic partitions equal to its targets, and grouping them into runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterInstance

from orchestrator_assets.assets import history
from orchestrator_assets.spec.campaign import CampaignSpec

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@dataclass
class SyncPlan:
    """What to change so that the partitions match the targets."""

    add: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # to mark as removed (history kept)
    restored: list[str] = field(default_factory=list)  # marked removed, now a target again

    @property
    def empty(self) -> bool:
        """True when partitions already match the targets."""
        return not (self.add or self.removed or self.restored)


def plan_sync(existing: Sequence[str], targets: Sequence[str], marked: set[str]) -> SyncPlan:
    """Compare existing partitions (and those marked removed) with the campaign's targets."""
    have, want = set(existing), set(targets)
    return SyncPlan(
        add=[k for k in targets if k not in have],
        removed=sorted(have - want - marked),
        restored=sorted(marked & want),
    )


def removal_events(spec: CampaignSpec, plan: SyncPlan) -> list[dg.AssetObservation]:
    """Observations on `change` that mark targets removed from (or back in) the campaign."""
    key = history.asset_key(spec, "change")
    return [
        dg.AssetObservation(asset_key=key, partition=k, metadata={history.REMOVED: flag})
        for keys, flag in ((plan.removed, True), (plan.restored, False))
        for k in keys
    ]


def sync_partitions(instance: DagsterInstance, spec: CampaignSpec) -> SyncPlan:
    """Add partitions for new targets and mark removed ones, directly on the instance."""
    existing = instance.get_dynamic_partitions(spec.partitions_name)
    marked = history.removed_targets(instance, spec) if existing else set()
    plan = plan_sync(existing, [t.key for t in spec.targets], marked)
    if plan.add:
        instance.add_dynamic_partitions(spec.partitions_name, plan.add)
    for event in removal_events(spec, plan):
        instance.report_runless_asset_event(event)
    return plan


def contiguous_ranges(ordered: Sequence[str], selected: Sequence[str]) -> list[tuple[str, str]]:
    """Split `selected` into (start, end) runs of keys adjacent in the partition order."""
    wanted = set(selected)
    ranges: list[tuple[str, str]] = []
    start = prev = None
    for key in ordered:
        if key in wanted:
            start = start or key
            prev = key
        elif start is not None:
            ranges.append((start, prev))  # type: ignore[arg-type]
            start = None
    if start is not None:
        ranges.append((start, prev))  # type: ignore[arg-type]
    return ranges


def range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make one run cover the partition range start..end."""
    return {RANGE_START: start, RANGE_END: end}
