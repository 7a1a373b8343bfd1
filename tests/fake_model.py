"""A scripted Anthropic Messages API for running the REAL Claude Code CLI in tests.

Only the model is fake: ``ScriptedModel`` is an HTTP server that answers ``POST /v1/messages``
(SSE streaming and plain JSON) from a script of steps, while the CLI pointed at it with
``ANTHROPIC_BASE_URL`` runs its real tool loop (Bash, Edit, Write, Read ...) in the working dir.

    def test_x(scripted_model, tmp_path):
        scripted_model.script = [
            tool("Bash", {"command": "sed -i s/a/b/ f.txt", "description": "edit"}),
            text("edited"),
        ]
        run = run_claude(scripted_model, "do it", cwd=tmp_path / "w", home=tmp_path / "h")
        assert run.result["is_error"] is False

Steps: ``text(s)`` (end_turn), ``tool(name, input)`` / ``tools((name, input), ...)``
(tool_use), ``error(status, [type, message], forever=, times=)``, or a callable
``body -> step``. Every response can carry ``usage=Usage(...)``. Steps are consumed in order
by *main conversation* requests only; auxiliary requests (``max_tokens`` <= 1 quota checks,
requests without ``tools`` or with a non-agent system prompt such as title/topic helpers,
forked memory extraction) get a harmless text and leave the script alone. When the script is
used up, conversation requests get ``text("done")``. Message/tool_use ids are unique for the
whole server lifetime (and carry a random per-server prefix). Requests that force a tool
(``tool_choice: {"type": "tool"}``, as the LLM judge does) take their steps from
``judge_script`` instead and are kept in ``judge_requests``.

The CLI (``claude -p``, needs no login with ANTHROPIC_API_KEY; see ``claude_env``):
``--permission-mode dontAsk --allowedTools Bash Edit Write Read`` runs exactly those tools
(others are denied and listed in ``result.permission_denials``) and needs no IS_SANDBOX;
``--dangerously-skip-permissions`` also works but, as root, only with ``IS_SANDBOX=1``.

What claude 2.1.x sends (observed with 2.1.197)
-----------------------------------------------
* ``HEAD /`` (connectivity probe) first; then ``POST /v1/messages?beta=true`` with
  ``stream: true``, ``model`` from ``--model``, ``max_tokens`` 32000, ``thinking`` enabled,
  ~24 ``tools``, ``system`` = text blocks (billing header, "You are a Claude agent, built on
  Anthropic's Claude Agent SDK.", the agent prompt), ``metadata.user_id`` (a JSON string with
  the session_id) and header ``X-Claude-Code-Session-Id``. The prompt is the last text block
  of the first user message, after several ``<system-reminder>`` blocks.
* Each later request re-sends the whole conversation; the last user message holds the
  ``tool_result`` block(s) (several tool_uses of one response -> one user message).
* ``--resume <id>``: the old messages come again, the new prompt is the last user message.
  If the old run stopped right after a tool_result, 2.1.197 appends the text "Continue from
  where you left off." to that tool_result message and a synthetic assistant "No response
  requested." before the new prompt; other versions put the new prompt into the tool_result
  message itself. ``last_user_text`` handles both.
* The CLI does its own retries (``X-Stainless-Retry-Count`` stays 0).
* With ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (even without it) ``-p`` mode sent no
  auxiliary model requests and no count_tokens; detection is kept for other configurations.

stream-json events (``--output-format stream-json --verbose``), one JSON object per line
------------------------------------------------------------------------------------------
* ``{"type":"system","subtype":"init","session_id","cwd","model","tools":[...],
  "permissionMode","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version",...}``
* ``{"type":"assistant","message":{"id","model","role","content":[ONE block],"usage",
  "stop_reason":null},"parent_tool_use_id":null,"session_id","uuid","request_id"}``: one event
  per content block (text + 2 tool_uses = 3 events sharing ``message.id``). Its ``usage`` is
  message_start's provisional one (output_tokens 1): never sum it, use the result event.
* ``{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id",
  "content","is_error"}]},"session_id","uuid","tool_use_result":<tool specific>}``: one event
  per tool_result.
* ``{"type":"system","subtype":"api_retry","attempt","max_retries","retry_delay_ms",
  "error_status","error":"server_error"|"rate_limit"|"overloaded"}`` per retry.
* On a final API error: an assistant event with ``message.model == "<synthetic>"``, the text
  "API Error: 500 ..." / "API Error: Request rejected (429) · ..." / "API Error: 529 ...",
  and a top-level ``"error"``: "rate_limit" for 429, "server_error" for 500 AND 529.
* Last: ``{"type":"result","subtype":"success"|"error_max_turns"|...,"is_error","result",
  "num_turns","session_id","total_cost_usd","usage":{"input_tokens","output_tokens",
  "cache_creation_input_tokens","cache_read_input_tokens",...},"modelUsage":{<model>:
  {"inputTokens","outputTokens","cacheReadInputTokens","cacheCreationInputTokens","costUSD",
  "contextWindow","maxOutputTokens",...}},"stop_reason","api_error_status",
  "permission_denials":[{"tool_name","tool_use_id","tool_input"}],"terminal_reason",
  "duration_ms","duration_api_ms",...}``. API errors keep subtype "success" but set
  ``is_error: true`` and ``api_error_status``; the exit code is 1 for API errors and
  error_max_turns, 0 otherwise. error_max_turns results have no ``result`` text.

Usage, cost, turns: ``result.usage`` and ``modelUsage[model]`` are the plain sums over the
model responses of the final usage (message_delta's; message_start's provisional
output_tokens is not added). ``total_cost_usd`` is priced from those sums (claude-sonnet-4-5:
$3/M input, $15/M output, $3.75/M cache write, $0.30/M cache read) and is 0 when every call
failed. ``num_turns`` is NOT the number of model calls: it is 1 + the number of tool_result
messages (so ``--max-turns 1`` stops after the first tool ran, reporting num_turns 2).

Retries: 408/409/429/5xx/529 are retried ``CLAUDE_CODE_MAX_RETRIES`` times (default 10,
clamped to 15) with backoff ``min(500ms * 2**(n-1), 32 s)`` + 0..25 % jitter; ``retry-after``
can only lengthen a delay. Default: ~175 s until a permanent 529 fails; with
``CLAUDE_CODE_MAX_RETRIES=2``: ~1.7 s of backoff (~2.5 s per run); 0 fails at once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# ---------------------------------------------------------------------------------------------
# Script steps


@dataclass
class Usage:
    """Token usage reported with one response (defaults are nonzero on purpose)."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 10
    cache_read_input_tokens: int = 50

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass
class ToolUse:
    """One tool_use block; its id is assigned (uniquely) when it is sent."""

    name: str
    input: dict[str, Any]


