"""Reading a campaign's state back from Dagster's event log (the only place it is kept)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import dagster as dg
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from pydantic import BaseModel, ValidationError

from orchestrator_assets.assets.dagster_private import (
    AssetCheckEvaluationTargetMaterializationData,
    PartitionKeyFilter,
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
    """The newest materialization (or observation) per partition that carries `metadata_key`."""
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    latest: dict[str, dg.EventLogEntry] = {}
    chunks: Iterable[Sequence[str] | None] = (
        [partitions[i : i + PAGE] for i in range(0, len(partitions), PAGE)]
        if partitions is not None
        else [None]
    )
    for chunk in chunks:
        cursor = None
        while True:
            result = fetch(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk),
                limit=PAGE,
                cursor=cursor,
                ascending=False,
            )
            for record in result.records:
                entry = record.event_log_entry
                partition = record.partition_key
                if (
                    partition is not None
                    and partition not in latest
                    and metadata_key in event_metadata(entry)
                ):
                    latest[partition] = entry
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
    records: dict[str, M] = {}
    for partition, entry in latest_events(instance, key, partitions, False, RECORD).items():
        records[partition] = model.model_validate(event_metadata(entry)[RECORD].value)
    return records


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
    events = latest_events(instance, key, partitions, False, PR_NUMBER)
    return {
        partition: PullRequestRecord.model_validate(event_metadata(entry)[RECORD].value)
        for partition, entry in events.items()
        if RECORD in event_metadata(entry)
    }


def removed_targets(instance: DagsterInstance, spec: CampaignSpec) -> set[str]:
    """Targets marked as removed from the campaign (their latest mark says so)."""
    events = latest_events(instance, asset_key(spec, "change"), None, True, REMOVED)
    return {p for p, entry in events.items() if event_metadata(entry)[REMOVED].value}


def latest_materializations(
    instance: DagsterInstance, key: AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """A pointer to the newest materialization of each partition (what a check evaluates)."""
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for start in range(0, len(partitions), PAGE):
        chunk = partitions[start : start + PAGE]
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk),
            limit=len(chunk) * 4,
            ascending=False,
        )
        for record in result.records:
            if record.partition_key is not None and record.partition_key not in found:
                found[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                )
    return found


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


def _observation(entry: dg.EventLogEntry) -> PullRequestObservation:
    meta = {k: v.value for k, v in event_metadata(entry).items()}
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
        timestamp=entry.timestamp,
        status=status,
    )


def latest_pr_observations(
    instance: DagsterInstance, spec: CampaignSpec, partitions: Sequence[str] | None = None
) -> dict[str, PullRequestObservation]:
    """The newest observation of each target's pull request on the forge."""
    key = asset_key(spec, "pull_request")
    events = latest_events(instance, key, partitions, True, PR_STATE)
    return {partition: _observation(entry) for partition, entry in events.items()}


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
                    seen = _observation(record.event_log_entry)
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
