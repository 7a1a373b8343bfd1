"""An agent's transcript for people: the stored event stream of each iteration as readable lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator_assets.stages.records import ChangeRecord


def print_transcript(console: Console, change: ChangeRecord) -> None:
    """Print a change's agent session: each iteration with its prompt, files, events, the
    verifiers' and the judge's verdicts, and the final message."""
    summary = change.agent
    if summary is None:
        console.print("no agent ran for this change")
        return
    console.print(f"[bold]agent session[/] {summary.session_id} · "
                  f"{len(change.iterations) or 1} iteration(s) · "
                  f"${change.total_cost_usd:.4f} in all · {summary.model or ''}")  # fmt: skip
    iterations = change.iterations or []
    if not iterations:
        _print_events(console, summary.transcript)
    for it in iterations:
        console.print(
            f"[bold]── iteration {it.number} ({it.kind})[/] · {it.files_changed} file(s) · "
            f"${it.cost_usd:.4f}" + (f" · {it.outcome}" if it.outcome else "")
        )
        if it.kind != "initial" and it.prompt:
            console.print("prompt: " + it.prompt.strip().splitlines()[0][:300], markup=False)
        if it.files:
            console.print("files: " + ", ".join(it.files), markup=False)
        _print_events(console, it.transcript)
        if it.verifier_calls or it.stop_blocks:
            console.print(f"agent's verifier tool calls: {it.verifier_calls} · stop gate "
                          f"blocks: {it.stop_blocks}", markup=False)  # fmt: skip
        if it.verification:
            console.print(f"platform verifiers: {it.verification}", markup=False)
        if it.verdict:
            console.print(f"judge: {it.verdict}", markup=False)
    for verdict in change.verdicts:
        reasons = "; ".join(f"{r.get('kind')}: {r.get('detail')}" for r in verdict.reasons)
        console.print(
            f"[bold]judge[/] {verdict.verdict} on {verdict.head_sha[:8]} · {verdict.model} · "
            f"${verdict.cost_usd:.4f}"
            + (f" · {reasons}" if reasons else "")
            + (f" · {verdict.error}" if verdict.error else "")
        )
    if summary.final_message:
        console.print("[bold]final message[/]")
        console.print(summary.final_message, markup=False)


def _print_events(console: Console, transcript: str | None) -> None:
    path = Path(transcript) if transcript else None
    if path is None or not path.exists():
        console.print("(transcript not stored on this machine)")
        return
    for line in path.read_text().splitlines():
        for text in event_lines(json.loads(line)):
            console.print(text, markup=False)


def event_lines(event: dict) -> list[str]:
    """Readable lines for one stored agent event."""
    kind = event.get("type")
    if kind == "system":
        return _system_lines(event)
    if kind == "result":
        return [f"[result {event.get('subtype')} · {event.get('num_turns')} turns · "
                f"${event.get('total_cost_usd', 0):.4f}]"]  # fmt: skip
    lines = []
    for block in (event.get("message") or {}).get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            lines.append(f"{kind}: {block.get('text', '').strip()}")
        elif block.get("type") == "tool_use":
            lines.append(f"→ {block.get('name')} {json.dumps(block.get('input'))[:300]}")
        elif block.get("type") == "tool_result":
            content = block.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            lines.append(f"← {text[:300]}")
    return lines


def _system_lines(event: dict) -> list[str]:
    """The session's start and the stop gate's decisions; the CLI's other notices are noise."""
    subtype = event.get("subtype")
    if subtype == "init":
        return [f"[session {event.get('session_id')} · model {event.get('model')}]"]
    if subtype != "hook_response" or event.get("hook_event") != "Stop":
        return []
    try:
        answer = json.loads(event.get("output") or "{}")
    except ValueError:  # not the gate's JSON: show what the hook said
        return [f"[stop gate: {str(event.get('output'))[:300]}]"]
    if isinstance(answer, dict) and answer.get("decision") == "block":
        reason = str(answer.get("reason") or "").strip()
        return [f"[stop gate: sent back — {reason.splitlines()[0][:300] if reason else ''}]"]
    return ["[stop gate: let the agent finish]"]
