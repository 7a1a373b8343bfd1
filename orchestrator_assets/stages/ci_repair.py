"""CI-driven repair: a pull request whose checks fail on the code host, or that conflicts with its
base after the base moved, is worked on again, up to the campaign's `ci_repairs` times.

The PR status sensor (sensors/pr_status.py) sees the failure, records a `CiRepairRequest` as an
observation on the target's `pull_request` (with the failed checks' logs, read with the forge's
optional `failed_check_logs`) and requests a run of the target tagged `CI_REPAIR_TAG`. That run
asks this module what to do:

- an agentic campaign resumes the agent's session: after failed checks with their logs,
  trimmed like verifier output (`resources/agents/extractors.py`), on the change; after a
  conflict with its earlier diff, on the base as it is now. Either is one more iteration of
  kind `ci_repair`, with its cost, verified and pushed to the PR like any other;
- a deterministic campaign runs its transformation again on the base as it is now (a base that
  moved gives a new change; an unchanged base gives the same change back, so nothing new is
  pushed).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import AgenticTransformation
from orchestrator_assets.stages.records import ChangeRecord
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.workbench import FollowUp
from resources.agents.extractors import combine, extract
from resources.forges.base import PullRequestStatus

CI_REPAIR = "ci_repair"  # observation metadata on `pull_request` holding a request as JSON
CI_REPAIR_TAG = "orchestrator/ci_repair"  # on runs the sensor requests: checks | conflict
LOG_CHARS = 20_000  # what the request keeps of each check's log (the tail); trimmed again later


class CiRepairRequest(BaseModel):
    """One repair of a target's pull request, as the PR status sensor asked for it."""

    number: int = Field(description="the pull request")
    head_sha: str | None = Field(default=None, description="the PR head that failed")
    reason: Literal["checks", "conflict"]
    attempt: int = Field(description="1 for the first repair of this PR, then counting up")
    failing: list[str] = Field(default_factory=list, description="the failed checks")
    logs: dict[str, str] = Field(default_factory=dict, description="check name -> log tail")
    at: float = Field(default_factory=time.time)

    def describe(self) -> str:
        """One line for logs, notifications and the report."""
        what = (
            f"checks failed ({', '.join(self.failing) or 'unnamed'})"
            if self.reason == "checks"
            else "merge conflict with the base"
        )
        return f"CI repair {self.attempt} of PR #{self.number}: {what}"


def repair_reason(status: PullRequestStatus) -> Literal["checks", "conflict"] | None:
    """Why an open pull request needs a repair (None: it does not): its checks failed, or it no
    longer merges into its base (`mergeable` false; GitHub says `dirty`)."""
    if status.state not in ("open", "draft"):
        return None
    if status.checks == "failure":
        return "checks"
    if status.mergeable is False and status.mergeable_state in (None, "dirty", "draft"):
        return "conflict"
    return None


def tail_logs(logs: dict[str, str]) -> dict[str, str]:
    """Each check's log cut to its last `LOG_CHARS` characters (the end says what failed)."""
    return {name: text[-LOG_CHARS:] for name, text in logs.items()}


def feedback(request: CiRepairRequest, max_chars: int) -> str:
    """What the agent is told: the failed checks' logs, trimmed like verifier output."""
    names = request.failing or list(request.logs)
    texts = [
        extract(request.logs.get(name, ""), 1, kind="auto", name=name, max_chars=max_chars)
        for name in names
    ]
    logs = combine(texts, max_chars) if texts else "(the code host gave no log for them)"
    failed = ", ".join(names) or "unnamed checks"
    return (
        f"Your change was published as pull request #{request.number}, and its checks failed "
        f"on the code host's CI ({failed}):\n\n{logs}\n\n"
        "Fix the failure (do not disable, skip or weaken tests or checks)."
    )


def conflict_feedback(request: CiRepairRequest, change: ChangeRecord, max_chars: int) -> str:
    """What the agent is told after a conflict: the base moved, and its earlier diff (cut to
    `max_chars`) to make again on the base as it is now."""
    diff = change.diff if len(change.diff) <= max_chars else change.diff[:max_chars] + "\n…"
    return (
        f"The base branch `{change.base_branch}` moved, and your pull request #{request.number} "
        "no longer merges into it (a merge conflict). Make your change again on the base as it "
        "is now, keeping what the base changed. Your earlier change was:\n\n"
        f"```diff\n{diff}\n```"
    )


def followup_for(
    spec: CampaignSpec, request: CiRepairRequest | None, change: ChangeRecord | None
) -> FollowUp | None:
    """The pass a repair run makes over an agentic change, resuming the agent's session: with
    the failed checks' logs (checks failed), or on the current base with its earlier diff (a
    conflict). None — the transformation runs again on the current base — for a deterministic
    campaign, or when there is no agent session to resume."""
    settings = spec.transformation
    if (
        request is None
        or not isinstance(settings, AgenticTransformation)
        or change is None
        or change.outcome != ChangeOutcome.CHANGED
        or change.agent is None
        or request.head_sha not in (None, change.head_sha)
    ):
        return None
    if request.reason == "conflict":
        prompt = conflict_feedback(request, change, settings.feedback_chars)
        return FollowUp("ci_repair", prompt, onto_base=True)
    return FollowUp("ci_repair", feedback(request, settings.feedback_chars))
