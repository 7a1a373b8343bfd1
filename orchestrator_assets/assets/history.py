"""Reading a campaign's state back from Dagster's event log (the only place it is kept)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import dagster as dg
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from pydantic import BaseModel, ValidationError

from orchestrator_assets.assets.dagster_private import (
    AssetCheckEvaluationTargetMaterializationData,
    PartitionKeyFilter,
    StoredEvent,
    event_metadata_by_id,
    latest_storage_ids,
)
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.records import ChangeRecord, PullRequestRecord, VerificationRecord
from resources.forges.base import PullRequestStatus

RECORD = "record"  # metadata key holding a stage's full record as JSON
REMOVED = "target_removed"  # observation metadata marking a target that left the campaign
PR_NUMBER = "number"  # materialization metadata on `pull_request` when the record names a PR
PR_STATE = "pr_state"  # observation metadata on `pull_request`: the PR's state on the forge
PAGE = 1000

M = TypeVar("M", bound=BaseModel)


def asset_key(spec: CampaignSpec, stage: str) -> AssetKey:
    """The key of one of a campaign's assets: `<campaign>/<stage>`."""
    return AssetKey([spec.id, stage])


def latest_events(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: Sequence[str] | None,
    observations: bool,
    metadata_key: str,
) -> dict[str, dg.EventLogEntry]:
    """The newest materialization (or observation) per partition that carries `metadata_key`.

    Read with the event log's index: the newest event id of each partition, then those events
    by id, so a report costs one event per target however long the campaign's history is. Only
    partitions whose newest event lacks the key (a `pull_request` observation that is a review
    decision where a PR state is wanted, a PR record of a run that did not reach the forge) are
    looked up further back.
    """
    latest: dict[str, dg.EventLogEntry] = {}
    lacking: list[str] = []
    for record in latest_event_records(instance, key, partitions, observations).values():
        partition = record.partition_key
        if partition is None:
            continue
        if metadata_key in event_metadata(record.event_log_entry):
            latest[partition] = record.event_log_entry
        else:
            lacking.append(partition)
    if lacking:
        latest.update(_scan_latest(instance, key, lacking, observations, metadata_key))
    return latest


def latest_event_records(
    instance: DagsterInstance, key: AssetKey, partitions: Sequence[str] | None, observations: bool
) -> dict[str, dg.EventLogRecord]:
    """The newest materialization (or observation) record of each partition of `key` (of
    `partitions` only, when given)."""
    ids = _latest_ids(instance, key, partitions, observations)
    return {
        record.partition_key: record
        for record in records_by_id(instance, key, ids, observations)
        if record.partition_key is not None
    }


def _latest_ids(
    instance: DagsterInstance, key: AssetKey, partitions: Sequence[str] | None, observations: bool
) -> list[int]:
    """The storage ids of the newest materialization (or observation) of each partition, by
    one indexed `MAX(id) … GROUP BY partition` query (per `PAGE` partitions)."""
    event_type = (
        dg.DagsterEventType.ASSET_OBSERVATION
        if observations
        else dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    ids: list[int] = []
    for chunk in _chunks(partitions):
        ids.extend(latest_storage_ids(instance, key, event_type, chunk).values())
    return ids


def records_by_id(
    instance: DagsterInstance, key: AssetKey, storage_ids: Sequence[int], observations: bool
) -> Iterator[dg.EventLogRecord]:
    """The materialization (or observation) records of `key` with these storage ids."""
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    ids = sorted(storage_ids)
    for start in range(0, len(ids), PAGE):
        chunk = ids[start : start + PAGE]
        result = fetch(dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk))
        yield from result.records


def latest_stored(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: Sequence[str] | None,
    observations: bool,
    metadata_key: str,
    labels: Collection[str] | None = None,
) -> dict[str, StoredEvent]:
    """Like `latest_events`, the newest event per partition carrying `metadata_key`, but only
    its metadata values (of `labels` and `metadata_key`; None: all), read without building
    Dagster's event objects (see `dagster_private.event_metadata_by_id`)."""
    wanted = None if labels is None else {*labels, metadata_key}
    ids = _latest_ids(instance, key, partitions, observations)
    latest: dict[str, StoredEvent] = {}
    lacking: list[str] = []
    for event in _stored_by_id(instance, key, ids, observations, wanted):
        if event.partition is None:
            continue
        if metadata_key in event.metadata:
            latest[event.partition] = event
        else:
            lacking.append(event.partition)
    if lacking:
        for partition, entry in _scan_latest(
            instance, key, lacking, observations, metadata_key
        ).items():
            latest[partition] = _stored(entry, partition, wanted)
    return latest


