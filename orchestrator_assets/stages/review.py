"""Review decisions: a human approves, rejects or steers a target's change before its PR opens.

A decision is an `AssetObservation` on the campaign's `pull_request` asset for the target, so
it sits in Dagster's event log with who made it, when and why, whichever way it was made (the
CLI, the review job from the launchpad, a GitHub review of a draft PR, or a review timeout).
The next run of the target applies it: approve opens the PR (with only the approved files, when
some were named), reject ends the target, steer runs the change again with the new prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import dagster as dg
from dagster import DagsterInstance

from orchestrator_assets.assets import history
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    decision_applies,
)
from orchestrator_assets.stages.status import ChangeOutcome

DECISION = "review_decision"  # observation metadata holding a decision as JSON
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `30m`, `24h`, `7d` (for `review.timeout`)."""
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return float(match.group(1)) * UNIT_S[match.group(2)]


def decision_metadata(decision: ReviewDecision) -> dict:
    """The observation metadata of a decision: the whole decision, and its fields to read."""
    meta: dict = {
        DECISION: dg.MetadataValue.json(decision.model_dump(mode="json")),
        "decision": decision.decision,
        "actor": decision.actor,
        "source": decision.source,
        "head_sha": decision.head_sha or "",
    }
    if decision.reason:
        meta["reason"] = decision.reason
    if decision.files:
        meta["files"] = ", ".join(decision.files)
    if decision.prompt:
        meta["prompt"] = dg.MetadataValue.md(decision.prompt)
    return meta


def decision_observation(spec: CampaignSpec, decision: ReviewDecision) -> dg.AssetObservation:
    """The event that records a decision."""
    return dg.AssetObservation(
        history.asset_key(spec, "pull_request"),
        partition=decision.target,
        description=decision.describe(),
        metadata=decision_metadata(decision),
    )


def record_decision(
    instance: DagsterInstance, spec: CampaignSpec, decision: ReviewDecision
) -> None:
    """Store a decision in the event log (outside any run: the CLI and the review sensor)."""
    instance.report_runless_asset_event(decision_observation(spec, decision))


def latest_decisions(
    instance: DagsterInstance, spec: CampaignSpec, partitions: list[str] | None = None
) -> dict[str, ReviewDecision]:
    """The newest decision per target."""
    events = history.latest_events(
        instance, history.asset_key(spec, "pull_request"), partitions, True, DECISION
    )
    return {
        target: ReviewDecision.model_validate(_value(history.event_metadata(entry)[DECISION]))
        for target, entry in events.items()
    }


def decisions_since(
    instance: DagsterInstance, spec: CampaignSpec, after_storage_id: int
) -> tuple[list[ReviewDecision], int]:
    """Decisions recorded after an event-log position (a sensor's cursor), oldest first, and
    the new position."""
    found: list[ReviewDecision] = []
    cursor, newest = None, after_storage_id
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(
                asset_key=history.asset_key(spec, "pull_request"),
                after_storage_id=after_storage_id or None,
            ),
            limit=history.PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            newest = max(newest, record.storage_id)
            meta = history.event_metadata(record.event_log_entry)
            if DECISION in meta:
                found.append(ReviewDecision.model_validate(_value(meta[DECISION])))
        if not result.has_more:
            return found, newest
        cursor = result.cursor


def _value(value) -> dict:
    raw = value.value if hasattr(value, "value") else value
    return json.loads(raw) if isinstance(raw, str) else raw


def check_decision(
    spec: CampaignSpec, change: ChangeRecord | None, decision: ReviewDecision, awaiting: bool
) -> ReviewDecision:
    """The decision, pinned to the change it is about; a clear error when it cannot apply."""
    where = f"campaign {spec.name!r}, target {decision.target!r}"
    if change is None or change.outcome != ChangeOutcome.CHANGED or not change.head_sha:
        raise OrchestratorError(f"{where}: there is no change to review yet")
    if decision.decision == "steer":
        if spec.transformation.kind != "agentic":
            raise OrchestratorError(
                f"{where}: steer needs an agentic campaign (the transformation is "
                f"{spec.transformation.kind}); change the campaign file, or approve or reject"
            )
        if not (decision.prompt or "").strip():
            raise OrchestratorError(f"{where}: steer needs --prompt: what the agent should do")
        if change.agent is None:
            raise OrchestratorError(f"{where}: no agent session to resume for this change")
    elif not awaiting:
        raise OrchestratorError(
            f"{where}: the target is not awaiting review (only a review-required campaign's "
            "verified targets are)"
        )
    unknown = [f for f in decision.files if f not in change.files]
    if unknown and decision.decision == "approve":
        raise OrchestratorError(
            f"{where}: --files names file(s) the change does not touch: {', '.join(unknown)}; "
            f"it changes: {', '.join(change.files)}"
        )
    return decision.model_copy(update={"head_sha": change.head_sha})


def prepare_decision(
    instance: DagsterInstance, spec: CampaignSpec, decision: ReviewDecision
) -> ReviewDecision:
    """A decision checked against the target's current state and pinned to its change."""
    spec.require_target(decision.target)
    change = history.latest_changes(instance, spec, [decision.target]).get(decision.target)
    pr = history.latest_pull_requests(instance, spec, [decision.target]).get(decision.target)
    awaiting = (
        pr is not None
        and change is not None
        and pr.outcome == "awaiting_review"
        and pr.head_sha == change.head_sha
    )
    return check_decision(spec, change, decision, awaiting)


@dataclass
class Awaiting:
    """A target whose current change waits for a review: the change and its PR record."""

    change: ChangeRecord
    pull_request: PullRequestRecord

    @property
    def since(self) -> float:
        """When the change began to wait (epoch seconds; 0 when not recorded)."""
        return self.pull_request.awaiting_since or 0.0


def awaiting_targets(instance: DagsterInstance, spec: CampaignSpec) -> dict[str, Awaiting]:
    """Targets whose current change waits for a review (no decision applies to it yet)."""
    changes = history.latest_changes(instance, spec)
    prs = history.latest_pull_requests(instance, spec, list(changes))
    decisions = latest_decisions(instance, spec, list(changes))
    waiting = {}
    for key, pr in prs.items():
        change = changes.get(key)
        if (
            change is not None
            and pr.outcome == "awaiting_review"
            and pr.head_sha == change.head_sha
            and not decision_applies(decisions.get(key), change)
        ):
            waiting[key] = Awaiting(change, pr)
    return waiting


def unapplied_rejections(instance: DagsterInstance, spec: CampaignSpec) -> set[str]:
    """Targets rejected by a decision that no run has carried out yet (a draft PR to close).

    The report shows them as rejected at once; a run still has work to do for them.
    """
    decisions = {
        k: d for k, d in latest_decisions(instance, spec).items() if d.decision == "reject"
    }
    if not decisions:
        return set()
    changes = history.latest_changes(instance, spec, list(decisions))
    prs = history.latest_pull_requests(instance, spec, list(decisions))
    return {
        key
        for key, decision in decisions.items()
        if decision_applies(decision, changes.get(key))
        and (prs.get(key) is None or prs[key].outcome != "rejected")
    }
