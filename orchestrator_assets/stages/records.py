"""What each stage produced for one target: plain models stored in materialization metadata."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from orchestrator_assets.stages.status import ChangeOutcome
from resources.agents.base import TokenUsage


class SetupSummary(BaseModel):
    """How a workspace was prepared: by running setup, or from the environment cache."""

    cache: Literal["hit", "miss", "off"]
    key: str | None = None
    commands: int = 0
    duration_s: float = 0.0
    size_bytes: int = 0


class AgentSummary(TokenUsage):
    """What the agent run behind a change reported."""

    session_id: str
    model: str | None = None
    num_turns: int = 0
    duration_s: float = 0.0
    model_usage: dict[str, dict] = Field(default_factory=dict)
    final_message: str = ""
    transcript: str | None = Field(default=None, description="path of the stored event stream")
    verifier_calls: list[dict] = Field(
        default_factory=list, description="the agent's own verifier tool calls (name, passed)"
    )
    gate_decisions: list[dict] = Field(
        default_factory=list, description="the stop gate's decisions (block/allow, failing)"
    )

    @property
    def stop_blocks(self) -> int:
        """How often the stop gate sent the agent back to work."""
        return sum(1 for d in self.gate_decisions if d.get("decision") == "block")


class JudgeVerdict(BaseModel):
    """The LLM judge's verdict on one head commit of a change."""

    head_sha: str
    verdict: Literal["approve", "veto", "error"]
    reasons: list[dict] = Field(default_factory=list, description="kind and detail of each")
    summary: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    # Not asked: the campaign's budget was spent. The PR is held (whatever `on_error` says)
    # until a run with budget left asks the judge.
    over_budget: bool = False


class Iteration(BaseModel):
    """One pass of the transformation over a target: the first run, or a follow-up that
    resumed it (a reviewer's steer, a partial approval, a repair after a failed verifier)."""

    number: int = Field(description="1 for the first run, then counting up")
    # ci_repair: resumed with the logs of the PR's failed checks (stages/ci_repair.py)
    kind: Literal["initial", "steer", "partial", "repair", "judge", "ci_repair"] = "initial"
    prompt: str | None = Field(default=None, description="what the agent was told this time")
    files: list[str] = Field(default_factory=list, description="the files it was limited to")
    decision_id: str | None = Field(default=None, description="the review decision behind it")
    session_id: str | None = None
    head_sha: str | None = None
    diff: str = ""
    files_changed: int = 0
    cost_usd: float = 0.0
    outcome: str | None = None
    transcript: str | None = Field(default=None, description="the agent's events of this pass")
    verification: str | None = Field(
        default=None, description="the platform's verifiers on this pass's head (name:pass|fail)"
    )
    verdict: str | None = Field(default=None, description="the judge's verdict on this pass")
    verifier_calls: int = 0  # the agent's own verifier tool calls in this pass
    stop_blocks: int = 0  # how often the stop gate sent it back in this pass


class ChangeRecord(BaseModel):
    """The result of a transformation on one target."""

    outcome: ChangeOutcome
    reason: str | None = None
    repo: str
    clone_url: str | None = Field(default=None, description="where the forge serves the repo")
    base_branch: str | None = None
    base_sha: str | None = None
    branch: str
    head_sha: str | None = None
    forge_branch_sha: str | None = Field(
        default=None,
        description="the campaign branch on the forge when the change was made (None: absent); "
        "the change is published over it, with a lease, once it passed its gates",
    )
    stale_branch_sha: str | None = Field(
        default=None, description="no change now, but the campaign branch exists (a PR to close)"
    )
    files: list[str] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    diff: str = ""
    diff_truncated: bool = False
    fingerprint: str
    output_tail: str = ""
    duration_s: float = 0.0
    cost_usd: float = Field(default=0.0, description="what this run cost")
    total_cost_usd: float = Field(default=0.0, description="what all runs for the target cost")
    reused: bool = False
    agent: AgentSummary | None = None
    setup: SetupSummary | None = None
    isolation: str | None = Field(
        default=None, description="how the sandbox isolated the commands, e.g. local:gvisor"
    )
    iterations: list[Iteration] = Field(
        default_factory=list, description="every pass that led to this change, oldest first"
    )
    verdicts: list[JudgeVerdict] = Field(
        default_factory=list, description="the judge's verdicts, oldest first"
    )

    @property
    def verdict(self) -> JudgeVerdict | None:
        """The judge's verdict on the current head, if it gave one."""
        return next((v for v in reversed(self.verdicts) if v.head_sha == self.head_sha), None)

    @property
    def repairs(self) -> int:
        """Passes made to repair a failed verifier or a judge's veto."""
        return sum(1 for i in self.iterations if i.kind in ("repair", "judge"))

    @property
    def iteration(self) -> int:
        """The number of the newest pass (0 for records kept before iterations were)."""
        return self.iterations[-1].number if self.iterations else 0


