"""The one status vocabulary used by the report, the CLI and the UI."""

from __future__ import annotations

from enum import StrEnum


class TargetStatus(StrEnum):
    """Where one target of a campaign stands."""

    PENDING = "pending"  # known target, not (fully) processed yet
    NO_CHANGE = "no_change"
    SETUP_FAILED = "setup_failed"
    CHANGE_FAILED = "change_failed"
    VERIFICATION_FAILED = "verification_failed"
    JUDGE_VETOED = "judge_vetoed"  # verified, but the LLM judge vetoed the diff
    AWAITING_REVIEW = "awaiting_review"
    PREVIEWED = "previewed"  # verified, not published (preview): `orchestrator publish` opens it
    REJECTED = "rejected"
    PR_FAILED = "pr_failed"  # verified, but the forge refused or failed to open the PR
    PR_OPEN = "pr_open"
    MERGED = "merged"
    CLOSED = "closed"
    SKIPPED = "skipped"  # target removed from the campaign; its history is kept
    # Not attempted because the campaign's budget was spent; not final: a re-run picks it up
    # once the budget allows (a raised `budget_usd`, or a new month's spend).
    OVER_BUDGET = "over_budget"

    @property
    def is_final(self) -> bool:
        """True when nothing the platform does on its own moves the target further."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {TargetStatus.MERGED, TargetStatus.CLOSED, TargetStatus.REJECTED, TargetStatus.SKIPPED}
)


class ChangeOutcome(StrEnum):
    """What a transformation produced for one target."""

    CHANGED = "changed"
    NO_CHANGE = "no_change"
    FAILED = "failed"
    SETUP_FAILED = "setup_failed"  # a setup command failed; the transformation did not run
    SKIPPED = "skipped"  # not attempted: the campaign's budget was spent (status over_budget)


class PullRequestState(StrEnum):
    """The states a pull request moves through on a forge."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"
