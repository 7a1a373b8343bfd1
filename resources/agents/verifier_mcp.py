"""The campaign's verifiers as the agent's own tools: a stdio MCP server named `verifiers`.

The Claude Code CLI starts it from the `--mcp-config` file the platform writes (see
`claude_code.py`); the agent sees one tool, `mcp__verifiers__run_verifier(name)`, where `name`
is one of the campaign's verifiers or `all`. The tool runs the verifier's command in the
agent's workspace (the server's working directory) under the verifier's timeout and answers
with the extractor's text (`extractors.py`): one line for a pass; the failing tests and first
errors with file and line, at most `max_chars` characters, for a failure. Each call is also
appended to a JSON-lines call log the platform reads back after the run.

A verifier that declares a `report` file (JUnit XML, `jest --json --outputFile`, `go test
-json` lines; relative to the workspace) is judged from that file when this run wrote it
(`reports.py`); a file the run created is removed afterwards, so it does not end up in the
agent's change.

It runs inside the sandbox, with whatever Python the sandbox has:

- with the `mcp` package importable (the platform's own virtualenv, which a local sandbox
  uses) it is served by the SDK's `MCPServer` (`FastMCP` in mcp 1.x);
- otherwise by a small built-in JSON-RPC loop implementing the part of MCP that the CLI uses
  over stdio: `initialize`, `ping`, `tools/list` and `tools/call`. Both answer the same tool
  the same way; `VERIFIER_MCP_IMPL=mcp|builtin` forces one.

The built-in loop stays because the SDK does not fit every sandbox: the docker sandbox's
image (images/Dockerfile.sandbox) has a bare Debian python3 with only ruff and pytest
installed, a target's own image may have less, and this folder is mounted read-only without
a virtualenv; installing `mcp` (pydantic, anyio, starlette, …) into every image and keeping
it in step with the platform's is more than the four methods the CLI calls. So this file,
`extractors.py` and `reports.py` use only the standard library at import time.

    python verifier_mcp.py CONFIG.json      # CONFIG: see `QualityConfig` in claude_code.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__:
    from resources.agents.extractors import DEFAULT_MAX_CHARS, EXTRACTORS, combine, extract
    from resources.agents.reports import read_report
else:  # run as a script inside a sandbox: the sibling files, nothing else needed
    from extractors import (  # type: ignore[no-redef]
        DEFAULT_MAX_CHARS,
        EXTRACTORS,
        combine,
        extract,
    )
    from reports import read_report  # type: ignore[no-redef]

SERVER_NAME = "verifiers"
TOOL_NAME = "run_verifier"
PROTOCOL_VERSION = "2025-06-18"  # answered when the client asks for none we know
KNOWN_PROTOCOLS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
CAPTURE_HEAD = 200_000  # characters of a verifier's output kept from its start ...
CAPTURE_TAIL = 200_000  # ... and from its end (what extractors need is at one or the other)
LOG_LINE_LIMIT = 8000  # characters of feedback kept per log line, and per output line ...
JSON_LINE_LIMIT = CAPTURE_TAIL  # ... but `jest --json` prints its whole report as one line
# The verifiers run repository code: they do not get the model's credentials.
WITHHELD_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "MCP_", "AWS_", "GITHUB_", "GH_")


@dataclass
class VerifierSpec:
    """One verifier the agent may run: its name, argv, timeout, extractor and the report
    file it writes, if any (relative to the workspace)."""

    name: str
    argv: list[str]
    timeout_s: float = 600
    extractor: str = "auto"
    report: str | None = None


@dataclass
class Outcome:
    """What one verifier run did, and the trimmed text the agent gets."""

    name: str
    passed: bool
    exit_code: int
    duration_s: float
    timed_out: bool
    text: str


def load_config(path: str | Path) -> dict[str, Any]:
    """The JSON config the platform wrote; raises ValueError naming what is wrong."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the verifier config {path}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("verifiers"), list):
        raise ValueError(f"{path}: the config needs a `verifiers` list")
    for i, v in enumerate(config["verifiers"]):
        if not (isinstance(v, dict) and isinstance(v.get("name"), str) and v.get("argv")):
            raise ValueError(f"{path}: verifiers.{i} needs a `name` and an `argv` list")
        if v.get("extractor", "auto") not in EXTRACTORS:
            raise ValueError(f"{path}: verifiers.{i}.extractor {v['extractor']!r} is unknown")
        if not isinstance(v.get("report") or "", str):
            raise ValueError(f"{path}: verifiers.{i}.report must be a path")
    return config


