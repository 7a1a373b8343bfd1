"""What Dagster sees: one asset group per campaign, partitions, checks, jobs, sensors, schedules."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster import AssetKey

from orchestrator_assets.assets.history import REMOVED, asset_key
from orchestrator_assets.definitions import build_definitions
from orchestrator_assets.spec.campaign import load_campaign
from sensors.discovery import build_discovery_sensor
from sensors.schedules import build_schedule
from tests.conftest import Platform, statuses

PROJECT = Path(__file__).resolve().parents[1]


def test_each_campaign_is_an_asset_group_with_blocking_checks(platform: Platform):
    platform.write_campaign("first", targets=["/srv/acme/a.git"], schedule="0 6 * * 1")
    platform.write_campaign(
        "second-one",
        targets=["/srv/acme/b.git"],
        verifiers=[
            {"name": "unit-tests", "command": "pytest"},
            {"name": "lint", "command": "ruff"},
        ],
    )
    (platform.campaigns / "broken.yaml").write_text("name: broken\n")
    defs = build_definitions(platform.settings())
    graph = defs.resolve_asset_graph()
    for campaign in ("first", "second_one"):
        keys = {k for k in graph.get_all_asset_keys() if k.path[0] == campaign}
        assert keys == {
            AssetKey([campaign, s]) for s in ("change", "verification", "pull_request", "report")
        }
        change = graph.get(AssetKey([campaign, "change"]))
        assert change.group_name == campaign
        assert isinstance(change.partitions_def, dg.DynamicPartitionsDefinition)
        assert change.partitions_def.name == f"{campaign}_targets"
        assert graph.get(AssetKey([campaign, "report"])).partitions_def is None
    checks = {(k.asset_key.path[0], k.name) for k in graph.asset_check_keys}
    assert checks == {("first", "test"), ("second_one", "unit_tests"), ("second_one", "lint")}
    verification = defs.resolve_assets_def(AssetKey(["second_one", "verification"]))
    assert all(spec.blocking for spec in verification.check_specs)
    assert defs.resolve_job_def("first_targets") and defs.resolve_job_def("second_one_report")
    assert defs.resolve_schedule_def("first_schedule").cron_schedule == "0 6 * * 1"
    assert {s.name for s in defs.sensors} >= {"first_discovery", "second_one_discovery"}
    assert not any(s.name.startswith("broken") for s in defs.sensors)  # bad file left out


def test_dagster_definitions_validate_passes_on_the_workspace(platform: Platform):
    platform.write_campaign("first", targets=["/srv/acme/a.git"])
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT, env=platform.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_discovery_sensor_adds_targets_and_marks_removed_ones(platform: Platform):
    path = platform.write_campaign("disco", targets=["/srv/acme/a.git", "/srv/acme/b.git"])
    spec = load_campaign(path)
    with platform.instance() as instance:
        sensor = build_discovery_sensor(spec)
        result = sensor(dg.build_sensor_context(instance=instance))
        (request,) = result.dynamic_partitions_requests
        assert request.partition_keys == ["acme__a", "acme__b"]
        instance.add_dynamic_partitions(spec.partitions_name, request.partition_keys)
        cursor = result.cursor

        # b leaves the campaign, c joins: c is added, b is marked (not deleted)
        platform.write_campaign("disco", targets=["/srv/acme/a.git", "/srv/acme/c.git"])
        spec = load_campaign(path)
        result = build_discovery_sensor(spec)(
            dg.build_sensor_context(instance=instance, cursor=cursor)
        )
        assert result.dynamic_partitions_requests[0].partition_keys == ["acme__c"]
        (mark,) = result.asset_events
        assert mark.asset_key == asset_key(spec, "change") and mark.partition == "acme__b"
        assert mark.metadata[REMOVED].value is True
        assert "removed" in json.loads(result.cursor) and "acme__b" in result.cursor
        # nothing changed: the next tick skips
        instance.add_dynamic_partitions(spec.partitions_name, ["acme__c"])
        skip = build_discovery_sensor(spec)(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        )
        assert isinstance(skip, dg.SkipReason)
        assert instance.get_dynamic_partitions(spec.partitions_name) == [
            "acme__a",
            "acme__b",
            "acme__c",
        ]


@pytest.mark.usefixtures("bwrap")
def test_removed_target_keeps_its_history_as_skipped(platform: Platform):
    fleet = [str(p) for p in platform.make_fleet()]
    path = platform.write_campaign("shrink", targets=fleet[:2])
    platform.run(path)
    platform.write_campaign("shrink", targets=fleet[:1])
    outcome = platform.run(path)
    got = statuses(outcome.report)
    assert got == {"acme__alpha": "pr_open", "acme__beta": "skipped"}
    row = outcome.report.set_index("target").loc["acme__beta"]
    assert row["pr_url"].startswith("file://")  # what it had is still there
    platform.write_campaign("shrink", targets=fleet[:2])
    assert statuses(platform.run(path).report)["acme__beta"] == "pr_open"


def test_schedule_requests_one_run_per_range_of_targets(platform: Platform):
    path = platform.write_campaign(
        "nightly", targets=["/srv/acme/a.git", "/srv/acme/b.git"], schedule="0 3 * * *"
    )
    spec = load_campaign(path)
    schedule = build_schedule(spec, dg.define_asset_job("nightly_targets"))
    when = datetime(2026, 11, 25, 3, tzinfo=UTC)
    with platform.instance() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        assert "discovery sensor has not run" in schedule.evaluate_tick(context).skip_message
        instance.add_dynamic_partitions(spec.partitions_name, ["acme__a", "old__x", "acme__b"])
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        first, second = schedule.evaluate_tick(context).run_requests
    assert first.tags["dagster/asset_partition_range_start"] == "acme__a"
    assert first.tags["dagster/asset_partition_range_end"] == "acme__a"
    assert second.tags["dagster/asset_partition_range_start"] == "acme__b"
    assert first.run_key != second.run_key and first.run_key.startswith("2026-11-25T03:00")


@pytest.mark.usefixtures("bwrap")
def test_report_refresh_sensor_requests_a_report_after_prs(platform: Platform):
    from dagster._core.utils import make_new_run_id

    path = platform.write_campaign("fresh", targets=[str(platform.make_fleet()[0])])

    def tick(cursor=None):
        # Definitions load with an instance open, as in a code server (Dagster keeps a global
        # pointer to the current instance's state storage while loading).
        with platform.instance() as instance:
            defs = build_definitions(platform.settings())
            sensor = defs.resolve_sensor_def("fresh_report_refresh")
            repo = defs.get_repository_def()
            context = dg.build_sensor_context(instance=instance, repository_def=repo, cursor=cursor)
            return sensor, sensor.evaluate_tick(context)

    assert "no pull request delivered yet" in tick()[1].skip_message
    platform.run(path)
    sensor, result = tick()
    (request,) = result.run_requests
    assert sensor.job_name == "fresh_report" and request.run_key.startswith("report-")
    assert "up to date" in tick(result.cursor)[1].skip_message  # nothing new since

    # a PR status change (an observation on pull_request) asks for a new report
    with platform.instance() as instance:
        instance.report_runless_asset_event(
            dg.AssetObservation(
                AssetKey(["fresh", "pull_request"]), partition="acme__alpha",
                metadata={"pr_state": "merged"},
            )
        )  # fmt: skip
    (again,) = tick(result.cursor)[1].run_requests
    assert again.run_key != request.run_key

    # while a run of the campaign's targets is in progress, it waits
    with platform.instance() as instance:
        instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB",
                run_id=make_new_run_id(),
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset({AssetKey(["fresh", "change"])}),
            )
        )
    assert "waiting for 1 run(s)" in tick()[1].skip_message
