"""Refreshes a campaign's report once pull requests were (re)delivered and its runs are done."""

from __future__ import annotations

import dagster as dg

from orchestrator_assets.assets import history
from orchestrator_assets.assets.dagster_private import UnresolvedAssetJobDefinition
from orchestrator_assets.spec.campaign import CampaignSpec

# Runs still under way: the members of Dagster's internal IN_PROGRESS_RUN_STATUSES (1.13), named
# through the public enum. Queued and not-yet-started runs are not counted, as before.
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
]


def build_report_sensor(spec: CampaignSpec, report_job: UnresolvedAssetJobDefinition):
    """A sensor that requests the report job after new `pull_request` materializations or
    observations (PR status changes, bulk operations).

    It waits while a run of the campaign's targets is in progress (a backfill writes one
    materialization per target; the report is built once, after the last).
    """
    pr_key = history.asset_key(spec, "pull_request")
    stage_keys = {history.asset_key(spec, s) for s in ("change", "verification", "pull_request")}

    @dg.sensor(
        name=f"{spec.id}_report_refresh",
        job=report_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Rebuilds the report of campaign {spec.name} after its runs.",
    )
    def refresh(context: dg.SensorEvaluationContext):
        # PR deliveries, and what the PR status sensor and bulk operations observed since.
        latest = [
            *context.instance.fetch_materializations(pr_key, limit=1).records,
            *context.instance.fetch_observations(pr_key, limit=1).records,
        ]
        if not latest:
            return dg.SkipReason("no pull request delivered yet")
        newest = max(r.storage_id for r in latest)
        if newest <= int(context.cursor or 0):
            return dg.SkipReason("the report is up to date")
        running = [
            run
            for run in context.instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))
            if run.asset_selection and run.asset_selection & stage_keys
        ]
        if running:
            return dg.SkipReason(f"waiting for {len(running)} run(s) of the campaign to finish")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"report-{newest}")], cursor=str(newest)
        )

    return refresh
