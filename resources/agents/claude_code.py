"""The Claude Code CLI as an agent: `claude -p` headless, its stream-json events parsed."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from resources.agents.base import AgentRequest, AgentResult, EventCallback, ModelUsage
from resources.redact import redact, secret_values
from resources.sandboxes.base import ExecResult, Sandbox
from resources.sandboxes.model_proxy import DEFAULT_MODEL_URL

DEFAULT_TOOLS = ["Bash", "Edit", "MultiEdit", "Write", "Read", "Glob", "Grep", "LS"]
TRANSCRIPT_LIMIT = 2000  # events kept per run
FIELD_LIMIT = 4000  # characters kept per string in a stored event
# The CLI's environment: where the model is, and no traffic beyond it.
PASSED_THROUGH = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN",
                  "CLAUDE_CODE_MAX_RETRIES", "API_TIMEOUT_MS")  # fmt: skip


def find_cli(configured: str | None = None) -> Path | None:
    """The `claude` executable: configured (or CLAUDE_BIN), else the project's `.tools/claude`,
    else on PATH. A configured path that does not exist means: not installed."""
    chosen = configured or os.environ.get("CLAUDE_BIN")
    if chosen:
        return Path(chosen) if Path(chosen).exists() else None
    candidates = [
        str(Path(__file__).resolve().parents[2] / ".tools/claude/node_modules/.bin/claude"),
        shutil.which("claude"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


class ClaudeCodeAgent:
    """Runs `claude -p` in a sandbox with a session id the platform chose."""

    def __init__(self, cli: Path, env: dict[str, str] | None = None):
        self.cli = Path(cli)
        base = os.environ if env is None else env
        self.env = {k: v for k, v in base.items() if k in PASSED_THROUGH and v}

    @property
    def executable(self) -> Path:
        """The CLI's real file (npm's `.bin/claude` is a symlink into the package)."""
        return self.cli.resolve()

    @property
    def package_root(self) -> Path:
        """The folder holding the CLI and its platform package, mounted into the sandbox."""
        for parent in self.executable.parents:
            if parent.name == "node_modules":
                return parent
        return self.executable.parent

    def argv(self, request: AgentRequest, cli: str | None = None) -> list[str]:
        """The command line for one run (`cli`: the executable, default the host's CLI)."""
        argv = [cli or str(self.executable), "-p", request.prompt, "--output-format", "stream-json"]
        argv += ["--verbose"]
        if request.resume:
            argv += ["--resume", request.session_id]
        else:
            argv += ["--session-id", request.session_id]
        if request.model:
            argv += ["--model", request.model]
        if request.max_turns:
            argv += ["--max-turns", str(request.max_turns)]
        if request.max_budget_usd:
            argv += ["--max-budget-usd", f"{request.max_budget_usd:.4f}"]
        # Headless in a sandbox: no one to ask, so only the listed tools run.
        argv += [
            "--permission-mode",
            "dontAsk",
            "--allowedTools",
            *(request.allowed_tools or DEFAULT_TOOLS),
        ]
        return argv

    def run(
        self, sandbox: Sandbox, request: AgentRequest, on_event: EventCallback | None = None
    ) -> AgentResult:
        """Run the CLI to completion and report what it did (never raises for CLI failures)."""
        home = request.home
        for sub in (".claude", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        sandbox.writable_paths.append(home)
        # A sandbox image brings its own CLI (images/Dockerfile.sandbox); a host sandbox gets
        # this one's package mounted read-only.
        cli = "claude" if sandbox.image else None
        if cli is None:
            sandbox.readable_paths.append(self.package_root)
        env = {
            **self.env,
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "IS_SANDBOX": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_TMPDIR": str(home / "tmp"),
        }
        parser = StreamParser(request.session_id, on_event, secret_values(env))
        executed = sandbox.exec(
            self.argv(request, cli),
            env=env,
            timeout_s=request.timeout_s,
            network=request.full_network,
            model_endpoint=self.env.get("ANTHROPIC_BASE_URL") or DEFAULT_MODEL_URL,
            on_output=parser.feed,
        )
        return parser.finish(executed, request)


class StreamParser:
    """Reads the CLI's stream-json lines as they come and builds the result."""

    def __init__(self, session_id: str, on_event: EventCallback | None, secrets: list[str]):
        self.session_id = session_id
        self.on_event = on_event or (lambda _: None)
        self.secrets = secrets
        self.events: list[dict] = []
        self.result: dict | None = None
        self.garbage = 0
        self.lock = threading.Lock()

    def feed(self, line: str) -> None:
        """One output line of the CLI."""
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.garbage += 1
            return
        if not isinstance(event, dict):
            self.garbage += 1
            return
        with self.lock:
            if len(self.events) < TRANSCRIPT_LIMIT:
                self.events.append(_trim(redact(event, self.secrets)))
        kind = event.get("type")
        if kind == "result":
            self.result = event
        elif kind == "system" and event.get("subtype") == "init":
            self.on_event(f"agent session {event.get('session_id')} ({event.get('model')})")
        elif kind == "system" and event.get("subtype") == "api_retry":
            self.on_event(
                f"agent: model API error {event.get('error_status')}, retry "
                f"{event.get('attempt')}/{event.get('max_retries')}"
            )
        elif kind == "assistant":
            for block in (event.get("message") or {}).get("content") or []:
                self._show(block)

    def _show(self, block: dict) -> None:
        if block.get("type") == "text" and block.get("text", "").strip():
            self.on_event(f"agent: {_short(block['text'])}")
        elif block.get("type") == "tool_use":
            args = block.get("input") or {}
            detail = args.get("command") or args.get("file_path") or args.get("pattern") or ""
            self.on_event(
                f"agent → {block.get('name')} {_short(redact(str(detail), self.secrets))}"
            )

    def finish(self, executed: ExecResult, request: AgentRequest) -> AgentResult:
        """The run's result from the final `result` event and how the process ended."""
        result = self.result or {}
        usage = result.get("usage") or {}
        per_model = {
            name: ModelUsage(
                input_tokens=int(u.get("inputTokens", 0)),
                output_tokens=int(u.get("outputTokens", 0)),
                cache_read_tokens=int(u.get("cacheReadInputTokens", 0)),
                cache_write_tokens=int(u.get("cacheCreationInputTokens", 0)),
                cost_usd=float(u.get("costUSD", 0.0)),
            )
            for name, u in (result.get("modelUsage") or {}).items()
        }
        error = self._error(executed, result, request)
        return AgentResult(
            ok=error is None,
            error=error,
            session_id=result.get("session_id") or self.session_id,
            subtype=result.get("subtype"),
            num_turns=int(result.get("num_turns") or 0),
            duration_s=round(
                float(result.get("duration_ms") or executed.duration_s * 1000) / 1000, 3
            ),
            cost_usd=float(result.get("total_cost_usd") or 0.0),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            model_usage=per_model,
            final_message=redact(str(result.get("result") or ""), self.secrets),
            transcript=self.events,
        )

    def _error(self, executed: ExecResult, result: dict, request: AgentRequest) -> str | None:
        if executed.timed_out:
            return f"the agent timed out after {request.timeout_s:.0f}s"
        if not result:
            tail = redact(executed.output_tail.strip()[-600:], self.secrets)
            what = f"{self.garbage} unparsable line(s)" if self.garbage else "no output"
            return (
                f"the agent CLI exited with code {executed.exit_code} without a result "
                f"({what}): {tail or '(empty)'}"
            )
        subtype = result.get("subtype") or ""
        if subtype == "error_max_turns":
            return f"the agent reached its turn limit ({request.max_turns} turns)"
        if "budget" in subtype:
            return f"the agent reached its budget (${request.max_budget_usd or 0:.2f})"
        if result.get("is_error"):
            message = redact(str(result.get("result") or subtype or "unknown error"), self.secrets)
            return f"the agent failed: {_short(message, 400)}"
        if executed.exit_code != 0:
            return f"the agent CLI exited with code {executed.exit_code}"
        return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _trim(value):
    if isinstance(value, str):
        return value if len(value) <= FIELD_LIMIT else value[:FIELD_LIMIT] + "…(truncated)"
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim(v) for v in value]
    return value