def verifier_specs(config: dict[str, Any]) -> list[VerifierSpec]:
    """The config's verifiers."""
    return [
        VerifierSpec(
            name=v["name"],
            argv=[str(a) for a in v["argv"]],
            timeout_s=float(v.get("timeout_s") or 600),
            extractor=v.get("extractor") or "auto",
            report=v.get("report") or None,
        )
        for v in config["verifiers"]
    ]


def verifier_env() -> dict[str, str]:
    """The environment a verifier runs with: this process's, less the credentials."""
    return {k: v for k, v in os.environ.items() if not k.startswith(WITHHELD_ENV_PREFIXES)}


def run_verifier(spec: VerifierSpec, cwd: str, max_chars: int = DEFAULT_MAX_CHARS) -> Outcome:
    """Run one verifier in `cwd` (no shell) under its timeout; its output is bounded in
    memory and trimmed by its extractor (or read from its report file)."""
    report = Path(cwd, spec.report) if spec.report else None
    report_existed = report is not None and report.exists()
    started = time.monotonic()
    started_at = time.time()  # the report must be newer than this
    try:
        proc = subprocess.Popen(
            spec.argv,
            cwd=cwd,
            env=verifier_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a timeout kills what it started, too
        )
    except OSError as exc:
        text = f"FAIL {spec.name}: cannot start {spec.argv[0]!r}: {exc.strerror or exc}"
        return Outcome(spec.name, False, 127, 0.0, False, text)
    capture = _Capture()
    reader = threading.Thread(target=capture.read, args=(proc,), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=5)
    duration = round(time.monotonic() - started, 3)
    report_text = read_report(report, since=started_at) if report else None
    if report is not None and not report_existed:
        with suppress(OSError):  # the run's by-product, not part of the agent's change
            report.unlink()
    text = extract(
        capture.text(),
        proc.returncode,
        kind=spec.extractor,
        argv=spec.argv,
        name=spec.name,
        max_chars=max_chars,
        timed_out=timed_out,
        duration_s=duration,
        cwd=cwd,
        report=report_text,
    )
    passed = proc.returncode == 0 and not timed_out
    return Outcome(spec.name, passed, proc.returncode, duration, timed_out, text)


class _Capture:
    """A process's output, keeping its head and its tail within a fixed size."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.head_size = 0
        self.tail: list[str] = []
        self.tail_size = 0
        self.dropped = 0

    def read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            line = line[: JSON_LINE_LIMIT if line.startswith("{") else LOG_LINE_LIMIT]
            if self.head_size < CAPTURE_HEAD:
                self.head.append(line)
                self.head_size += len(line)
                continue
            self.tail.append(line)
            self.tail_size += len(line)
            while self.tail_size > CAPTURE_TAIL:
                self.tail_size -= len(self.tail.pop(0))
                self.dropped += 1

    def text(self) -> str:
        gap = [f"… ({self.dropped} lines left out) …\n"] if self.dropped else []
        return "".join([*self.head, *gap, *self.tail])


def run_named(
    specs: Sequence[VerifierSpec], name: str, cwd: str, max_chars: int
) -> tuple[str, list[Outcome]]:
    """Run the verifier called `name` (or every one for `all`); the text for the agent and
    each run's outcome. An unknown name is answered with the known ones."""
    chosen = list(specs) if name == "all" else [s for s in specs if s.name == name]
    if not chosen:
        known = ", ".join([s.name for s in specs] + ["all"])
        return f"unknown verifier {name!r}; known: {known}", []
    outcomes = [run_verifier(s, cwd, max_chars) for s in chosen]
    if len(outcomes) == 1:
        return outcomes[0].text, outcomes
    return combine([o.text for o in outcomes], max_chars), outcomes


def append_log(path: str | None, entry: dict[str, Any]) -> None:
    """Append one JSON line to a log file (a missing path: nothing is logged)."""
    if not path:
        return
    entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry}
    line = json.dumps(entry, ensure_ascii=False)
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def tool_description(specs: Sequence[VerifierSpec]) -> str:
    """What the agent reads about the tool."""
    names = "; ".join(f"`{s.name}`: {' '.join(s.argv)}" for s in specs)
    return (
        "Run one of the campaign's verifiers (the checks your change must pass before it is "
        "accepted) in the workspace, or `all` of them. A pass answers in one line; a failure "
        "answers with the failing tests and the first errors with file and line. "
        f"Verifiers: {names}."
    )


