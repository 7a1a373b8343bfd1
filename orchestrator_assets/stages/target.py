"""One target through the stages: change, verify, gate and deliver, with the review decisions
that steer or approve it."""

from __future__ import annotations

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.change import make_change
from orchestrator_assets.stages.deliver import Gate, deliver_pull_request
from orchestrator_assets.stages.quality import quality_loop
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    TargetOutcome,
    VerificationRecord,
    decision_applies,
)
from orchestrator_assets.stages.verify import verify_change
from orchestrator_assets.stages.workbench import FollowUp, Log, Workbench, quiet


def gate_from(
    spec: CampaignSpec, target: Target, verification: VerificationRecord, prior: Gate
) -> Gate:
    """The PR gate as the verifier checks of `verification` evaluate it (review as before)."""
    results = {r.name: r.passed for r in verification.results}
    return Gate(
        evaluations={
            v.check_name: (results.get(v.name, False), verification.head_sha)
            for v in spec.verifiers_for(target)
        },
        approved=prior.approved,
        rejected=prior.rejected,
        awaiting_since=prior.awaiting_since,
    )


def followup_for(decision: ReviewDecision | None, change: ChangeRecord | None) -> FollowUp | None:
    """The further pass a review decision asks for: a steer, or an approval of some files."""
    if not decision_applies(decision, change) or change is None or decision is None:
        return None
    if any(i.decision_id == decision.id for i in change.iterations):
        return None  # carried out already
    if decision.decision == "steer":
        return FollowUp("steer", decision.prompt, list(decision.files), decision.id)
    if (
        decision.decision == "approve"
        and decision.files
        and set(decision.files) < set(change.files)
    ):
        return FollowUp("partial", None, list(decision.files), decision.id)
    return None


def review_gate(
    decision: ReviewDecision | None,
    change: ChangeRecord | None,
    prior_pr: PullRequestRecord | None,
) -> Gate:
    """The review half of the PR gate for the target's current change."""
    gate = Gate(evaluations={})
    if change is None or not change.head_sha:
        return gate
    if decision_applies(decision, change) and decision is not None:
        gate.approved = decision.decision == "approve"
        if decision.decision == "reject":
            gate.rejected = f"{decision.reason or 'no reason given'} ({decision.actor})"
    if (
        prior_pr is not None
        and prior_pr.outcome == "awaiting_review"
        and prior_pr.head_sha == change.head_sha
    ):
        gate.awaiting_since = prior_pr.awaiting_since
    return gate


def advance_target(
    spec: CampaignSpec,
    target: Target,
    stages: set[str],
    prior_change: ChangeRecord | None,
    prior_verification: VerificationRecord | None,
    prior_gate: Gate | None,
    bench: Workbench,
    log: Log = quiet,
    decision: ReviewDecision | None = None,
    prior_pr: PullRequestRecord | None = None,
    ci_followup: FollowUp | None = None,
) -> TargetOutcome:
    """Take one target through the selected stages, each as soon as the one before is done.

    A stage that is not selected uses the target's previous record (and, for the PR, the gate
    its recorded check evaluations give). The target's newest review `decision` is applied: a
    steer or a partial approval makes one more pass over the change first. An agentic change
    whose verification fails (or whose diff the judge vetoes) is sent back to its agent, up to
    the campaign's `repair_attempts`. A `ci_followup` (stages/ci_repair.py: the agent resumed
    with a PR's failed checks) is made instead of the review decision's pass.
    """
    outcome = TargetOutcome()
    change = prior_change
    if "change" in stages:
        followup = ci_followup or followup_for(decision, prior_change)
        if ci_followup is not None:
            log(f"{target.key}: repairing the pull request after its checks failed")
        elif followup is not None:
            log(f"{target.key}: applying the review decision: {decision.describe()}")  # type: ignore[union-attr]
        change = outcome.change = make_change(spec, target, prior_change, bench, log, followup)
    verification = prior_verification
    review = review_gate(decision, change, prior_pr)
    gate = prior_gate or Gate(evaluations={})
    gate = Gate(gate.evaluations, review.approved, review.rejected, review.awaiting_since)
    if "verification" in stages:
        verification = verify_change(spec, target, change, prior_verification, bench, log)
        if "change" in stages and change is not None:
            change, verification = quality_loop(spec, target, change, verification, bench, log)
            outcome.change = change
        outcome.verification = verification
        gate = gate_from(spec, target, verification, gate)
    if "pull_request" in stages:
        outcome.pull_request = deliver_pull_request(
            spec, target, change, verification, gate, bench, log
        )
    return outcome
