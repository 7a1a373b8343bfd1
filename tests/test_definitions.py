"""What Dagster sees: one asset group per campaign, partitions, checks, jobs, sensors, schedules."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster import AssetKey

from orchestrator_assets.assets.history import REMOVED, asset_key
from orchestrator_assets.definitions import build_definitions
from orchestrator_assets.spec.campaign import load_campaign
from orchestrator_assets.spec.settings import Settings
from resources.build import build_forge, build_resources
from resources.dagster_resources import ForgeResource
from resources.forges.base import ForgeError
from resources.notify import WEBHOOK_ENV, NotifierResource, SlackNotifier, no_notifier
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
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.STARTED,
                asset_selection=frozenset({AssetKey(["fresh", "change"])}),
            )
        )
    assert "waiting for 1 run(s)" in tick()[1].skip_message


# --- secrets are Dagster EnvVars ------------------------------------------------------------------


def test_the_github_token_is_an_env_var_read_when_a_run_starts(tmp_path, monkeypatch):
    """The forge resource's token is `dg.EnvVar(<variable>)`: the definitions (what the UI shows)
    hold the variable's name, a run gets the value, and without it the error names it."""

    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path))
    settings = Settings(forge="github", github_token_env="ORCH_TEST_GH_PAT")
    forge = build_resources(settings)["forge"]
    assert isinstance(forge, ForgeResource)
    assert isinstance(forge.token, dg.EnvVar) and forge.token.env_var_name == "ORCH_TEST_GH_PAT"
    local = build_resources(Settings(forge="local"))["forge"]
    assert local.token == "" and not isinstance(local.token, dg.EnvVar)  # runs need no variable

    seen: list[tuple[str, str]] = []

    @dg.asset
    def uses_the_forge(forge: ForgeResource) -> None:
        seen.append((forge.token, type(forge.get()).__name__))

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize([uses_the_forge], resources={"forge": forge})

    monkeypatch.delenv("ORCH_TEST_GH_PAT", raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match='"ORCH_TEST_GH_PAT" which is not set'):
        run()  # Dagster refuses the run before it starts
    with pytest.raises(ForgeError, match="needs a token: set ORCH_TEST_GH_PAT"):
        build_forge(settings)  # outside a run (sensors, CLI)
    monkeypatch.setenv("ORCH_TEST_GH_PAT", "")
    with pytest.raises(ForgeError, match="needs a token: set GITHUB_TOKEN"):
        run()  # set but empty: the forge's own error, naming the default and the setting
    monkeypatch.setenv("ORCH_TEST_GH_PAT", "ghp_run_time_value")
    assert run().success
    assert seen == [("ghp_run_time_value", "GitHubForge")]
    assert type(build_forge(settings)).__name__ == "GitHubForge"


def test_the_slack_webhook_is_an_env_var_only_when_set(tmp_path, monkeypatch):
    """Notifications stay optional: the webhook's EnvVar is configured only when its variable
    is set (an unset EnvVar would fail every run), and `NotifierResource()` outside a run reads
    the same variable."""

    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    notifier = build_resources(Settings())["notifier"]
    assert notifier.webhook_url == "" and notifier.get() is no_notifier
    assert NotifierResource().get() is no_notifier

    @dg.asset
    def notifies(notifier: NotifierResource) -> None:
        assert notifier.webhook_url == "" and notifier.get() is no_notifier

    assert dg.materialize([notifies], resources={"notifier": notifier}).success

    monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:9/hook")
    notifier = build_resources(Settings())["notifier"]
    assert isinstance(notifier.webhook_url, dg.EnvVar)
    assert notifier.webhook_url.env_var_name == WEBHOOK_ENV
    assert isinstance(NotifierResource().get(), SlackNotifier)

    @dg.asset
    def notifies_slack(notifier: NotifierResource) -> None:
        assert notifier.webhook_url == "http://127.0.0.1:9/hook"
        assert isinstance(notifier.get(), SlackNotifier)

    assert dg.materialize([notifies_slack], resources={"notifier": notifier}).success
