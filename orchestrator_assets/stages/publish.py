"""Preview before publish: a campaign run with `preview: true` (or `orchestrator run --preview`)
takes each target through its transformation and verifiers and stops before anything reaches
the code host; `orchestrator publish` then publishes exactly the previewed changes.

The previewed commit stays unpublished in the repository cache, as every change does until its
gates pass (see stages/change.py). Publishing is a decision in the review path: `publish`
records an approval pinned to the previewed head commit (source `publish`), and the pull
request stage, run alone, pushes that commit and opens its PR — the transformation and the
verifiers do not run again. A target whose change moved since its preview (its base branch
moved, the campaign's transformation changed, the campaign branch moved) is not published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    VerificationRecord,
    decision_applies,
)
from resources.forges.base import ResolvedRepo

PUBLISHED = ("opened", "updated", "unchanged")  # PR outcomes of a published change


def preview_holds(spec: CampaignSpec, approved: bool, change: ChangeRecord) -> bool:
    """Whether the deliver stage stops at the preview: the campaign previews, no decision (a
    `publish`, or a review approval) released the change, and the forge's campaign branch does
    not hold it already (published before: its PR is kept up to date as usual)."""
    published = change.head_sha is not None and change.head_sha == change.forge_branch_sha
    return spec.preview and not approved and not published


def previewed_reason(change: ChangeRecord) -> str:
    """What a previewed target's record says: what would be published, and how."""
    head = (change.head_sha or "")[:8]
    return (
        f"would publish {head} to {change.branch}: {len(change.files)} file(s) "
        f"(+{change.insertions} -{change.deletions}); nothing pushed: `orchestrator publish` "
        "opens it"
    )


Verdict = Literal["publish", "published", "not_previewed", "moved"]


@dataclass
class PublishPlan:
    """What `orchestrator publish` does for one target, and why."""

    target: str
    verdict: Verdict
    reason: str
    head_sha: str | None = None


def plan_publish(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord | None,
    pull_request: PullRequestRecord | None,
    now: ResolvedRepo | None,
    fingerprint: str,
    verification: VerificationRecord | None = None,
) -> PublishPlan:
    """Whether a target's previewed change may be published as it was previewed.

    `now` is the repository as the forge sees it now (None: not asked, because the target is
    not previewed); `fingerprint` the campaign's transformation fingerprint for the target now;
    `verification` the change's verification, whose verifiers must still be the campaign's.
    """
    key = target.key
    if change is None or pull_request is None:
        return PublishPlan(key, "not_previewed", "not previewed (run the campaign first)")
    if not change.head_sha:
        return PublishPlan(key, "not_previewed", f"not previewed: {change.outcome}")
    if pull_request.outcome in PUBLISHED and pull_request.head_sha == change.head_sha:
        where = f"#{pull_request.number} {pull_request.url}" if pull_request.number else ""
        return PublishPlan(key, "published", f"already published {where}".strip(),
                           change.head_sha)  # fmt: skip
    if pull_request.outcome != "previewed" or pull_request.head_sha != change.head_sha:
        return PublishPlan(
            key, "not_previewed", f"not previewed (its pull request stage: {pull_request.outcome})"
        )
    head = change.head_sha[:8]
    if change.fingerprint != fingerprint:
        return PublishPlan(
            key, "moved", f"the campaign changed since the preview of {head} (transformation, "
            "setup, branch or title): run the campaign again to preview the new change",
        )  # fmt: skip
    wanted = {v.name: v.command_line() for v in spec.verifiers_for(target)}
    ran = {r.name: r.command for r in verification.results} if verification else {}
    if verification is None or verification.head_sha != change.head_sha or ran != wanted:
        return PublishPlan(
            key, "moved", f"the campaign's verifiers changed since the preview of {head}: run "
            "the campaign again to verify and preview the change",
        )  # fmt: skip
    assert now is not None
    if now.base_sha != change.base_sha:
        return PublishPlan(
            key, "moved", f"the base moved since the preview of {head}: {now.base_branch} is at "
            f"{now.base_sha[:8]}, the preview was made on {(change.base_sha or '')[:8]}; run the "
            "campaign again to preview the new change",
        )  # fmt: skip
    if now.branch_sha != change.forge_branch_sha:
        return PublishPlan(
            key, "moved", f"the campaign branch {spec.branch_for(target)} moved since the "
            f"preview of {head} (now {(now.branch_sha or 'deleted')[:8]}); run the campaign again",
        )  # fmt: skip
    return PublishPlan(key, "publish", f"publishing {head}", change.head_sha)


def publish_decision(
    target: str, head_sha: str, actor: str, current: ReviewDecision | None, change: ChangeRecord
) -> ReviewDecision | None:
    """The approval that releases a previewed change (None: one that applies is recorded
    already, e.g. by a publish that failed afterwards)."""
    if current is not None and current.decision == "approve" and decision_applies(current, change):
        return None
    return ReviewDecision(
        decision="approve",
        target=target,
        actor=actor,
        reason=f"published after its preview ({head_sha[:8]})",
        head_sha=head_sha,
        source="publish",
    )
