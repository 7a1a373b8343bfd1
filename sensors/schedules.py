"""Schedules from campaign specs: re-run a campaign over its current targets."""

from __future__ import annotations

import dagster as dg

from orchestrator_assets.assets.dagster_private import UnresolvedAssetJobDefinition
from orchestrator_assets.assets.partitions import contiguous_ranges, range_tags
from orchestrator_assets.spec.campaign import CampaignSpec


def build_schedule(spec: CampaignSpec, job: UnresolvedAssetJobDefinition):
    """A schedule on the campaign's cron that requests one run per contiguous range of targets."""
    assert spec.schedule is not None

    @dg.schedule(
        name=f"{spec.id}_schedule",
        cron_schedule=spec.schedule,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-runs campaign {spec.name} on `{spec.schedule}`.",
    )
    def rerun(context: dg.ScheduleEvaluationContext):
        ordered = context.instance.get_dynamic_partitions(spec.partitions_name)
        wanted = [t.key for t in spec.targets]
        ranges = contiguous_ranges(ordered, wanted)
        if not ranges:
            return dg.SkipReason("no partitions yet: the discovery sensor has not run")
        stamp = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(run_key=f"{stamp}:{start}", tags=range_tags(start, end))
            for start, end in ranges
        ]

    return rerun
