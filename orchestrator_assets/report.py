"""The campaign report: one row per target, its status and what each stage recorded."""

from __future__ import annotations

import pandas as pd
from dagster import DagsterInstance

from orchestrator_assets import history
from orchestrator_assets.records import ChangeRecord, PullRequestRecord, VerificationRecord
from orchestrator_assets.spec import CampaignSpec
from orchestrator_assets.status import ChangeOutcome, TargetStatus

COLUMNS = [
    "target", "status", "reason", "base_sha", "head_sha", "files_changed", "verifiers",
    "failed_verifiers", "setup", "pr_number", "pr_url", "pr_state", "cost_usd", "duration_s",
    "repo",
]  # fmt: skip


def target_status(
    change: ChangeRecord | None,
    verification: VerificationRecord | None,
    pull_request: PullRequestRecord | None,
    removed: bool = False,
) -> tuple[TargetStatus, str | None]:
    """Where a target stands given its newest records, and why (for failures)."""
    if removed:
        return TargetStatus.SKIPPED, "removed from the campaign"
    if change is None:
        return TargetStatus.PENDING, None
    if change.outcome == ChangeOutcome.FAILED:
        return TargetStatus.CHANGE_FAILED, change.reason
    if change.outcome == ChangeOutcome.SETUP_FAILED:
        return TargetStatus.SETUP_FAILED, change.reason
    if change.outcome == ChangeOutcome.SKIPPED:
        return TargetStatus.SKIPPED, change.reason
    if change.outcome == ChangeOutcome.NO_CHANGE:
        return TargetStatus.NO_CHANGE, None
    if verification is None or verification.head_sha != change.head_sha:
        return TargetStatus.PENDING, "verification has not run for the current change"
    if verification.setup_failed:
        return TargetStatus.SETUP_FAILED, verification.error
    if not verification.passed:
        failed = verification.failed_verifiers
        reason = verification.error or f"verifier failed: {', '.join(failed)}"
        return TargetStatus.VERIFICATION_FAILED, reason
    if pull_request is None or pull_request.head_sha != change.head_sha:
        return TargetStatus.PENDING, "pull request not delivered yet"
    if pull_request.outcome == "awaiting_review":
        return TargetStatus.AWAITING_REVIEW, None
    if pull_request.outcome == "failed":
        return TargetStatus.PR_FAILED, pull_request.reason
    if pull_request.outcome == "blocked":
        return TargetStatus.VERIFICATION_FAILED, pull_request.reason
    state = pull_request.state
    if state == "merged":
        return TargetStatus.MERGED, None
    if state == "closed":
        return TargetStatus.CLOSED, None
    if state == "open":
        return TargetStatus.PR_OPEN, None
    return TargetStatus.PENDING, pull_request.reason


def build_report(instance: DagsterInstance, spec: CampaignSpec) -> pd.DataFrame:
    """The report frame over every target the campaign has or had (removed ones as skipped)."""
    changes = history.latest_changes(instance, spec)
    verifications = history.latest_verifications(instance, spec)
    prs = history.latest_pull_requests(instance, spec)
    removed = history.removed_targets(instance, spec)
    current = {t.key: t for t in spec.targets}
    keys = list(current) + sorted((set(changes) | removed) - set(current))
    rows = []
    for key in keys:
        change, verification, pr = changes.get(key), verifications.get(key), prs.get(key)
        status, reason = target_status(change, verification, pr, key not in current)
        results = verification.results if verification else []
        stage_durations = [r.duration_s for r in (change, verification, pr) if r is not None]
        rows.append(
            {
                "target": key,
                "status": status.value,
                "reason": reason,
                "base_sha": change.base_sha if change else None,
                "head_sha": change.head_sha if change else None,
                "files_changed": len(change.files) if change else 0,
                "verifiers": ", ".join(
                    f"{r.name}:{'pass' if r.passed else 'fail'}" for r in results
                ),
                "failed_verifiers": ", ".join(r.name for r in results if not r.passed),
                "setup": _setup_applied(change),
                "pr_number": pr.number if pr and pr.number else None,
                "pr_url": pr.url if pr else None,
                "pr_state": pr.state if pr else None,
                "cost_usd": change.total_cost_usd if change else 0.0,
                "duration_s": round(sum(stage_durations), 3),
                "repo": current[key].repo if key in current else (change.repo if change else None),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["pr_number"] = frame["pr_number"].astype("Int64")
    return frame


def _setup_applied(change: ChangeRecord | None) -> str:
    """How the target's workspace was prepared: `none`, or the setup and its cache outcome."""
    if change is None or change.setup is None:
        return "none"
    return f"{change.setup.commands} command(s), cache {change.setup.cache}"


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many targets are in each status (only statuses that occur)."""
    return {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()}


def report_markdown(frame: pd.DataFrame) -> str:
    """The report as a markdown table followed by totals."""
    shown = frame[["target", "status", "files_changed", "failed_verifiers", "pr_url", "cost_usd"]]
    table = shown.fillna("").to_markdown(index=False) if len(frame) else "_no targets_"
    counts = ", ".join(f"{k}: {v}" for k, v in status_counts(frame).items())
    total = float(frame["cost_usd"].sum()) if len(frame) else 0.0
    return f"{table}\n\n**Targets:** {len(frame)} ({counts})  \n**Total cost:** ${total:.4f}\n"