@dataclass
class Reply:
    """A successful model response: optional text, then zero or more tool uses."""

    text: str | None = None
    tool_uses: list[ToolUse] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None  # default: "tool_use" if tool_uses else "end_turn"

    @property
    def final_stop_reason(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_uses else "end_turn")


@dataclass
class Error:
    """An HTTP error answer in the Anthropic error shape. ``forever`` never leaves the script."""

    status: int
    type: str
    message: str
    forever: bool = False
    retry_after: str | None = None
    times: int = 1  # answered this many times before the script moves on (unless forever)


Step = Reply | Error | Callable[[dict], "Reply | Error"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def text(content: str, usage: Usage | None = None) -> Reply:
    """A final answer (stop_reason end_turn)."""
    return Reply(text=content, usage=usage or Usage())


def tool(
    name: str, input: dict[str, Any], *, text: str | None = None, usage: Usage | None = None
) -> Reply:
    """One tool call (stop_reason tool_use), optionally preceded by a text block."""
    return Reply(text=text, tool_uses=[ToolUse(name, input)], usage=usage or Usage())


def tools(
    *calls: ToolUse | tuple[str, dict[str, Any]],
    text: str | None = None,
    usage: Usage | None = None,
) -> Reply:
    """Several tool calls in one response: ``tools(("Bash", {...}), ("Read", {...}))``."""
    uses = [c if isinstance(c, ToolUse) else ToolUse(*c) for c in calls]
    return Reply(text=text, tool_uses=uses, usage=usage or Usage())


def error(
    status: int,
    type: str | None = None,
    message: str | None = None,
    *,
    forever: bool = False,
    times: int = 1,
    retry_after: str | None = None,
) -> Error:
    """An HTTP error answered ``times`` times (or ``forever``, so the CLI's retries run out).

    529 defaults to ``overloaded_error``, 429 to ``rate_limit_error`` with ``retry-after: 0``.
    """
    etype = type or _ERROR_TYPES.get(status, "api_error")
    if retry_after is None and status == 429:
        retry_after = "0"
    message = message or f"scripted {etype} ({status})"
    return Error(status, etype, message, forever, retry_after, times)


# ---------------------------------------------------------------------------------------------
# Request helpers

_AGENT_MARKERS = ("Claude Agent SDK", "Claude Code", "interactive agent", "You are an agent")


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _system_text(body: dict) -> str:
    return "\n".join(b.get("text", "") for b in _blocks(body.get("system")))


def _strip_reminders(s: str) -> str:
    while "<system-reminder>" in s:
        start = s.index("<system-reminder>")
        end = s.find("</system-reminder>", start)
        if end < 0:
            s = s[:start]
            break
        s = s[:start] + s[end + len("</system-reminder>") :]
    return s.strip()


def last_user_text(body: dict) -> str:
    """The new instruction in the last user message (text blocks minus <system-reminder>s).

    Works for a fresh prompt and for ``--resume`` (new prompt as its own last user message, or
    as a text block next to the last tool_result(s)). "" if the last user message holds only
    tool_results.
    """
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        texts = [_strip_reminders(b.get("text", "")) for b in _blocks(message.get("content"))]
        texts = [t for t in texts if t and _is_prompt_text(t)]
        if texts:
            return "\n".join(texts)
        return ""
    return ""


def _is_prompt_text(s: str) -> bool:
    """Text that is not an internal CLI marker such as ``[Request interrupted by user]``."""
    return not (s.startswith("[Request interrupted") or s.startswith("<command-"))


# Forked helper agents reuse the agent's system prompt and tools; recognise them by their prompt.
_FORK_MARKERS = ("memory extraction subagent",)


def is_auxiliary(body: dict) -> bool:
    """True for requests that are not turns of the main conversation.

    Auxiliary: quota checks (``max_tokens: 1``, content "quota"), small-fast-model helpers
    (session title, topic, bash prefix, summaries: no ``tools`` and a non-agent system prompt)
    and forked helper agents such as memory extraction.
    """
    if (body.get("max_tokens") or 0) <= 1:
        return True
    if not body.get("tools"):
        return True
    system = _system_text(body)
    if not any(marker in system for marker in _AGENT_MARKERS):
        return True
    last = last_user_text(body)
    return any(marker in last for marker in _FORK_MARKERS)


# ---------------------------------------------------------------------------------------------
# The server


class ScriptedModel:
    """A threaded fake Messages API on 127.0.0.1 (ephemeral port) driven by ``.script``."""

    def __init__(
        self,
        script: list[Step] | None = None,
        *,
        aux_text: str = "ok",
        is_auxiliary: Callable[[dict], bool] = is_auxiliary,
    ) -> None:
        self.script: list[Step] = list(script or [])
        self.aux_text = aux_text
        self.is_auxiliary = is_auxiliary
        self.requests: list[dict] = []  # every request: method, path, headers, json, kind
        self.conversation_requests: list[dict] = []  # main conversation /v1/messages only
        self.sent: list[dict] = []  # messages / errors answered to conversation requests
        # Requests that force a tool (`tool_choice: {"type": "tool"}`), as a judge does: they
        # take their steps from `judge_script` (text("done") when it is used up).
        self.judge_script: list[Step] = []
        self.judge_requests: list[dict] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:12]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> ScriptedModel:
        handler = type("Handler", (_Handler,), {"model": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server, "ScriptedModel is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set_script(self, *steps: Step) -> ScriptedModel:
        with self._lock:
            self.script = list(steps)
        return self

    # -- ids: unique over the whole lifetime (and across servers thanks to the random prefix)
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._prefix}{next(self._ids):06d}"

    # -- script
    def next_step(self, body: dict) -> Reply | Error:
        with self._lock:
            if not self.script:
                step: Step = text("done")
            elif isinstance(self.script[0], Error) and (
                self.script[0].forever or self.script[0].times > 1
            ):
                step = self.script[0]
                if not step.forever:
                    self.script[0] = replace(step, times=step.times - 1)
            else:
                step = self.script.pop(0)
        return step(body) if callable(step) else step

    def next_judge_step(self, body: dict) -> Reply | Error:
        """The next step of `judge_script` (text("done") when it is used up)."""
        with self._lock:
            step: Step = self.judge_script.pop(0) if self.judge_script else text("done")
        return step(body) if callable(step) else step

    def record(self, method: str, path: str, headers: dict, body: Any, kind: str) -> None:
        entry = {"method": method, "path": path, "headers": headers, "json": body, "kind": kind}
        with self._lock:
            self.requests.append(entry)
            if kind == "conversation":
                self.conversation_requests.append(entry)
            elif kind == "judge":
                self.judge_requests.append(entry)

    def build_message(self, reply: Reply, model: str) -> dict:
        message_id = self.new_id("msg")
        content: list[dict] = []
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        for use in reply.tool_uses:
            content.append(
                {
                    "type": "tool_use",
                    "id": self.new_id("toolu"),
                    "name": use.name,
                    "input": use.input,
                }
            )
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.final_stop_reason,
            "stop_sequence": None,
            "usage": reply.usage.as_dict(),
        }


