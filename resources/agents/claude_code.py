"""The Claude Code CLI as an agent: `claude -p` headless, its stream-json events parsed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from resources.agents.base import (
    AgentRequest,
    AgentResult,
    EventCallback,
    GateDecision,
    ModelUsage,
    VerifierCall,
)
from resources.agents.judge import price
from resources.redact import redact, redact_files, secret_values
from resources.sandboxes.base import ExecResult, Sandbox
from resources.sandboxes.model_proxy import DEFAULT_MODEL_URL

DEFAULT_TOOLS = ["Bash", "Edit", "MultiEdit", "Write", "Read", "Glob", "Grep", "LS"]
# A narrow agent by default: pushing is the platform's job, and the agent reaches nothing but
# the model. The sandbox is the real boundary (no credentials, a read-only .git, no network
# beyond the model where the provider can enforce it); this list makes the CLI itself refuse
# the obvious attempts, so the agent learns at once that they are not its job.
DEFAULT_DISALLOWED_TOOLS = [
    "Bash(git push:*)", "Bash(git remote:*)", "Bash(git credential:*)",
    "Bash(gh:*)", "Bash(curl:*)", "Bash(wget:*)", "Bash(ssh:*)", "Bash(scp:*)",
    "Bash(rsync:*)", "Bash(nc:*)", "Bash(ncat:*)", "Bash(telnet:*)", "Bash(ftp:*)",
    "WebFetch", "WebSearch",
]  # fmt: skip
VERIFIER_TOOLS = "mcp__verifiers__*"  # the tool(s) of the verifier MCP server
AGENTS_DIR = Path(__file__).resolve().parent  # verifier_mcp.py, stop_gate.py, extractors.py
LOG_ENTRIES_LIMIT = 200  # gate decisions and verifier calls kept per run
LOG_READ_BYTES = 4_000_000  # of a log's end read back after a run
LogEntry = type[GateDecision] | type[VerifierCall]
TRANSCRIPT_LIMIT = 2000  # events kept per run
FIELD_LIMIT = 4000  # characters kept per string in a stored event
# The CLI's environment: where the model is, and no traffic beyond it. Forwarded by name (not
# as Dagster EnvVars): the CLI reads them from its own environment inside the sandbox.
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

    def __init__(self, cli: Path, env: dict[str, str] | None = None, python: str | None = None):
        """`python`: the interpreter that runs the verifier MCP server and the stop gate in a
        host sandbox (default this process's; in a sandbox image always its `python3`)."""
        self.cli = Path(cli)
        base = os.environ if env is None else env
        self.env = {k: v for k, v in base.items() if k in PASSED_THROUGH and v}
        self.python = python or sys.executable

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

    def argv(
        self, request: AgentRequest, cli: str | None = None, quality: QualityFiles | None = None
    ) -> list[str]:
        """The command line for one run (`cli`: the executable, default the host's CLI;
        `quality`: the verifier tool and stop gate files written for it)."""
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
        # Only the platform's MCP servers: never one a repository's .mcp.json names.
        argv += ["--strict-mcp-config"]
        allowed = list(request.allowed_tools or DEFAULT_TOOLS)
        if quality is not None:
            if quality.mcp_config is not None:
                argv += ["--mcp-config", str(quality.mcp_config)]
                allowed.append(VERIFIER_TOOLS)
            if quality.settings is not None:
                argv += ["--settings", str(quality.settings), "--include-hook-events"]
        # Headless in a sandbox: no one to ask, so only the listed tools run.
        argv += ["--permission-mode", "dontAsk", "--allowedTools", *allowed]
        denied = request.disallowed_tools
        if denied is None:
            denied = DEFAULT_DISALLOWED_TOOLS
        if denied:  # [] widens the agent to what allowedTools allows
            argv += ["--disallowedTools", *denied]
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
        quality = write_quality_files(request, "python3" if sandbox.image else self.python)
        if quality is not None:
            # The server and the hook run inside the sandbox: their code and config, read-only.
            sandbox.readable_paths += [AGENTS_DIR, quality.directory]
            env["MCP_TOOL_TIMEOUT"] = str(int(quality.timeout_s * 1000))
        parser = StreamParser(request.session_id, on_event, secret_values(env))
        try:
            executed = sandbox.exec(
                self.argv(request, cli, quality),
                env=env,
                timeout_s=request.timeout_s,
                network=request.full_network,
                model_endpoint=self.env.get("ANTHROPIC_BASE_URL") or DEFAULT_MODEL_URL,
                on_output=parser.feed,
            )
        finally:
            if quality is not None:
                for path in (AGENTS_DIR, quality.directory):
                    if path in sandbox.readable_paths:
                        sandbox.readable_paths.remove(path)
                shutil.rmtree(quality.directory, ignore_errors=True)
                quality.state_file.unlink(missing_ok=True)
        # The CLI's own session files (read back by --resume) must not keep a secret on disk.
        redact_files(home, secret_values(env))
        result = parser.finish(executed, request)
        if quality is not None:
            secrets = secret_values(env)
            result.gate_decisions = read_log(quality.gate_log, quality.run_id, GateDecision,
                                             secrets)  # fmt: skip
            result.verifier_calls = read_log(quality.call_log, quality.run_id, VerifierCall,
                                             secrets)  # fmt: skip
        return result


@dataclass
class QualityFiles:
    """What one run's verifier tool and stop gate need: the config both read, the CLI's
    `--mcp-config` and `--settings` files (in a temporary directory the sandbox reads), and the
    logs they append to (in the agent's home, which it writes)."""

    run_id: str
    directory: Path
    config: Path
    mcp_config: Path | None
    settings: Path | None
    gate_log: Path
    call_log: Path
    state_file: Path  # the stop gate's block count for this run
    timeout_s: float  # running every verifier once, with room to spare


def quality_config(request: AgentRequest, run_id: str, home: Path) -> dict:
    """The JSON config verifier_mcp.py and stop_gate.py read: the verifiers (name, argv,
    timeout_s, extractor), `max_chars`, `max_stop_blocks`, the stop gate's `state_file`, the
    `gate_log` and `call_log` files, and the `run_id` every log line carries."""
    logs = home / "quality"
    return {
        "run_id": run_id,
        "verifiers": [v.model_dump(mode="json") for v in request.verifiers],
        "max_chars": request.feedback_chars,
        "max_stop_blocks": request.max_stop_blocks,
        "state_file": str(logs / f"stop-gate-{run_id}.json"),
        "gate_log": str(logs / "stop-gate.jsonl"),
        "call_log": str(logs / "verifier-calls.jsonl"),
    }


def write_quality_files(request: AgentRequest, python: str) -> QualityFiles | None:
    """Write the verifier MCP config and the stop-gate settings for one run (`python`: the
    interpreter inside the sandbox); None when the request asks for neither."""
    tools = request.verifier_tools and bool(request.verifiers)
    gate = request.max_stop_blocks > 0 and bool(request.verifiers)
    if not (tools or gate):
        return None
    run_id = uuid.uuid4().hex[:12]
    (request.home / "quality").mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="agent-quality-"))
    config = quality_config(request, run_id, request.home)
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    timeout_s = sum(v.timeout_s for v in request.verifiers) + 60
    mcp_config = settings = None
    if tools:
        mcp_config = directory / "mcp.json"
        server = {
            "type": "stdio",
            "command": python,
            "args": [str(AGENTS_DIR / "verifier_mcp.py"), str(config_path)],
        }
        mcp_config.write_text(json.dumps({"mcpServers": {"verifiers": server}}, indent=1))
    if gate:
        settings = directory / "settings.json"
        # Hook commands run through a shell: every path is quoted.
        command = shlex.join([python, str(AGENTS_DIR / "stop_gate.py"), str(config_path)])
        hook = {"type": "command", "command": command, "timeout": int(timeout_s)}
        settings.write_text(json.dumps({"hooks": {"Stop": [{"hooks": [hook]}]}}, indent=1))
    return QualityFiles(
        run_id=run_id,
        directory=directory,
        config=config_path,
        mcp_config=mcp_config,
        settings=settings,
        gate_log=Path(config["gate_log"]),
        call_log=Path(config["call_log"]),
        state_file=Path(config["state_file"]),
        timeout_s=timeout_s,
    )