class VerifierResult(BaseModel):
    """One verifier's run against a change."""

    name: str
    passed: bool
    exit_code: int
    duration_s: float
    output_tail: str = ""
    timed_out: bool = False
    command: str = ""
    report: str | None = None  # the verifier's report file as this run wrote it (bounded)


class VerificationRecord(BaseModel):
    """Every verifier's result for one head commit (or why none ran)."""

    head_sha: str | None = None
    results: list[VerifierResult] = Field(default_factory=list)
    skipped_reason: str | None = None
    error: str | None = None
    setup_failed: bool = False
    setup_output: str = ""
    setup: SetupSummary | None = None
    duration_s: float = 0.0
    reused: bool = False

    @property
    def passed(self) -> bool:
        """True when verification ran and every verifier passed."""
        return (
            self.head_sha is not None and self.error is None and all(r.passed for r in self.results)
        )

    @property
    def failed_verifiers(self) -> list[str]:
        """Names of the verifiers that failed."""
        return [r.name for r in self.results if not r.passed]


PullRequestOutcome = Literal[
    "opened", "updated", "unchanged", "no_change", "blocked", "held", "awaiting_review", "failed",
    "not_reopened", "closed_stale", "rejected", "previewed",
]  # fmt: skip


class PullRequestRecord(BaseModel):
    """What happened to a target's pull request in one run."""

    outcome: PullRequestOutcome
    reason: str | None = None
    number: int | None = None
    url: str | None = None
    state: Literal["open", "merged", "closed"] | None = None
    head_sha: str | None = None
    pushed_sha: str | None = Field(
        default=None, description="the commit this run pushed to the campaign branch, if any"
    )
    duration_s: float = 0.0
    awaiting_since: float | None = Field(
        default=None, description="when the change began to wait for a review (epoch seconds)"
    )


class TargetOutcome(BaseModel):
    """What one run did for one target: the records of the stages it ran (None: not run)."""

    change: ChangeRecord | None = None
    verification: VerificationRecord | None = None
    pull_request: PullRequestRecord | None = None


DecisionKind = Literal["approve", "reject", "steer"]
# Where a decision came from: a person (cli, ui), a job, a timeout, `orchestrator publish`, or a
# review of a draft pull request on the code host it lives on (local, github, gitlab, bitbucket).
DecisionSource = Literal[
    "cli", "job", "timeout", "ui", "publish", "local", "github", "gitlab", "bitbucket"
]


class ReviewDecision(BaseModel):
    """One reviewer's decision on one target's change."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    decision: DecisionKind
    target: str
    actor: str
    reason: str | None = None
    files: list[str] = Field(default_factory=list, description="approve: only these; steer: "
                             "work on these only")  # fmt: skip
    prompt: str | None = Field(default=None, description="steer: what the agent is told")
    head_sha: str | None = Field(default=None, description="the change decided on")
    source: DecisionSource = "cli"
    at: float = Field(default_factory=time.time)

    def describe(self) -> str:
        """One line for logs and notifications."""
        what = {"approve": "approved", "reject": "rejected", "steer": "steered"}[self.decision]
        files = f" (files: {', '.join(self.files)})" if self.files else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.target} {what} by {self.actor} via {self.source}{files}{why}"


def decision_applies(decision: ReviewDecision | None, change: ChangeRecord | None) -> bool:
    """True when the decision is about the target's current change: an approval or rejection
    of its head (or the partial change it led to), or a steer not carried out yet."""
    if decision is None or change is None:
        return False
    if decision.decision == "steer":
        return not any(i.decision_id == decision.id for i in change.iterations)
    return decision.head_sha in (None, change.head_sha) or any(
        i.decision_id == decision.id for i in change.iterations
    )