_SKIP_HEADERS = {"x-api-key", "authorization", "proxy-authorization"}


class _Handler(BaseHTTPRequestHandler):
    model: ScriptedModel
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing
    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", self.model.new_id("req"))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        body = self._read_body() if self.command not in ("GET", "HEAD") else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP_HEADERS}
        path = self.path.split("?", 1)[0]
        is_messages = self.command == "POST" and path.rstrip("/") == "/v1/messages"
        if is_messages and isinstance(body, dict):
            kind = "auxiliary" if self.model.is_auxiliary(body) else "conversation"
            if (body.get("tool_choice") or {}).get("type") == "tool":
                kind = "judge"
        else:
            kind = "other"
        self.model.record(self.command, self.path, headers, body, kind)

        if kind == "other":
            return self._other(path, body)
        model_name = body.get("model") or "claude-sonnet-4-5"
        if kind == "judge":
            judged = self.model.next_judge_step(body)
            if isinstance(judged, Error):
                error = {"type": judged.type, "message": judged.message}
                return self._send_json(judged.status, {"type": "error", "error": error})
            return self._reply(judged, model_name, bool(body.get("stream")), record=False)
        if kind == "auxiliary":
            reply = Reply(text=self.model.aux_text, usage=Usage(0, 0, 0, 0))
            return self._reply(reply, model_name, bool(body.get("stream")), record=False)
        step = self.model.next_step(body)
        if isinstance(step, Error):
            self.model.sent.append({"error": step.status, "type": step.type})
            payload = {"type": "error", "error": {"type": step.type, "message": step.message}}
            extra = {"retry-after": step.retry_after} if step.retry_after is not None else {}
            return self._send_json(step.status, payload, extra)
        return self._reply(step, model_name, bool(body.get("stream")), record=True)

    def _other(self, path: str, body: Any) -> None:
        if self.command == "HEAD" or path in ("", "/"):
            return self._send_json(200, {})
        if path.endswith("/count_tokens"):
            size = len(json.dumps(body)) if body is not None else 0
            return self._send_json(200, {"input_tokens": max(1, size // 4)})
        payload = {"type": "error", "error": {"type": "not_found_error", "message": path}}
        return self._send_json(404, payload)

    def _reply(self, reply: Reply, model_name: str, stream: bool, record: bool) -> None:
        message = self.model.build_message(reply, model_name)
        if record:
            self.model.sent.append(message)
        if not stream:
            return self._send_json(200, message)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.send_header("request-id", self.model.new_id("req"))
        self.end_headers()
        self.close_connection = True
        for event, data in _sse_events(message):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    do_GET = do_POST = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


def _chunks(s: str, n: int = 2) -> list[str]:
    """Split s into up to n pieces (so clients must concatenate deltas)."""
    if len(s) < 2:
        return [s]
    step = max(1, -(-len(s) // n))
    return [s[i : i + step] for i in range(0, len(s), step)]


def _sse_events(message: dict) -> Iterator[tuple[str, dict]]:
    usage = message["usage"]
    start_usage = dict(usage, output_tokens=min(1, usage["output_tokens"]))
    start = dict(message, content=[], stop_reason=None, usage=start_usage)
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "text": ""},
                },
            )
            for piece in _chunks(block["text"]):
                delta = {"type": "text_delta", "text": piece}
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                },
            )
            for piece in _chunks(json.dumps(block["input"]), 3):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": usage,
        },
    )
    yield "message_stop", {"type": "message_stop"}


