"""Review decisions from the target page: a confirmation, then the same decision the CLI's
`approve`, `reject` and `steer` record (`stages/review.py`: prepare, then record)."""

from __future__ import annotations

import time
import uuid

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.stages.records import ReviewDecision
from orchestrator_assets.stages.review import prepare_decision, record_decision
from orchestrator_assets.ui.security import checked_form
from orchestrator_assets.ui.web import redirect, render, state

ACTIONS = {
    "approve": "Approve the whole change",
    "approve_files": "Approve only the selected files",
    "reject": "Reject the change",
    "steer": "Send the change back to its agent",
}
COMMENTS_HEAD = "Comments on the diff:"


def steer_prompt(prompt: str, comments: list[str]) -> str:
    """The prompt a steer sends: the reviewer's words, then each line comment as
    `  path:line: comment` (the form a GitHub review's line comments take)."""
    parts = [prompt.strip()] if prompt.strip() else []
    lines = [f"  {c.strip()}" for c in comments if c.strip()]
    if lines:
        parts.append("\n".join([COMMENTS_HEAD, *lines]))
    return "\n\n".join(parts)


def decision_from(form: FormData, target: str, actor: str) -> ReviewDecision:
    """The decision a submitted form asks for; a clear error for an incomplete one."""
    action = str(form.get("action") or "")
    if action not in ACTIONS:
        raise OrchestratorError(f"unknown action {action!r}: approve, approve_files, reject, steer")
    reason = str(form.get("reason") or "").strip() or None
    files = [str(f) for f in form.getlist("files") if str(f).strip()]
    if action == "approve":
        return ReviewDecision(decision="approve", target=target, actor=actor, reason=reason)
    if action == "approve_files":
        if not files:
            raise OrchestratorError("approve selected files: tick at least one file first")
        return ReviewDecision(
            decision="approve", target=target, actor=actor, reason=reason, files=files
        )
    if action == "reject":
        return ReviewDecision(decision="reject", target=target, actor=actor, reason=reason)
    comments = [str(c) for c in form.getlist("comment")]
    prompt = steer_prompt(str(form.get("prompt") or ""), comments)
    if not prompt:
        raise OrchestratorError(
            "steer needs a prompt: write what the agent should do, or comment on diff lines"
        )
    only = files if form.get("steer_files") else []
    return ReviewDecision(
        decision="steer", target=target, actor=actor, reason=reason, prompt=prompt, files=only
    )


async def decide(request: Request) -> Response:
    """First post: check the decision and ask for confirmation; confirmed: record it."""
    form = await checked_form(request)
    data = state(request)
    campaign, target = request.path_params["campaign"], request.path_params["target"]
    spec = data.spec(campaign)
    page = f"/c/{campaign}/t/{target}"
    actor = request.state.actor
    try:
        if form.get("decision_json"):  # the confirmation: exactly what was shown
            decision = ReviewDecision.model_validate_json(str(form["decision_json"]))
            # Only what the reviewer chose comes from the page; who, when and how are the server's.
            decision = decision.model_copy(
                update={"actor": actor, "target": target, "source": "ui", "at": time.time(),
                        "id": uuid.uuid4().hex}
            )  # fmt: skip
        else:
            decision = decision_from(form, target, actor)
        made = await _in_thread(prepare_decision, data.instance, spec, decision)
    except OrchestratorError as exc:
        return redirect(page, str(exc), "error")
    if not form.get("decision_json") or form.get("confirm") != "yes":
        return render(
            request,
            "confirm.html",
            spec=spec,
            target=target,
            decision=decision,
            decision_json=decision.model_dump_json(),
            title=ACTIONS[str(form.get("action") or "approve")],
            action=str(form.get("action") or ""),
        )
    await _in_thread(record_decision, data.instance, spec, made)
    return redirect(
        page,
        f"recorded: {made.describe()}. The next run of the target applies it (the review "
        f"sensor starts one when the daemon runs, or `orchestrator run --campaign {spec.name} "
        f"--target {target}`).",
    )


async def _in_thread(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
