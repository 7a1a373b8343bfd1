"""Running a campaign's transformation in a target's sandbox: its command or image, or its coding
agent with the verifiers offered as tools, the session stored for later passes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import AgenticTransformation, DeterministicTransformation
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.prompts import build_followup_prompt, build_prompt
from orchestrator_assets.stages.records import (
    AgentSummary,
    ChangeRecord,
)
from orchestrator_assets.stages.workbench import FollowUp, Log, Workbench
from orchestrator_assets.stages.workspaces import in_directory, scope_note
from resources.agents.base import AgentRequest, TokenUsage, VerifierTool
from resources.sandboxes.base import ExecResult, Sandbox


def run_command(
    transformation: DeterministicTransformation,
    sandbox: Sandbox,
    bench: Workbench,
    on_output: Callable[[str], None],
    target: Target | None = None,
) -> ExecResult:
    """Run a deterministic transformation (its command, or its image) in the sandbox; a
    command runs from the `target`'s directory when it is a workspace (an image at the root)."""
    timeout_s = transformation.timeout_s or bench.default_timeout_s
    with bench.command_slot():
        if transformation.image:
            return sandbox.run_image(
                transformation.image,
                transformation.image_args(),
                entrypoint=transformation.entrypoint(),
                env=transformation.env,
                timeout_s=timeout_s,
                network=bench.network,
                on_output=on_output,
            )
        return sandbox.exec(
            in_directory(transformation.argv(), target) if target else transformation.argv(),
            env=transformation.env,
            timeout_s=timeout_s,
            network=bench.network,
            on_output=on_output,
        )


def run_agent(
    spec: CampaignSpec,
    target: Target,
    base_branch: str,
    sandbox: Sandbox,
    bench: Workbench,
    base: ChangeRecord,
    log: Log,
    prior: ChangeRecord | None = None,
    followup: FollowUp | None = None,
) -> tuple[ChangeRecord, str | None]:
    """Run the agent in the sandbox; the record gains its cost and summary, and why it failed.

    A follow-up resumes the session that made `prior`, so the agent keeps the conversation.
    """
    assert bench.agent is not None and isinstance(spec.transformation, AgenticTransformation)
    settings = spec.transformation
    share = spec.budget_usd / len(spec.targets) if spec.budget_usd else None
    limits = [x for x in (settings.max_budget_usd, share) if x]
    home_root = bench.agent_homes or sandbox.workspace.parent / "agent-home"
    resume = followup is not None and prior is not None and prior.agent is not None
    number = (prior.iteration or 1) + 1 if resume and prior is not None else 1
    request = AgentRequest(
        prompt=build_followup_prompt(spec, target, followup)  # type: ignore[arg-type]
        if resume
        else build_prompt(spec, target, base_branch) + scope_note(target),
        session_id=prior.agent.session_id if resume else str(uuid.uuid4()),  # type: ignore[union-attr]
        resume=resume,
        model=settings.model,
        max_turns=settings.max_turns,
        max_budget_usd=min(limits) if limits else None,
        allowed_tools=settings.allowed_tools,
        timeout_s=settings.timeout_s or bench.default_timeout_s,
        home=home_root / spec.id / target.key,
        full_network=bench.network,
        verifiers=[
            VerifierTool(
                name=v.name,
                argv=in_directory(v.argv(), target),
                timeout_s=v.timeout_s,
                extractor=v.extractor,
                report=v.report,
            )
            for v in spec.verifiers_for(target)
        ],
        verifier_tools=settings.verifier_tools,
        max_stop_blocks=settings.max_stop_blocks,
        feedback_chars=settings.feedback_chars,
        disallowed_tools=settings.disallowed_tools,
    )
    result = bench.agent.run(sandbox, request, lambda line: log(f"{target.key}: {line}"))
    bench.budget.add(result.cost_usd)
    transcript = None
    if bench.transcripts is not None:
        name = result.session_id + (f".{number}" if number > 1 else "")
        path = bench.transcripts / spec.id / target.key / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e) + "\n" for e in result.transcript))
        transcript = str(path)
    summary = AgentSummary(
        session_id=result.session_id,
        model=settings.model or next(iter(result.model_usage), None),
        num_turns=result.num_turns,
        duration_s=result.duration_s,
        **result.model_dump(include=set(TokenUsage.model_fields)),
        model_usage={k: v.model_dump() for k, v in result.model_usage.items()},
        final_message=result.final_message,
        transcript=transcript,
        verifier_calls=[
            {"name": c.name, "passed": c.passed, "exit_code": c.exit_code, "chars": c.chars}
            for c in result.verifier_calls
        ],
        gate_decisions=[
            {"decision": d.decision, "why": d.why, "failing": d.failing}
            for d in result.gate_decisions
        ],
    )
    if summary.verifier_calls or summary.gate_decisions:
        log(f"{target.key}: agent ran {len(summary.verifier_calls)} verifier tool call(s); "
            f"the stop gate sent it back {summary.stop_blocks} time(s)")  # fmt: skip
    log(f"{target.key}: agent {'done' if result.ok else 'FAILED'} in {result.num_turns} turn(s), "
        f"${result.cost_usd:.4f}")  # fmt: skip
    record = base.model_copy(
        update={
            "agent": summary,
            "cost_usd": result.cost_usd,
            "total_cost_usd": base.total_cost_usd + result.cost_usd,
        }
    )
    return record, None if result.ok else result.error
