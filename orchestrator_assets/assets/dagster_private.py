"""The one place the project imports Dagster's private modules (`dagster._…`).

Everything else uses `dagster`'s public names. Each name below has no public equivalent in
Dagster 1.13 (checked against `dagster/__init__.py`); on an upgrade, this module is the list to
re-check, and a name that became public moves out of it.

Production code:

- `AssetCheckEvaluationTargetMaterializationData` (history.latest_materializations, used by
  assets/factory.py): the `target_materialization_data` argument of the public
  `dg.AssetCheckEvaluation`, which points an evaluation logged from a multi-target step at the
  materialization it checks (so the UI shows it as the target's current result). Dagster
  exports the evaluation but not this argument's type, and it can only be built by class.
- `PartitionKeyFilter` (history.latest_check_evaluations): the newest evaluation of each check
  for one partition. The public `DagsterInstance.get_latest_asset_check_evaluation_record`
  takes no partition, and no public call filters check evaluations by partition.
- `latest_storage_ids` (history's newest-per-target reads and latest_materializations): wraps
  `DagsterInstance.get_latest_storage_id_by_partition`, a method of the public instance that is
  not marked `@public`. It is the one indexed query for the newest event of every partition of an
  asset (`MAX(id) … GROUP BY partition` over the event log's `idx_events_by_asset_partition`
  index, the same SQL on SQLite and PostgreSQL); the public calls either take no partition
  (`get_latest_materialization_event`) or can only page through every event
  (`fetch_materializations`), which made the report read a campaign's whole history.
- `event_metadata_by_id` (history.latest_records and the other newest-per-target reads): the
  metadata of many events by storage id, read from the event log table (`SqlEventLogStorageTable`,
  `index_connection`) and parsed with `orjson` (the parse was a quarter of the report's time
  with `json`) plus Dagster's own `unpack_value` for just the entries asked for. The public
  `fetch_materializations(…storage_ids=…)` returns the same data but builds every event object
  first (about 0.4 ms an event: 12 s for a 10,000-target report, against a goal of 2 s). An
  event whose stored layout is not the one expected is read with Dagster's full deserialization
  instead, and a storage that is not SQL gets None (the caller
  then uses the public call), so a Dagster upgrade that changes the layout is slower, not wrong.
- `SqliteEventLogStorage`, `INDEX_SHARD_NAME`, `SQLITE_BUSY_TIMEOUT_SECONDS` (assets/event_log.py):
  the SQLite event log the embedded instance uses, subclassed to keep its engines (a
  dagster.yaml `event_log_storage` names a class; Dagster exports no SQLite storage class
  publicly), its index shard's name and its busy timeout.
- `ASSET_EVENTS`, `index_asset_events` (assets/event_log.py, `store_event_batch`): the event
  types Dagster mirrors into the index shard, and the steps of `SqlEventLogStorage.store_event`
  that do it (`prepare_insert_event`, `_store_asset_event_tags`, `_store_asset_event`), so that a
  batch of a run's asset events is stored in one transaction per file instead of one each.
  Dagster's own `store_event_batch` is a loop over `store_event` on SQLite.
- `SerializableErrorInfo` (assets/runner.py, `is_check_failure`): the type of a step failure's
  `error` in the event log; used in a type annotation only. Defined in `dagster_shared.error`
  (Dagster's support package, not part of `dagster`'s public API).
- `interrupts` (assets/fanout.py, `graceful_shutdown`): while a campaign runs in this process,
  `setup_interrupt_handlers` is replaced by a no-op so that `execute_in_process` does not point
  SIGTERM at Dagster's own handler (which would abort the step and drop the targets in flight).
  The public `dg.raise_execution_interrupts` only re-raises held interrupts; nothing public
  decides which signals Dagster takes over.
- `UnresolvedAssetJobDefinition` (sensors/review.py, report.py, schedules.py): the type
  `dg.define_asset_job` returns, named in the sensors' and the schedule's signatures; Dagster
  exports the function but not its return type (`dg.UnresolvedAssetJobDefinition` does not
  exist: those annotations only worked because they were never evaluated).

Tests only (kept here too, so the list is complete):

- `set_defs_state_storage` (tests/conftest.py): clears the context variable Dagster leaves set
  between tests (a stale value points at a closed instance).
- `BulkActionStatus` (tests/test_ui.py): the status of a backfill launched from the UI.
- `dagster_instance_config`, `process_config`, `resolve_to_config_type`,
  `class_from_code_pointer` (tests/test_images_deploy.py, tests/test_deploy_k8s.py): validate the
  deploy folders' dagster.yaml files the way the instance loads them, class by class.
- `PartitionKeyFilter` (tests/test_campaign_e2e.py, tests/test_multi_target.py): as above.

Benchmarks only:

- `store_runless_materializations` (benchmarks/scale.py): writes many runless materializations
  into the event log's index in one transaction, as `report_runless_asset_event` stores each one
  (event row, asset and tag indexes) but without the per-event connection and transaction, and
  without the SQLite per-run shard copy that asset queries do not read. Seeding 10,000 targets
  with 5 runs of history one event at a time takes about 20 minutes; nothing public writes events
  in bulk (`EventLogStorage.store_event_batch` is a loop over `store_event` on SQLite).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
import sqlalchemy as db
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    EventLogEntry,
    MetadataValue,
)
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.events import ASSET_EVENTS, StepMaterializationData
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes.config_class import class_from_code_pointer
from dagster._utils import interrupts
from dagster_shared.error import SerializableErrorInfo
from dagster_shared.serdes import deserialize_value, unpack_value


def latest_storage_ids(
    instance: DagsterInstance,
    key: AssetKey,
    event_type: DagsterEventType,
    partitions: Collection[str] | None,
) -> Mapping[str, int]:
    """The storage id of the newest `event_type` event of each partition of `key` (of
    `partitions` only, when given: an empty collection gives nothing, not every partition)."""
    if partitions is not None and not partitions:
        return {}
    return instance.get_latest_storage_id_by_partition(
        key, event_type, set(partitions) if partitions is not None else None
    )


class StoredEvent(NamedTuple):
    """What the newest-record reads need of one asset event: where and when, and its metadata
    values (plain values, as `MetadataValue.value` gives them)."""

    storage_id: int
    partition: str | None
    timestamp: float
    metadata: dict[str, Any]


_JSON_ENTRIES = ("JsonMetadataEntryData", "JsonMetadataValue")


def _stored_metadata(data: dict, labels: Collection[str] | None) -> dict[str, Any]:
    """Metadata values out of a serialized materialization or observation (KeyError, TypeError
    or ValueError when the layout is not the expected one)."""
    entries = data.get("metadata_entries")
    if entries is None:  # a layout keyed by label, should Dagster store one
        pairs = list(data["metadata"].items())
    else:
        pairs = [(entry["label"], entry["entry_data"]) for entry in entries]
    found: dict[str, Any] = {}
    for label, packed in pairs:
        if labels is not None and label not in labels:
            continue
        if not isinstance(packed, dict) or "__class__" not in packed:
            raise ValueError(f"unexpected metadata entry {label!r}")
        if packed["__class__"] in _JSON_ENTRIES and isinstance(packed.get("data"), dict | list):
            found[label] = packed["data"]  # plain JSON (a model dump): nothing to unpack
        else:
            value = unpack_value(dict(packed))
            if not isinstance(value, MetadataValue):
                raise ValueError(f"unexpected metadata entry {label!r}")
            found[label] = value.value
    return found


def event_metadata_by_id(
    instance: DagsterInstance, storage_ids: Sequence[int], labels: Collection[str] | None = None
) -> dict[int, StoredEvent] | None:
    """The asset events with these storage ids, their metadata limited to `labels` (None: all);
    None when the event log is not SQL (see the module docstring)."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return None
    table = SqlEventLogStorageTable
    query = db.select(table.c.id, table.c.partition, table.c.event).where(
        table.c.id.in_(list(storage_ids))
    )
    with storage.index_connection() as conn:
        rows = conn.execute(query).fetchall()
    found: dict[int, StoredEvent] = {}
    for storage_id, partition, text in rows:
        try:
            stored = orjson.loads(text)
            data = stored["dagster_event"]["event_specific_data"]
            inner = data.get("materialization") or data.get("asset_observation")
            metadata = _stored_metadata(inner, labels)
            timestamp = float(stored["timestamp"])
        except (KeyError, TypeError, ValueError, AttributeError):
            entry = deserialize_value(text, EventLogEntry)
            event = entry.dagster_event
            payload = event.event_specific_data if event else None
            inner = getattr(payload, "materialization", None) or getattr(
                payload, "asset_observation", None
            )
            values = dict(inner.metadata) if inner is not None else {}
            metadata = {k: v.value for k, v in values.items() if labels is None or k in labels}
            timestamp = entry.timestamp
        found[storage_id] = StoredEvent(storage_id, partition, timestamp, metadata)
    return found