# ---------------------------------------------------------------------------------------------
# CLI location, environment, a runner and the fixture

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_TOOLS = ("Bash", "Edit", "Write", "Read")


def require_claude() -> str:
    """The claude binary the platform itself would run (`find_cli`: $CLAUDE_BIN, else this
    checkout's `.tools/claude`, else PATH; never another checkout's), or skip (locally) / fail
    (CI=true) via tests.conftest.require."""
    from resources.agents.claude_code import find_cli
    from tests.conftest import require

    path = find_cli()
    require(path is not None, "claude CLI not installed")
    assert path is not None
    return str(path)


def claude_env(
    model: ScriptedModel,
    home: str | Path,
    *,
    max_retries: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """A clean environment for the real CLI talking to ``model``; all its state under ``home``.

    ``max_retries`` sets CLAUDE_CODE_MAX_RETRIES (default 10 retries, ~3 minutes of backoff).
    """
    home = Path(home)
    for sub in (".claude", ".config", ".cache", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),  # settings, sessions (projects/), .claude.json
        "CLAUDE_CODE_TMPDIR": str(home / "tmp"),  # else /tmp/claude-<uid>/<cwd>/<session>/
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",  # lets root use --dangerously-skip-permissions
    }
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    env.update(extra or {})
    return env


