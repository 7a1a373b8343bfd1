"""Many targets in one run record exactly what one run per target records."""

from __future__ import annotations

import re

import pytest
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter

from orchestrator_assets.assets.dagster_private import PartitionKeyFilter
from orchestrator_assets.demo_fleet import create_fleet
from tests.conftest import FLEET, Platform

pytestmark = pytest.mark.usefixtures("bwrap")

STAGES = ("change", "verification", "pull_request")
# Differ between any two runs (timing, commit shas, where the fleet lives), not in what was done.
VOLATILE = {"duration_s", "reused", "url", "record", "output", "diff", "repo", "base_sha"}


def normal(value, campaign: str):
    """A metadata value without what differs between two campaigns: names, shas, paths."""
    if not isinstance(value, str):
        return value
    return re.sub(r"\b[0-9a-f]{7,40}\b", "<sha>", value.replace(campaign, "<campaign>"))


def recorded(platform: Platform, campaign: str, targets: list[str]) -> dict:
    """Per target: the metadata of each stage's materializations and each check evaluation."""
    out: dict = {}
    with platform.instance() as instance:
        for target in targets:
            row: dict = {}
            for stage in STAGES:
                records = instance.fetch_materializations(
                    AssetRecordsFilter(AssetKey([campaign, stage]), asset_partitions=[target]),
                    limit=10,
                ).records
                row[stage] = [
                    {
                        k: normal(v.value, campaign)
                        for k, v in r.asset_materialization.metadata.items()
                        if k not in VOLATILE
                    }
                    for r in records
                ]
            check = AssetCheckKey(AssetKey([campaign, "verification"]), "test")
            latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [check], partition_filter=PartitionKeyFilter(key=target)
            ).get(check)
            evaluation = latest.event.dagster_event.event_specific_data if latest else None
            row["check"] = (  # None: planned but nothing to verify (the UI shows it skipped)
                (evaluation.passed, evaluation.metadata["exit_code"].value)
                if hasattr(evaluation, "passed")
                else None
            )
            out[target] = row
    return out


def test_one_run_for_all_targets_records_what_one_run_per_target_records(platform: Platform):
    together = platform.write_campaign("together", targets=[str(p) for p in platform.make_fleet()])
    apart_fleet = create_fleet(platform.root / "other", FLEET)
    apart = platform.write_campaign("apart", targets=[str(p) for p in apart_fleet])
    targets = ["acme__alpha", "acme__beta", "acme__gamma", "acme__delta", "acme__epsilon"]

    range_run = platform.run(together)
    assert len(range_run.run_ids) == 1  # every target in one run
    for target in targets:
        single = platform.run(apart, targets=[target])
        assert len(single.run_ids) == 1

    got_together = recorded(platform, "together", targets)
    got_apart = recorded(platform, "apart", targets)
    assert got_together == got_apart
    # and what they record is the campaign's real outcome, not nothing
    assert got_together["acme__alpha"]["pull_request"][0]["state"] == "open"
    assert got_together["acme__epsilon"]["check"] == (False, 1)
    assert got_together["acme__alpha"]["check"] == (True, 0)
    assert got_together["acme__gamma"]["verification"][0]["skipped"] == "no change"
    assert got_together["acme__gamma"]["check"] is None
    assert got_together["acme__delta"]["change"][0]["outcome"] == "failed"
    assert all(len(got_together[t]["change"]) == 1 for t in targets)  # one materialization each
