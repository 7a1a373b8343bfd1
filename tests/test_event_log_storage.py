"""The embedded instance's event log (assets/event_log.py): Dagster's SQLite layout and queries,
with engines kept and commits synced at checkpoints. What users rely on: the instance the
platform writes uses it, a home made with Dagster's own storage reads on, a process that dies
after writing loses nothing, and the webserver still streams a run's events live."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import dagster as dg
import yaml
from dagster import DagsterInstance

from orchestrator_assets.assets.dagster_private import SqliteEventLogStorage
from orchestrator_assets.assets.event_log import CampaignEventLogStorage
from orchestrator_assets.spec.settings import Settings, ensure_dagster_home
from tests.conftest import Platform

PROJECT = Path(__file__).resolve().parents[1]


def materialized(instance: DagsterInstance, key: str) -> list[str | None]:
    records = instance.fetch_materializations(dg.AssetKey(key), limit=100).records
    return sorted(r.partition_key for r in records)


def test_the_sqlite_instance_uses_it_where_dagster_keeps_its_event_log(platform: Platform):
    home = Path(platform.env["DAGSTER_HOME"])
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["event_log_storage"]["class"] == "CampaignEventLogStorage"
    with platform.instance() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, CampaignEventLogStorage)
        assert Path(storage._base_dir) == home / "history" / "runs"  # Dagster's own place
        instance.report_runless_asset_event(dg.AssetMaterialization("a", partition="p1"))
    with platform.instance() as again:
        assert materialized(again, "a") == ["p1"]


def test_a_home_written_by_dagsters_own_storage_reads_on(tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())  # a plain copy
    with DagsterInstance.from_config(str(home)) as before:
        assert type(before.event_log_storage) is SqliteEventLogStorage
        before.report_runless_asset_event(dg.AssetMaterialization("a", partition="old"))
    ensure_dagster_home(Settings())  # the platform takes the home over
    with DagsterInstance.from_config(str(home)) as after:
        assert isinstance(after.event_log_storage, CampaignEventLogStorage)
        after.report_runless_asset_event(dg.AssetMaterialization("a", partition="new"))
        assert materialized(after, "a") == ["new", "old"]


WRITE_AND_DIE = """
import os, sys
import dagster as dg
from dagster import DagsterInstance
from dagster._core.utils import make_new_run_id
instance = DagsterInstance.from_config(sys.argv[1])
for i in range(20):
    instance.report_runless_asset_event(dg.AssetMaterialization("a", partition=f"p{i}"))
os._exit(0)  # no dispose, no checkpoint: as a run process killed after its writes
"""


def test_a_process_that_dies_after_writing_loses_nothing(platform: Platform):
    home = platform.env["DAGSTER_HOME"]
    subprocess.run(
        [sys.executable, "-c", WRITE_AND_DIE, home], env=platform.env, check=True, timeout=120
    )
    with platform.instance() as instance:
        assert materialized(instance, "a") == sorted(f"p{i}" for i in range(20))


def test_the_webserver_still_streams_a_runs_events_live(platform: Platform):
    """Dagster's SQLite watcher follows a run's `.db` file: each write must still change it.

    The run logs a step, then waits until the watcher (another instance, as the webserver is)
    has delivered it before logging the next: without live streaming it cannot finish."""
    delivered = {i: threading.Event() for i in range(3)}

    @dg.op
    def handshake(context) -> None:
        for i in range(3):
            context.log.info(f"step {i}")
            if not delivered[i].wait(timeout=30):
                raise RuntimeError(f"step {i} was not streamed to the watcher")

    @dg.job
    def streamed() -> None:
        handshake()

    def on_event(entry, _cursor) -> None:
        for i, seen in delivered.items():
            if entry.user_message == f"step {i}":
                seen.set()

    run_id = str(uuid.uuid4())
    with platform.instance() as watcher, platform.instance() as runner:
        watcher.watch_event_logs(run_id, None, on_event)
        try:
            result = streamed.execute_in_process(
                instance=runner, run_id=run_id, raise_on_error=False
            )
        finally:
            watcher.end_watch_event_logs(run_id, on_event)
    assert result.success, "a step's event did not reach the watcher while the run worked"
    assert all(seen.is_set() for seen in delivered.values())


TARGETS = dg.StaticPartitionsDefinition([f"t{i:03d}" for i in range(60)])


@dg.asset(partitions_def=TARGETS)
def change() -> None:
    pass


@dg.asset(partitions_def=TARGETS, deps=[change])
def pull_request() -> None:
    pass


def stored(instance: DagsterInstance) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The planned and the done materializations of both assets, as (asset, target)."""
    planned, done = [], []
    for key in ("change", "pull_request"):
        asset = dg.AssetKey(key)
        planned += [(key, r.partition_key) for r in
                    instance.fetch_planned_materializations(asset, limit=1000).records]  # fmt: skip
        done += [(key, r.partition_key) for r in
                 instance.fetch_materializations(asset, limit=1000).records]  # fmt: skip
    return sorted(planned), sorted(done)


def test_a_runs_planned_materializations_are_stored_together_as_dagster_stores_them(
    platform: Platform, tmp_path: Path, monkeypatch
):
    """A range run plans 120 materializations (60 targets, 2 assets): one batch, each event
    stored and indexed as Dagster's one-at-a-time path stores it (that path is the reference)."""
    job = dg.define_asset_job("both", [change, pull_request]).resolve(
        asset_graph=dg.Definitions(assets=[change, pull_request]).resolve_asset_graph()
    )
    tags = {
        "dagster/asset_partition_range_start": "t000",
        "dagster/asset_partition_range_end": "t059",
    }
    groups: list[int] = []
    store = CampaignEventLogStorage._store_asset_events
    monkeypatch.setattr(
        CampaignEventLogStorage, "_store_asset_events",
        lambda self, events: (groups.append(len(events)), store(self, events))[1],
    )  # fmt: skip
    with platform.instance() as instance:
        assert job.execute_in_process(instance=instance, tags=tags).success
        batched = stored(instance)
    assert max(groups) == 120  # the planned events in one transaction per file
    # Dagster's own path, one event at a time, on a fresh home: the same events stored.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "reference"))
    (tmp_path / "reference").mkdir()
    ensure_dagster_home(Settings())
    groups.clear()
    with DagsterInstance.from_config(str(tmp_path / "reference")) as reference:
        assert job.execute_in_process(instance=reference, tags=tags).success
        assert stored(reference) == batched
    assert groups == []  # nothing was batched there
    assert len(batched[0]) == len(batched[1]) == 120
