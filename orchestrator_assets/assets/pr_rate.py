"""How many pull requests a campaign opened lately: what its `pull_request.max_per_hour` counts
from before this run."""

from __future__ import annotations

import dagster as dg
from dagster import DagsterInstance
from pydantic import ValidationError

from orchestrator_assets.assets import history
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.deliver import opened_a_pull_request
from orchestrator_assets.stages.records import PullRequestRecord

PAGE = 1000


def pull_requests_opened_since(
    instance: DagsterInstance, spec: CampaignSpec, since: float
) -> list[float]:
    """When (epoch seconds, oldest first) each pull request the campaign opened after `since`
    was recorded: its `pull_request` materializations after `since` whose record says a pull
    request was opened (a ready one, or a draft that awaits review)."""
    key = history.asset_key(spec, "pull_request")
    times: list[float] = []
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=since),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            meta = history.event_metadata(record.event_log_entry).get(history.RECORD)
            if meta is None:
                continue
            try:
                pr = PullRequestRecord.model_validate(meta.value)
            except ValidationError:
                continue  # a record of an older shape: not one this count can read
            if opened_a_pull_request(pr):
                times.append(record.timestamp)
        if not result.has_more:
            return times
        cursor = result.cursor
