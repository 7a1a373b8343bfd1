"""The stop gate: a Claude Code `Stop` hook that keeps the agent working while a verifier fails.

When the agent wants to finish, the CLI runs this command (from the `--settings` file the
platform writes, see `claude_code.py`) with the hook's JSON on stdin. It runs every verifier
of the campaign in the workspace; while one fails it answers
`{"decision": "block", "reason": <the trimmed failure>}`, which the CLI gives the agent as its
next instruction, at most `max_stop_blocks` times per agent run (the count lives in a state
file in the agent's home). Then, or once every verifier passes, it lets the agent stop. Any
error of its own lets the agent stop too: the platform's verification, in a fresh sandbox, is
the final gate either way, and a gate that traps an agent helps no one.

Every decision is appended to the JSON-lines gate log, which the platform reads back into the
run's result (`AgentResult.gate_decisions`): its metadata and transcript.

Standard library only: it runs inside the sandbox with whatever Python is there.

    python stop_gate.py CONFIG.json < hook-input.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

if __package__:
    from resources.agents.extractors import DEFAULT_MAX_CHARS, combine
    from resources.agents.verifier_mcp import (
        LOG_LINE_LIMIT,
        append_log,
        load_config,
        run_verifier,
        verifier_specs,
    )
else:  # run as a script inside a sandbox: the sibling files, nothing else needed
    from extractors import DEFAULT_MAX_CHARS, combine  # type: ignore[no-redef]
    from verifier_mcp import (  # type: ignore[no-redef]
        LOG_LINE_LIMIT,
        append_log,
        load_config,
        run_verifier,
        verifier_specs,
    )

BLOCK_PREAMBLE = (
    "You are not done yet: the campaign's verifiers fail on your change (stop gate, block "
    "{n} of {limit}). Fix the cause — do not skip, weaken or delete tests — then finish again."
)


def read_blocks(state_file: str | None) -> int:
    """How many times the gate has blocked in this agent run."""
    if not state_file:
        return 0
    try:
        return int(json.loads(Path(state_file).read_text()).get("blocks", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def write_blocks(state_file: str | None, blocks: int) -> None:
    """Remember the block count for the next stop of this run."""
    if state_file:
        Path(state_file).write_text(json.dumps({"blocks": blocks}))


def decide(config: dict[str, Any], hook: dict[str, Any]) -> dict[str, Any]:
    """The gate's decision for one stop: a log entry with `decision` `block` (and the
    `reason` the agent gets) or `allow`, and why (`passed`, `limit`, `no_verifiers`)."""
    limit = int(config.get("max_stop_blocks") or 0)
    blocks = read_blocks(config.get("state_file"))
    base = {
        "run_id": config.get("run_id"),
        "session_id": hook.get("session_id"),
        "stop_hook_active": bool(hook.get("stop_hook_active")),
        "blocks": blocks,
        "max_stop_blocks": limit,
    }
    specs = verifier_specs(config)
    if not specs:
        return {**base, "decision": "allow", "why": "no_verifiers"}
    if blocks >= limit:
        return {**base, "decision": "allow", "why": "limit"}
    cwd = hook.get("cwd") or config.get("cwd") or os.getcwd()
    max_chars = int(config.get("max_chars") or DEFAULT_MAX_CHARS)
    started = time.monotonic()
    outcomes = [run_verifier(spec, cwd, max_chars) for spec in specs]
    failing = [o for o in outcomes if not o.passed]
    results = {o.name: o.passed for o in outcomes}
    took = round(time.monotonic() - started, 3)
    if not failing:
        return {**base, "decision": "allow", "why": "passed", "results": results,
                "duration_s": took}  # fmt: skip
    blocks += 1
    write_blocks(config.get("state_file"), blocks)
    feedback = combine([o.text for o in failing], max_chars)
    reason = BLOCK_PREAMBLE.format(n=blocks, limit=limit) + "\n\n" + feedback
    return {
        **base,
        "decision": "block",
        "why": "failing",
        "blocks": blocks,
        "failing": [o.name for o in failing],
        "results": results,
        "duration_s": took,
        "reason": reason,
    }


def main(
    argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Run the gate for the hook input on stdin; print the block decision, if any. Always
    exits 0: a blocking answer is JSON on stdout, and any failure lets the agent stop."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    config: dict[str, Any] = {}
    try:
        if len(args) != 1:
            raise ValueError("usage: stop_gate.py CONFIG.json")
        config = load_config(args[0])
        raw = stdin.read()
        hook = json.loads(raw) if raw.strip() else {}
        entry = decide(config, hook if isinstance(hook, dict) else {})
    except Exception as exc:  # fail open: the platform's own verification still gates
        entry = {"run_id": config.get("run_id"), "decision": "allow", "why": "error",
                 "error": f"{type(exc).__name__}: {exc}"[:1000]}  # fmt: skip
    try:
        logged = dict(entry)
        if "reason" in logged:
            logged["reason"] = logged["reason"][:LOG_LINE_LIMIT]
        append_log(config.get("gate_log"), logged)
    except OSError as exc:
        print(f"stop gate: cannot write its log: {exc}", file=sys.stderr)
    if entry["decision"] == "block":
        stdout.write(json.dumps({"decision": "block", "reason": entry["reason"]}) + "\n")
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
