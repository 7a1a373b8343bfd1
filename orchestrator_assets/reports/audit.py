"""The audit log: every human decision and every write to a code host, read from the event log.

Nothing is kept beside Dagster's event log (so in production it is in PostgreSQL): review
decisions and bulk PR actions are observations on `pull_request`, a cancel is an observation on
the campaign's `report`, and the platform's pushes and PR writes are the `change` and
`pull_request` materializations of the runs that made them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
from dagster import DagsterInstance
from pydantic import BaseModel

from orchestrator_assets.assets import history
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.records import PullRequestRecord, ReviewDecision
from orchestrator_assets.stages.review import DECISION

CANCEL = "cancel"  # report observation metadata: a cancel, with its actor
PR_WRITES = {"opened", "updated", "closed_stale", "rejected"}


class AuditEntry(BaseModel):
    """One audited action: who did what to which target, when and why."""

    at: float
    campaign: str
    target: str | None
    actor: str
    action: str
    detail: str = ""
    reason: str | None = None
    run_id: str | None = None


def cancel_observation(
    spec: CampaignSpec, actor: str, target: str | None, runs: list[str]
) -> dg.AssetObservation:
    """The event that records a cancel (on the campaign's report asset)."""
    return dg.AssetObservation(
        history.asset_key(spec, "report"),
        description=f"cancelled by {actor}",
        metadata={
            CANCEL: True,
            "actor": actor,
            "target": target or "",
            "runs": ", ".join(runs),
        },
    )


def audit_entries(instance: DagsterInstance, spec: CampaignSpec) -> list[AuditEntry]:
    """Every audited action of the campaign, oldest first."""
    entries = [*_observed(instance, spec), *_written(instance, spec)]
    entries.sort(key=lambda e: e.at)
    return entries


def _records(instance: DagsterInstance, key: dg.AssetKey, observations: bool) -> Iterator:
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    cursor = None
    while True:
        result = fetch(dg.AssetRecordsFilter(asset_key=key), limit=history.PAGE, cursor=cursor)
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor


def _value(meta: dict, key: str):
    value = meta.get(key)
    return value.value if hasattr(value, "value") else value


def _observed(instance: DagsterInstance, spec: CampaignSpec) -> Iterator[AuditEntry]:
    for record in _records(instance, history.asset_key(spec, "pull_request"), True):
        meta = history.event_metadata(record.event_log_entry)
        if DECISION in meta:
            raw = _value(meta, DECISION)
            decision = ReviewDecision.model_validate(raw)
            detail = ", ".join(decision.files) or (decision.prompt or "")[:200]
            yield AuditEntry(
                at=record.timestamp, campaign=spec.name, target=decision.target,
                actor=decision.actor, action=f"{decision.decision} ({decision.source})",
                detail=detail, reason=decision.reason, run_id=record.run_id or None,
            )  # fmt: skip
        elif _value(meta, "action"):
            yield AuditEntry(
                at=record.timestamp, campaign=spec.name, target=record.partition_key,
                actor=str(_value(meta, "actor") or "unknown"),
                action=f"pr {_value(meta, 'action')}",
                detail=f"#{_value(meta, 'pr_number')} → {_value(meta, history.PR_STATE)} "
                f"({_value(meta, 'outcome') or 'done'})",
                reason=_value(meta, "reason") or None,
            )  # fmt: skip
    for record in _records(instance, history.asset_key(spec, "report"), True):
        meta = history.event_metadata(record.event_log_entry)
        if _value(meta, CANCEL):
            yield AuditEntry(
                at=record.timestamp, campaign=spec.name, target=_value(meta, "target") or None,
                actor=str(_value(meta, "actor")), action="cancel",
                detail=f"runs: {_value(meta, 'runs') or 'none running'}",
            )  # fmt: skip


def _written(instance: DagsterInstance, spec: CampaignSpec) -> Iterator[AuditEntry]:
    """The platform's own writes to the code host: pushes and PR writes, by the run that did
    them (and whoever launched it, when Dagster knows)."""
    runs: dict[str, str] = {}

    def launched_by(run_id: str) -> str:
        if run_id not in runs:
            run = instance.get_run_by_id(run_id)
            tags = run.tags if run else {}
            who = tags.get("user") or tags.get("dagster/user") or tags.get("orchestrator/actor")
            runs[run_id] = f"platform (run {run_id[:8]}" + (f", by {who})" if who else ")")
        return runs[run_id]

    for record in _records(instance, history.asset_key(spec, "pull_request"), False):
        meta = history.event_metadata(record.event_log_entry)
        if history.RECORD not in meta:
            continue
        pr = PullRequestRecord.model_validate(_value(meta, history.RECORD))
        if pr.pushed_sha:  # a change is pushed only when it is published, by this stage
            yield AuditEntry(
                at=record.timestamp, campaign=spec.name, target=record.partition_key,
                actor=launched_by(record.run_id), action="push",
                detail=f"{_branch(spec, record.partition_key)} → {pr.pushed_sha[:12]}",
                run_id=record.run_id,
            )  # fmt: skip
        if pr.outcome not in PR_WRITES or (pr.outcome == "rejected" and pr.number is None):
            continue
        yield AuditEntry(
            at=record.timestamp, campaign=spec.name, target=record.partition_key,
            actor=launched_by(record.run_id), action=f"pr {pr.outcome}",
            detail=f"#{pr.number} {pr.url or ''}".strip(), reason=pr.reason,
            run_id=record.run_id,
        )  # fmt: skip


def since(entries: list[AuditEntry], seconds: float | None) -> list[AuditEntry]:
    """The entries of the last `seconds` (all when None)."""
    if seconds is None:
        return entries
    cutoff = time.time() - seconds
    return [e for e in entries if e.at >= cutoff]


def _branch(spec: CampaignSpec, key: str | None) -> str:
    """The campaign branch of a target (a workspace has its own), as far as the spec knows it."""
    target = spec.target(key) if key else None
    return spec.branch_for(target) if target else spec.branch_name
