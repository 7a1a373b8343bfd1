"""The event log of the embedded SQLite instance: Dagster's own, with cheaper writes.

Dagster's `SqliteEventLogStorage` keeps one SQLite file per run plus an index file for asset
events, and opens every connection through a new SQLAlchemy engine with no pool. Each event
therefore pays for an engine, a commit synced to disk and, when the connection closes, a WAL
checkpoint synced again; an asset event pays it twice (run file and index). A campaign run writes
about eight events per target, so on a machine with slow `fsync` the event log was the largest
part of the platform's own time (benchmarks/README.md).

This storage changes only how connections are made; what is stored, where, and every query are
Dagster's:

- the index file keeps one connection open per process: no engine to make and no checkpoint on
  every close; its commits are synced one by one, as before;
- a run's file keeps one engine per run (the last few runs' only) and still closes its
  connection after each write, so the WAL checkpoint runs each time and changes the `.db` file
  the webserver watches to stream a run's events live. That checkpoint syncs the file, so the
  commit before it is not synced on its own (`synchronous=NORMAL`): one sync instead of two;
- a batch of events (Dagster batches a run's planned-materialization events, one per target and
  asset: 600 at the start of a 200-target run) stores each run's asset events in one transaction
  per file instead of two connections per event (about 5 ms each, every other target waiting).

It is the event log of the SQLite instance the platform writes (spec/settings.instance_config);
PostgreSQL instances use dagster-postgres unchanged.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster import EventLogEntry, Field, StringSource
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool

from orchestrator_assets.assets.dagster_private import (
    ASSET_EVENTS,
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
    index_asset_events,
)

RUN_ENGINES = 16  # engines kept for run files: a run process writes one; a webserver reads many
# Dagster passes events to `store_event_batch` only with its event batching on, which an
# environment variable turns on (read at each event; 0, Dagster's default, is off). The
# processes that use this storage turn it on unless it is set: events that come in a batch
# (a run's planned materializations) are then written together, the rest as before.
EVENT_BATCH_SIZE = "1000"


def _unsynced_commits(engine: Engine) -> Engine:
    """`engine`, its connections committing without syncing each commit (synchronous=NORMAL):
    the WAL is synced before each checkpoint instead."""

    @db.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class CampaignEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log with its engines kept (see the module docstring); configured
    like Dagster's (`base_dir`: the folder of the run files)."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._index_engine: Engine | None = None
        self._run_engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        super().__init__(base_dir, inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """The same configuration as Dagster's SQLite event log."""
        return {"base_dir": Field(StringSource)}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> CampaignEventLogStorage:
        """The storage a dagster.yaml `event_log_storage` entry describes."""
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The engine of `shard` (made once per process; a run file's while it is recent)."""
        with self._engines_lock:
            if self._engines_pid != os.getpid():  # a forked child: never share a parent's sockets
                self._index_engine, self._run_engines = None, OrderedDict()
                self._engines_pid = os.getpid()
            if shard == INDEX_SHARD_NAME:
                if self._index_engine is None:
                    # One connection for the process, used under Dagster's own `_db_lock`.
                    self._index_engine = db.create_engine(
                        self.conn_string_for_shard(shard),
                        poolclass=StaticPool,
                        connect_args={
                            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                            "check_same_thread": False,
                        },
                    )
                return self._index_engine
            engine = self._run_engines.pop(shard, None)
            if engine is None:
                # Synced by the checkpoint when its connection closes (module docstring).
                engine = _unsynced_commits(
                    db.create_engine(
                        self.conn_string_for_shard(shard),
                        poolclass=NullPool,
                        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                    )
                )
            self._run_engines[shard] = engine  # the most recent last
            while len(self._run_engines) > RUN_ENGINES:
                self._run_engines.popitem(last=False)[1].dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's `_connect`, with the engine kept instead of made and disposed each time.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store `events` as `store_event` stores each, in their order; consecutive asset
        events of one run share a transaction in the run's file and one in the index."""
        group: list[EventLogEntry] = []
        for event in events:
            batched = event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS
            if group and (not batched or event.run_id != group[0].run_id):
                self._store_asset_events(group)
                group = []
            if batched:
                group.append(event)
            else:
                self.store_event(event)
        if group:
            self._store_asset_events(group)

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        # Dagster's `store_event` for asset events (sqlite_event_log.py): the run's file, then
        # the index; here each file once for the whole group.
        inserts = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for insert in inserts:
                conn.execute(insert)
        with self.index_transaction() as conn:
            index_asset_events(self, conn, events, inserts)

    def dispose(self) -> None:
        """Stop watching runs (Dagster's) and close the kept connections."""
        super().dispose()
        with self._engines_lock:
            engines = [e for e in (self._index_engine, *self._run_engines.values()) if e]
            self._index_engine, self._run_engines = None, OrderedDict()
        for engine in engines:
            engine.dispose()