def read_log(path: Path, run_id: str, model: LogEntry, secrets: list[str]) -> list:
    """The entries one run appended to a JSON-lines log (malformed lines are skipped)."""
    entries: list = []
    try:
        with path.open("rb") as log:
            # The log keeps every run's lines; this run's are at its end.
            log.seek(max(0, path.stat().st_size - LOG_READ_BYTES))
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return entries
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("run_id") != run_id:
            continue
        try:
            entries.append(model.model_validate(redact(data, secrets)))
        except ValidationError:
            continue
        if len(entries) >= LOG_ENTRIES_LIMIT:
            break
    return entries


class StreamParser:
    """Reads the CLI's stream-json lines as they come and builds the result."""

    def __init__(self, session_id: str, on_event: EventCallback | None, secrets: list[str]):
        self.session_id = session_id
        self.on_event = on_event or (lambda _: None)
        self.secrets = secrets
        self.events: list[dict] = []
        self.result: dict | None = None
        # Each model response's usage as its assistant events carry it (message id -> model,
        # usage): what a run that never prints its result (killed, timed out) has spent.
        self.responses: dict[str, tuple[str, dict]] = {}
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
        elif kind == "system" and event.get("subtype") == "hook_response":
            if event.get("hook_event") == "Stop" and '"block"' in str(event.get("output") or ""):
                self.on_event("agent: stop gate sent it back to work (a verifier fails)")
        elif kind == "assistant":
            message = event.get("message") or {}
            if isinstance(message.get("usage"), dict):
                key = str(message.get("id") or len(self.responses))
                self.responses[key] = (str(message.get("model") or ""), message["usage"])
            for block in message.get("content") or []:
                self._show(block)

    def _show(self, block: dict) -> None:
        if block.get("type") == "text" and block.get("text", "").strip():
            self.on_event(f"agent: {_short(block['text'])}")
        elif block.get("type") == "tool_use":
            args = block.get("input") or {}
            detail = (args.get("command") or args.get("file_path") or args.get("pattern")
                      or args.get("name") or "")  # fmt: skip
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
            cost_usd=float(result.get("total_cost_usd") or 0.0) if result else self.spent(),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
            model_usage=per_model,
            final_message=redact(str(result.get("result") or ""), self.secrets),
            transcript=self.events,
        )

    def spent(self) -> float:
        """What the responses seen so far cost, priced from their usage: the CLI reports its
        total only in the result event, and a run stopped before it must still reach the
        budget (an estimate at the list prices the judge uses)."""
        return round(sum(price(model, usage)[0] for model, usage in self.responses.values()), 6)

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
            return f"the agent reached its budget (${request.max_budget_usd or 0:.4f})"
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
