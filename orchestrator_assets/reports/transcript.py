"""An agent's transcript for people: the stored event stream of each iteration as a timeline.

`timeline` turns a change's agent session into structured entries (iterations, messages, tool
calls and results, the stop gate's and the judge's decisions); the CLI prints them as lines
(`print_transcript`) and the web UI renders them as a timeline, so both show the same thing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator_assets.stages.records import ChangeRecord

EntryKind = Literal[
    "session", "iteration", "prompt", "files", "missing", "start", "message", "tool_call",
    "tool_result", "result", "gate", "counts", "verification", "judge", "final",
]  # fmt: skip
CUT = 300  # characters of a tool call, result or gate reason shown in a line


class TimelineEntry(BaseModel):
    """One step of an agent session as people read it: `label` is the emphasised head (may be
    empty), `text` the rest of the line; `detail` is the untruncated content where a line shows
    only its start (a tool call's input, a tool result, a prompt, the final message)."""

    kind: EntryKind
    label: str = ""
    text: str = ""
    detail: str | None = None
    iteration: int | None = None
    role: str | None = None  # message: who said it (assistant, user)
    tool: str | None = None  # tool_call: the tool's name
    decision: str | None = None  # gate: block or allow; judge: approve, veto or error

    @property
    def line(self) -> str:
        """The entry as one plain line, the way the CLI prints it."""
        if self.label and self.text:
            return f"{self.label} {self.text}"
        return self.label or self.text


def timeline(change: ChangeRecord) -> list[TimelineEntry]:
    """A change's agent session, in order: each iteration with its prompt, files, events, the
    verifiers' and the judge's verdicts, then the judge's verdicts and the final message.
    Empty when no agent ran for the change."""
    summary = change.agent
    if summary is None:
        return []
    entries = [
        TimelineEntry(
            kind="session",
            label="agent session",
            text=f"{summary.session_id} · {len(change.iterations) or 1} iteration(s) · "
            f"${change.total_cost_usd:.4f} in all · {summary.model or ''}",
        )
    ]
    iterations = change.iterations or []
    if not iterations:
        entries.extend(_events(summary.transcript, None))
    for it in iterations:
        entries.append(
            TimelineEntry(
                kind="iteration",
                iteration=it.number,
                label=f"── iteration {it.number} ({it.kind}) · {it.files_changed} file(s) · "
                f"${it.cost_usd:.4f}" + (f" · {it.outcome}" if it.outcome else ""),
            )
        )
        if it.kind != "initial" and it.prompt:
            first = it.prompt.strip().splitlines()[0][:CUT]
            entries.append(
                TimelineEntry(
                    kind="prompt", iteration=it.number, text=f"prompt: {first}", detail=it.prompt
                )
            )
        if it.files:
            entries.append(
                TimelineEntry(
                    kind="files", iteration=it.number, text="files: " + ", ".join(it.files)
                )
            )
        entries.extend(_events(it.transcript, it.number))
        if it.verifier_calls or it.stop_blocks:
            entries.append(
                TimelineEntry(
                    kind="counts",
                    iteration=it.number,
                    text=f"agent's verifier tool calls: {it.verifier_calls} · stop gate "
                    f"blocks: {it.stop_blocks}",
                )
            )
        if it.verification:
            entries.append(
                TimelineEntry(
                    kind="verification",
                    iteration=it.number,
                    text=f"platform verifiers: {it.verification}",
                )
            )
        if it.verdict:
            entries.append(
                TimelineEntry(kind="judge", iteration=it.number, text=f"judge: {it.verdict}")
            )
    for verdict in change.verdicts:
        reasons = "; ".join(f"{r.get('kind')}: {r.get('detail')}" for r in verdict.reasons)
        entries.append(
            TimelineEntry(
                kind="judge",
                label="judge",
                decision=verdict.verdict,
                text=f"{verdict.verdict} on {verdict.head_sha[:8]} · {verdict.model} · "
                f"${verdict.cost_usd:.4f}"
                + (f" · {reasons}" if reasons else "")
                + (f" · {verdict.error}" if verdict.error else ""),
            )
        )
    if summary.final_message:
        entries.append(TimelineEntry(kind="final", label="final message"))
        entries.append(TimelineEntry(kind="final", text=summary.final_message))
    return entries


def print_transcript(console: Console, change: ChangeRecord) -> None:
    """Print a change's agent session: each iteration with its prompt, files, events, the
    verifiers' and the judge's verdicts, and the final message."""
    from rich.text import Text

    entries = timeline(change)
    if not entries:
        console.print("no agent ran for this change")
        return
    for entry in entries:
        if entry.label and entry.text:
            console.print(Text.assemble((entry.label, "bold"), " ", entry.text))
        elif entry.label:
            console.print(Text(entry.label, style="bold"))
        else:
            console.print(entry.text, markup=False)


def _events(transcript: str | None, iteration: int | None) -> list[TimelineEntry]:
    path = Path(transcript) if transcript else None
    if path is None or not path.exists():
        return [
            TimelineEntry(
                kind="missing", iteration=iteration, text="(transcript not stored on this machine)"
            )
        ]
    entries = []
    for line in path.read_text().splitlines():
        for entry in event_entries(json.loads(line)):
            entries.append(entry.model_copy(update={"iteration": iteration}))
    return entries


def event_lines(event: dict) -> list[str]:
    """Readable lines for one stored agent event."""
    return [entry.line for entry in event_entries(event)]


def event_entries(event: dict) -> list[TimelineEntry]:
    """Timeline entries for one stored agent event."""
    kind = event.get("type")
    if kind == "system":
        return _system_entries(event)
    if kind == "result":
        text = (
            f"[result {event.get('subtype')} · {event.get('num_turns')} turns · "
            f"${event.get('total_cost_usd', 0):.4f}]"
        )
        return [TimelineEntry(kind="result", text=text)]
    entries = []
    for block in (event.get("message") or {}).get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            said = block.get("text", "").strip()
            entries.append(TimelineEntry(kind="message", role=kind, text=f"{kind}: {said}"))
        elif block.get("type") == "tool_use":
            given = json.dumps(block.get("input"))
            entries.append(
                TimelineEntry(
                    kind="tool_call",
                    tool=block.get("name"),
                    text=f"→ {block.get('name')} {given[:CUT]}",
                    detail=json.dumps(block.get("input"), indent=2),
                )
            )
        elif block.get("type") == "tool_result":
            content = block.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            entries.append(TimelineEntry(kind="tool_result", text=f"← {text[:CUT]}", detail=text))
    return entries


def _system_entries(event: dict) -> list[TimelineEntry]:
    """The session's start and the stop gate's decisions; the CLI's other notices are noise."""
    subtype = event.get("subtype")
    if subtype == "init":
        text = f"[session {event.get('session_id')} · model {event.get('model')}]"
        return [TimelineEntry(kind="start", text=text)]
    if subtype != "hook_response" or event.get("hook_event") != "Stop":
        return []
    try:
        answer = json.loads(event.get("output") or "{}")
    except ValueError:  # not the gate's JSON: show what the hook said
        return [TimelineEntry(kind="gate", text=f"[stop gate: {str(event.get('output'))[:CUT]}]")]
    if isinstance(answer, dict) and answer.get("decision") == "block":
        reason = str(answer.get("reason") or "").strip()
        first = reason.splitlines()[0][:CUT] if reason else ""
        return [
            TimelineEntry(
                kind="gate",
                decision="block",
                text=f"[stop gate: sent back — {first}]",
                detail=reason or None,
            )
        ]
    return [TimelineEntry(kind="gate", decision="allow", text="[stop gate: let the agent finish]")]