def _stored_by_id(
    instance: DagsterInstance,
    key: AssetKey,
    storage_ids: Sequence[int],
    observations: bool,
    labels: Collection[str] | None,
) -> Iterator[StoredEvent]:
    """The events with these storage ids, as `StoredEvent`s."""
    ids = sorted(storage_ids)
    for start in range(0, len(ids), PAGE):
        chunk = ids[start : start + PAGE]
        found = event_metadata_by_id(instance, chunk, labels)
        if found is None:  # not a SQL event log: the public call
            for record in records_by_id(instance, key, chunk, observations):
                yield _stored(
                    record.event_log_entry, record.partition_key, labels, record.storage_id
                )
        else:
            yield from found.values()


def _stored(
    entry: dg.EventLogEntry,
    partition: str | None,
    labels: Collection[str] | None,
    storage_id: int = 0,
) -> StoredEvent:
    """A deserialized event as a `StoredEvent` (its metadata limited to `labels`)."""
    values = {k: v.value for k, v in event_metadata(entry).items() if labels is None or k in labels}
    return StoredEvent(storage_id, partition, entry.timestamp, values)


def _chunks(partitions: Sequence[str] | None) -> Iterable[Sequence[str] | None]:
    """`partitions` in pieces small enough for one `IN (…)` (None: every partition at once)."""
    if partitions is None:
        return [None]
    return [partitions[i : i + PAGE] for i in range(0, len(partitions), PAGE)]


def _scan_latest(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: Sequence[str],
    observations: bool,
    metadata_key: str,
) -> dict[str, dg.EventLogEntry]:
    """The newest event carrying `metadata_key` of each of `partitions`, newest first through
    their events (stops once each has one)."""
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    latest: dict[str, dg.EventLogEntry] = {}
    for chunk in _chunks(partitions):
        wanted = set(chunk or ())
        cursor = None
        while wanted:
            result = fetch(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk),
                limit=PAGE,
                cursor=cursor,
                ascending=False,
            )
            for record in result.records:
                entry = record.event_log_entry
                partition = record.partition_key
                if partition in wanted and metadata_key in event_metadata(entry):
                    latest[partition] = entry
                    wanted.discard(partition)
            if not result.has_more:
                break
            cursor = result.cursor
    return latest


def event_metadata(entry: dg.EventLogEntry) -> dict:
    """The metadata of a materialization or observation entry (empty for other events)."""
    event = entry.dagster_event
    data = event.event_specific_data if event else None
    inner = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
    return dict(inner.metadata) if inner is not None else {}


def latest_records(
    instance: DagsterInstance,
    key: AssetKey,
    model: type[M],
    partitions: Sequence[str] | None = None,
) -> dict[str, M]:
    """The newest record of type `model` per partition of asset `key`."""
    stored = latest_stored(instance, key, partitions, False, RECORD, labels=())
    return {p: model.model_validate(event.metadata[RECORD]) for p, event in stored.items()}


def latest_changes(instance, spec, partitions=None) -> dict[str, ChangeRecord]:
    """The newest change record per target."""
    return latest_records(instance, asset_key(spec, "change"), ChangeRecord, partitions)


def latest_verifications(instance, spec, partitions=None) -> dict[str, VerificationRecord]:
    """The newest verification record per target."""
    return latest_records(instance, asset_key(spec, "verification"), VerificationRecord, partitions)


def latest_pull_requests(instance, spec, partitions=None) -> dict[str, PullRequestRecord]:
    """The newest pull-request record per target."""
    return latest_records(instance, asset_key(spec, "pull_request"), PullRequestRecord, partitions)


def latest_numbered_pull_requests(
    instance: DagsterInstance, spec: CampaignSpec, partitions: Sequence[str] | None = None
) -> dict[str, PullRequestRecord]:
    """The newest pull-request record per target that names a PR on the forge.

    A later run that did not reach the forge (blocked by a verifier, a forge error) records no
    PR number; the PR it left open is still this one.
    """
    key = asset_key(spec, "pull_request")
    stored = latest_stored(instance, key, partitions, False, PR_NUMBER, labels=(RECORD,))
    return {
        partition: PullRequestRecord.model_validate(event.metadata[RECORD])
        for partition, event in stored.items()
        if RECORD in event.metadata
    }


def removed_targets(instance: DagsterInstance, spec: CampaignSpec) -> set[str]:
    """Targets marked as removed from the campaign (their latest mark says so)."""
    stored = latest_stored(instance, asset_key(spec, "change"), None, True, REMOVED, labels=())
    return {p for p, event in stored.items() if event.metadata[REMOVED]}


def latest_materializations(
    instance: DagsterInstance, key: AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """A pointer to the newest materialization of each partition (what a check evaluates)."""
    return {
        partition: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        )
        for partition, record in latest_event_records(instance, key, partitions, False).items()
    }