@dataclass
class ClaudeRun:
    """One finished ``claude -p --output-format stream-json --verbose`` process."""

    returncode: int
    events: list[dict]
    stderr: str
    seconds: float
    session_id: str

    @property
    def result(self) -> dict:
        """The final ``{"type": "result"}`` event (empty dict if the CLI died before it)."""
        return next((e for e in reversed(self.events) if e.get("type") == "result"), {})

    def of_type(self, type: str, subtype: str | None = None) -> list[dict]:
        return [
            e
            for e in self.events
            if e.get("type") == type and (subtype is None or e.get("subtype") == subtype)
        ]


def run_claude(
    model: ScriptedModel,
    prompt: str,
    *,
    cwd: str | Path,
    home: str | Path,
    session_id: str | None = None,
    resume: str | None = None,
    max_turns: int = 5,
    permission: str = "dontAsk",
    allowed_tools: tuple[str, ...] = DEFAULT_TOOLS,
    model_name: str = DEFAULT_MODEL,
    max_retries: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> ClaudeRun:
    """Run the real CLI headless against ``model``.

    ``permission`` is a ``--permission-mode`` (``dontAsk``: only ``allowed_tools`` may run) or
    ``"skip"`` for ``--dangerously-skip-permissions`` (as root it needs IS_SANDBOX=1).
    Pass either ``session_id`` (new session, default a fresh uuid) or ``resume``.
    """
    claude = require_claude()
    cmd = [claude, "-p", prompt, "--output-format", "stream-json", "--verbose"]
    cmd += ["--model", model_name, "--max-turns", str(max_turns)]
    if permission == "skip":
        cmd.append("--dangerously-skip-permissions")
    else:
        cmd += ["--permission-mode", permission]
    if allowed_tools:
        cmd += ["--allowedTools", *allowed_tools]
    if resume:
        cmd += ["--resume", resume]
        session_id = resume
    else:
        session_id = session_id or str(uuid.uuid4())
        cmd += ["--session-id", session_id]
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=claude_env(model, home, max_retries=max_retries, extra=env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return ClaudeRun(proc.returncode, events, proc.stderr, time.monotonic() - started, session_id)


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModel]:
    """A started ScriptedModel; set ``.script = [...]`` (or ``.set_script(...)``) in the test."""
    with ScriptedModel() as model:
        yield model