class VerifierTools:
    """The tool's behaviour, shared by both server implementations."""

    def __init__(self, config: dict[str, Any], cwd: str | None = None):
        self.specs = verifier_specs(config)
        self.max_chars = int(config.get("max_chars") or DEFAULT_MAX_CHARS)
        self.call_log = config.get("call_log")
        self.run_id = config.get("run_id")
        self.cwd = cwd or config.get("cwd") or os.getcwd()

    @property
    def names(self) -> list[str]:
        """The names the tool accepts."""
        return [s.name for s in self.specs] + ["all"]

    def input_schema(self) -> dict[str, Any]:
        """The tool's JSON schema: one `name` from the campaign's verifiers or `all`."""
        return {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "enum": self.names,
                    "description": "the verifier to run, or `all`",
                }
            },
            "required": ["name"],
        }

    def call(self, name: str) -> tuple[str, bool]:
        """Run the named verifier(s); the text and whether the name was known."""
        text, outcomes = run_named(self.specs, name, self.cwd, self.max_chars)
        for outcome in outcomes:
            append_log(
                self.call_log,
                {
                    "run_id": self.run_id,
                    "name": outcome.name,
                    "requested": name,
                    "passed": outcome.passed,
                    "exit_code": outcome.exit_code,
                    "timed_out": outcome.timed_out,
                    "duration_s": outcome.duration_s,
                    "chars": len(text),
                    "feedback": text[:LOG_LINE_LIMIT],
                },
            )
        return text, bool(outcomes)


# the built-in server ----------------------------------------------------------------------------


def serve_builtin(tools: VerifierTools, stdin: Any = None, stdout: Any = None) -> None:
    """Answer MCP over stdio (newline-delimited JSON-RPC 2.0) until stdin closes: the subset
    the Claude Code CLI uses with a tools-only server."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout

    def send(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    for raw in stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            message = json.loads(raw)
        except ValueError:
            send(_rpc_error(None, -32700, "parse error"))
            continue
        if not isinstance(message, dict) or "method" not in message:
            continue  # a response to a request we never send, or garbage
        if "id" not in message:
            continue  # a notification (initialized, cancelled): nothing to answer
        reply = _answer(tools, message)
        send(reply)


def _answer(tools: VerifierTools, message: dict[str, Any]) -> dict[str, Any]:
    method, rid = message["method"], message["id"]
    params = message.get("params") or {}
    if method == "initialize":
        asked = params.get("protocolVersion")
        return _rpc_result(
            rid,
            {
                "protocolVersion": asked if asked in KNOWN_PROTOCOLS else PROTOCOL_VERSION,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": SERVER_NAME, "version": "1.0.0"},
            },
        )
    if method == "ping":
        return _rpc_result(rid, {})
    if method == "tools/list":
        tool = {
            "name": TOOL_NAME,
            "description": tool_description(tools.specs),
            "inputSchema": tools.input_schema(),
        }
        return _rpc_result(rid, {"tools": [tool]})
    if method == "tools/call":
        if params.get("name") != TOOL_NAME:
            return _rpc_error(rid, -32602, f"unknown tool {params.get('name')!r}")
        name = str((params.get("arguments") or {}).get("name") or "")
        try:
            text, known = tools.call(name)
        except Exception as exc:  # a crash answers the agent instead of killing the server
            text, known = f"the verifier {name!r} could not run: {exc}", False
        return _rpc_result(rid, {"content": [{"type": "text", "text": text}], "isError": not known})
    if method in ("resources/list", "prompts/list"):
        return _rpc_result(rid, {method.split("/")[0]: []})
    return _rpc_error(rid, -32601, f"method not found: {method}")


def _rpc_result(rid: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def _rpc_error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


# the SDK server ---------------------------------------------------------------------------------


def sdk_server(tools: VerifierTools) -> Any:
    """The same tool on the `mcp` package's server (raises ImportError without it)."""
    try:
        from mcp.server.mcpserver import MCPServer  # mcp >= 2
    except ImportError:
        from mcp.server.fastmcp import FastMCP as MCPServer  # mcp 1.x

    server = MCPServer(SERVER_NAME, log_level="WARNING")

    def run_verifier(name: str) -> str:
        """Run a verifier (see the tool description)."""
        text, _ = tools.call(name)
        return text

    server.add_tool(
        run_verifier,
        name=TOOL_NAME,
        description=tool_description(tools.specs) + f" Names: {', '.join(tools.names)}.",
        structured_output=False,
    )
    return server


def implementation() -> str:
    """Which server answers: `mcp` when the package is importable (or forced), else
    `builtin`."""
    forced = os.environ.get("VERIFIER_MCP_IMPL", "").strip().lower()
    if forced in ("mcp", "builtin"):
        return forced
    try:
        import mcp  # noqa: F401
    except ImportError:
        return "builtin"
    return "mcp"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the verifiers named in the config file given as the only argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: verifier_mcp.py CONFIG.json", file=sys.stderr)
        return 2
    try:
        tools = VerifierTools(load_config(args[0]))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if implementation() == "mcp":
        sdk_server(tools).run("stdio")
    else:
        serve_builtin(tools)
    return 0


if __name__ == "__main__":
    sys.exit(main())