def latest_check_evaluations(
    instance: DagsterInstance, spec: CampaignSpec, partition: str
) -> dict[str, tuple[bool, str | None]]:
    """Per verifier check: (passed, head sha it checked) of its newest evaluation for a target."""
    key = asset_key(spec, "verification")
    check_keys = [AssetCheckKey(key, v.check_name) for v in spec.all_verifiers()]
    if not check_keys:
        return {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        check_keys, partition_filter=PartitionKeyFilter(key=partition)
    )
    found: dict[str, tuple[bool, str | None]] = {}
    for check_key, record in latest.items():
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if evaluation is None or not hasattr(evaluation, "passed"):
            continue
        head = evaluation.metadata.get("head_sha")
        found[check_key.name] = (bool(evaluation.passed), head.value if head else None)
    return found


# pull requests as seen on the forge ------------------------------------------------------------


class PullRequestObservation(BaseModel):
    """What was last seen of a target's pull request on the forge (the status sensor, or a
    bulk action from `orchestrator prs`), newer than or beside its `pull_request` record."""

    state: str  # open | draft | merged | closed
    number: int | None = None
    url: str | None = None
    checks: str | None = None
    review: str | None = None
    mergeable: bool | None = None
    action: str | None = None  # merge | close | comment | publish, for a bulk action
    actor: str | None = None
    timestamp: float = 0.0
    status: PullRequestStatus | None = None


def pr_status_metadata(status: PullRequestStatus) -> dict:
    """Metadata of an observation of a pull request's status on `pull_request`."""
    return {
        PR_STATE: status.state,
        "mergeable": status.mergeable,
        "checks": status.checks,
        "review": status.review,
        "pr_number": status.number,
        "pr_url": dg.MetadataValue.url(status.url),
        "status": dg.MetadataValue.json(status.model_dump(mode="json")),
    }


def _observation(meta: dict[str, Any], timestamp: float) -> PullRequestObservation:
    """An observation of a PR from its metadata values."""
    status = None
    if isinstance(meta.get("status"), dict):
        try:
            status = PullRequestStatus.model_validate(meta["status"])
        except ValidationError:
            status = None
    mergeable = meta.get("mergeable")
    number = meta.get("pr_number")
    return PullRequestObservation(
        state=str(meta[PR_STATE]),
        number=int(number) if isinstance(number, int | float) else None,
        url=meta.get("pr_url") if isinstance(meta.get("pr_url"), str) else None,
        checks=meta.get("checks") if isinstance(meta.get("checks"), str) else None,
        review=meta.get("review") if isinstance(meta.get("review"), str) else None,
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        action=meta.get("action") if isinstance(meta.get("action"), str) else None,
        actor=meta.get("actor") if isinstance(meta.get("actor"), str) else None,
        timestamp=timestamp,
        status=status,
    )


def latest_pr_observations(
    instance: DagsterInstance, spec: CampaignSpec, partitions: Sequence[str] | None = None
) -> dict[str, PullRequestObservation]:
    """The newest observation of each target's pull request on the forge."""
    key = asset_key(spec, "pull_request")
    stored = latest_stored(instance, key, partitions, True, PR_STATE)
    return {p: _observation(event.metadata, event.timestamp) for p, event in stored.items()}


def pr_timeline(
    instance: DagsterInstance, spec: CampaignSpec
) -> Iterator[tuple[str, float, int | None, str]]:
    """Every known state of every target's pull request, oldest first.

    Yields `(target, timestamp, pr number, state)` from the `pull_request` records (the first
    one of a PR is its opening) and from the observations of the PR on the forge.
    """
    key = asset_key(spec, "pull_request")
    events: list[tuple[str, float, int | None, str]] = []
    for fetch, observed in ((instance.fetch_materializations, False),
                            (instance.fetch_observations, True)):  # fmt: skip
        cursor = None
        while True:
            result = fetch(
                dg.AssetRecordsFilter(asset_key=key), limit=PAGE, cursor=cursor, ascending=True
            )
            for record in result.records:
                partition = record.partition_key
                if partition is None:
                    continue
                meta = event_metadata(record.event_log_entry)
                if observed and PR_STATE in meta:
                    values = {k: v.value for k, v in meta.items()}
                    seen = _observation(values, record.timestamp)
                    events.append((partition, record.timestamp, seen.number, seen.state))
                elif not observed and RECORD in meta:
                    pr = PullRequestRecord.model_validate(meta[RECORD].value)
                    if pr.state is not None and pr.number is not None:
                        events.append((partition, record.timestamp, pr.number, pr.state))
            if not result.has_more:
                break
            cursor = result.cursor
    events.sort(key=lambda e: e[1])
    yield from events