def store_runless_materializations(
    instance: DagsterInstance, materializations: Sequence[AssetMaterialization]
) -> None:
    """Store runless materializations in bulk (a benchmark's seeding; see the module docstring)."""
    # SqlEventLogStorage's own steps of `store_event`, with one index transaction for all events.
    storage: Any = instance.event_log_storage
    entries = [
        EventLogEntry(
            user_message="",
            level=logging.INFO,
            job_name=RUNLESS_JOB_NAME,
            run_id=RUNLESS_RUN_ID,
            error_info=None,
            timestamp=time.time(),
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                event_specific_data=StepMaterializationData(m),
                job_name=RUNLESS_JOB_NAME,
            ),
        )
        for m in materializations
    ]
    with storage.index_transaction() as conn:
        index_asset_events(
            storage, conn, entries, [storage.prepare_insert_event(e) for e in entries]
        )


def index_asset_events(
    storage: SqlEventLogStorage, conn: Any, entries: Sequence[EventLogEntry], inserts: Sequence[Any]
) -> None:
    """Add asset events to the event log's index within the transaction `conn`, as
    `SqlEventLogStorage.store_event` does for each (the event row, its tags, the asset's row);
    `inserts` are the events' `prepare_insert_event` statements."""
    for entry, insert in zip(entries, inserts, strict=True):
        event_id = conn.execute(insert).inserted_primary_key[0]
        if event_id is None:
            raise DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
        storage._store_asset_event_tags(conn, [entry], [event_id])
        storage._store_asset_event(conn, entry, event_id)


__all__ = [
    "ASSET_EVENTS",
    "INDEX_SHARD_NAME",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "AssetCheckEvaluationTargetMaterializationData",
    "BulkActionStatus",
    "PartitionKeyFilter",
    "SerializableErrorInfo",
    "SqliteEventLogStorage",
    "StoredEvent",
    "UnresolvedAssetJobDefinition",
    "class_from_code_pointer",
    "dagster_instance_config",
    "event_metadata_by_id",
    "index_asset_events",
    "interrupts",
    "latest_storage_ids",
    "process_config",
    "resolve_to_config_type",
    "set_defs_state_storage",
    "store_runless_materializations",
]
