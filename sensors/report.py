"""Refreshes a campaign's report whenever pull requests were (re)delivered."""

from __future__ import annotations

import dagster as dg

from orchestrator_assets import history
from orchestrator_assets.spec import CampaignSpec


def build_report_sensor(spec: CampaignSpec, report_job: dg.UnresolvedAssetJobDefinition):
    """An asset sensor that requests the report job after new `pull_request` materializations."""

    @dg.asset_sensor(
        asset_key=history.asset_key(spec, "pull_request"),
        job=report_job,
        name=f"{spec.id}_report_refresh",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Rebuilds the report of campaign {spec.name} after its runs.",
    )
    def refresh(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        # One report run per pull_request materialization the sensor has not seen yet.
        return dg.RunRequest(run_key=f"report-{asset_event.run_id}-{asset_event.timestamp}")

    return refresh
