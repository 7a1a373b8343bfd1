"""The quality loop: a failed verifier or a judge's veto sends the change back to the agent, up to
the campaign's repair limit."""

from __future__ import annotations

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import AgenticTransformation
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.change import make_change
from orchestrator_assets.stages.records import (
    ChangeRecord,
    JudgeVerdict,
    VerificationRecord,
)
from orchestrator_assets.stages.verify import verify_change
from orchestrator_assets.stages.workbench import FollowUp, Log, Workbench
from resources.agents.extractors import combine, extract
from resources.agents.judge import JudgeError, veto_feedback


def quality_loop(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord,
    verification: VerificationRecord,
    bench: Workbench,
    log: Log,
) -> tuple[ChangeRecord, VerificationRecord]:
    """Repair attempts and the judge for an agentic change, within one run of the target.

    The platform's verification stays the final gate: a failure resumes the agent's session
    with the trimmed failure; once it passes the judge (when configured) compares the diff with
    the request, and a veto resumes the agent with its reasons (or ends the target). Each of
    these counts against `repair_attempts`.
    """
    settings = spec.transformation
    if not isinstance(settings, AgenticTransformation) or change.agent is None:
        return change, verification
    left = settings.repair_attempts - _repairs_since_change(change)
    while True:
        _note_verification(change, verification)
        if not verification.passed:
            failed = [r for r in verification.results if not r.passed]
            if not failed or verification.setup_failed or left <= 0:
                return change, verification
            left -= 1
            feedback = _failure_feedback(spec, target, verification, settings.feedback_chars)
            log(f"{target.key}: verification failed; repair attempt "
                f"{settings.repair_attempts - left}/{settings.repair_attempts}")  # fmt: skip
            followup = FollowUp("repair", feedback)
        else:
            if settings.judge is None or bench.judge is None:
                return change, verification
            if change.verdict is not None and judge_holds(spec, change) is None:
                return change, verification
            change = _judge(spec, target, change, bench, log)
            verdict = change.verdict
            assert verdict is not None
            change.iterations[-1].verdict = verdict.verdict
            if verdict.verdict != "veto" or settings.judge.on_veto == "fail" or left <= 0:
                return change, verification
            left -= 1
            log(f"{target.key}: the judge vetoed; repair attempt "
                f"{settings.repair_attempts - left}/{settings.repair_attempts}")  # fmt: skip
            followup = FollowUp("judge", veto_feedback(verdict.reasons))
        before = change.head_sha
        change = make_change(spec, target, change, bench, log, followup)
        if change.head_sha == before:  # the attempt failed or changed nothing: stop here
            return change, verification
        verification = verify_change(spec, target, change, None, bench, log)


def _repairs_since_change(change: ChangeRecord) -> int:
    """Repair passes already made since the last fresh change or human steer."""
    count = 0
    for it in reversed(change.iterations):
        if it.kind not in ("repair", "judge"):
            break
        count += 1
    return count


def _note_verification(change: ChangeRecord, verification: VerificationRecord) -> None:
    """Keep the platform's verifier results on the iteration that made this head."""
    if change.iterations and verification.head_sha == change.head_sha:
        change.iterations[-1].verification = ", ".join(
            f"{r.name}:{'pass' if r.passed else 'fail'}" for r in verification.results
        ) or (verification.error or "")


def _failure_feedback(
    spec: CampaignSpec, target: Target, verification: VerificationRecord, max_chars: int
) -> str:
    """What failed, trimmed for the agent: failing tests, first errors with file and line."""
    verifiers = {v.name: v for v in spec.verifiers_for(target)}
    texts = []
    for r in verification.results:
        v = verifiers.get(r.name)
        texts.append(
            extract(
                r.output_tail, r.exit_code, kind=v.extractor if v else "auto",
                argv=v.argv() if v else [], name=r.name, max_chars=max_chars,
                timed_out=r.timed_out, duration_s=r.duration_s, cwd="/workspace",
                report=r.report,
            )
        )  # fmt: skip
    return (
        "The platform ran the verifiers on your change in a fresh sandbox:\n\n"
        + combine(texts, max_chars)
        + "\n\nFix the failure (do not disable, skip or weaken tests)."
    )


def judge_holds(spec: CampaignSpec, change: ChangeRecord) -> str | None:
    """Why the judge gave no verdict on the change's head, when the campaign holds the PR until
    it does (`judge.on_error: hold`); None when nothing holds it."""
    settings = spec.transformation
    verdict = change.verdict
    if (
        isinstance(settings, AgenticTransformation)
        and settings.judge is not None
        and verdict is not None
        and verdict.verdict == "error"
        and (settings.judge.on_error == "hold" or verdict.over_budget)
    ):
        return verdict.error or "no answer"
    return None


def _judge(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, log: Log
) -> ChangeRecord:
    """Ask the judge about the change's diff; its verdict and cost join the change record."""
    settings = spec.transformation
    assert isinstance(settings, AgenticTransformation) and settings.judge is not None
    assert bench.judge is not None and change.head_sha is not None
    if not bench.budget.may_start():  # the judge spends too: it asks the budget like an agent
        why = f"budget: {bench.budget.describe()}"
        log(f"{target.key}: the judge is not asked, the campaign's budget is spent ({why})")
        record = JudgeVerdict(
            head_sha=change.head_sha, verdict="error", error=why, over_budget=True
        )
        return change.model_copy(update={"verdicts": [*change.verdicts, record]})
    try:
        verdict = bench.judge(settings.prompt, change.diff, settings.judge)
    except JudgeError as exc:
        log(f"{target.key}: the judge gave no verdict: {exc}")
        record = JudgeVerdict(head_sha=change.head_sha, verdict="error", error=str(exc)[:500])
        return change.model_copy(update={"verdicts": [*change.verdicts, record]})
    record = JudgeVerdict(
        head_sha=change.head_sha, verdict=verdict.verdict,
        reasons=[r.model_dump() for r in verdict.reasons], summary=verdict.summary,
        model=verdict.model, input_tokens=verdict.input_tokens,
        output_tokens=verdict.output_tokens, cost_usd=verdict.cost_usd,
    )  # fmt: skip
    bench.budget.add(verdict.cost_usd)
    why = "; ".join(f"{r.kind}: {r.detail}" for r in verdict.reasons)
    log(f"{target.key}: judge {verdict.verdict}" + (f" ({why})" if why else "")
        + f", ${verdict.cost_usd:.4f}")  # fmt: skip
    return change.model_copy(
        update={
            "verdicts": [*change.verdicts, record],
            "cost_usd": change.cost_usd + verdict.cost_usd,
            "total_cost_usd": change.total_cost_usd + verdict.cost_usd,
            "reused": False,
        }
    )
