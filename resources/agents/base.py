"""The agent interface and the result every agent run reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from resources.sandboxes.base import Sandbox

EventCallback = Callable[[str], None]  # one short progress line per agent event


class VerifierTool(BaseModel):
    """A verifier the agent runs itself during its run: as the MCP tool
    `mcp__verifiers__run_verifier` and in the stop gate (resources/agents/verifier_mcp.py)."""

    name: str
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=600, gt=0)
    extractor: Literal["auto", "pytest", "go", "jest", "maven", "generic"] = "auto"
    report: str | None = None  # a report file the command writes (resources/agents/reports.py)


class AgentRequest(BaseModel):
    """One agent run: the prompt and the limits it runs under."""

    prompt: str
    session_id: str
    resume: bool = False
    model: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    allowed_tools: list[str] | None = None
    timeout_s: float = 1800
    full_network: bool = Field(
        default=False, description="reach everything; otherwise only the model endpoint"
    )
    home: Path = Field(description="the agent's own state (session store), outside the workspace")
    # The quality loop: the verifiers as the agent's tools and as a gate on finishing.
    verifiers: list[VerifierTool] = Field(default_factory=list)
    verifier_tools: bool = Field(default=True, description="offer `verifiers` as an MCP tool")
    max_stop_blocks: int = Field(
        default=0, ge=0, le=8, description="stop gate: block a finish this often (0: no gate)"
    )
    feedback_chars: int = Field(default=2000, ge=200, le=20000)
    disallowed_tools: list[str] | None = Field(
        default=None, description="tool patterns refused (None: the agent's narrow default)"
    )


class GateDecision(BaseModel):
    """One decision of the stop gate, as its log (stop_gate.py) recorded it."""

    at: str
    decision: Literal["block", "allow"]
    why: str  # failing, passed, limit, no_verifiers, error
    blocks: int = 0  # blocks so far in the run, this one included
    max_stop_blocks: int = 0
    failing: list[str] = Field(default_factory=list)
    results: dict[str, bool] = Field(default_factory=dict)
    duration_s: float | None = None
    reason: str | None = None  # the text the agent was sent back with
    error: str | None = None
    session_id: str | None = None


class VerifierCall(BaseModel):
    """One call of the verifier tool by the agent, as the MCP server logged it."""

    at: str
    name: str
    requested: str
    passed: bool
    exit_code: int
    timed_out: bool = False
    duration_s: float = 0.0
    chars: int = 0  # size of the text the agent got
    feedback: str = ""


class TokenUsage(BaseModel):
    """The tokens a model counted: what an agent run, each model within it, and a change's
    summary all report."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class ModelUsage(TokenUsage):
    """Tokens and cost of one model within an agent run."""

    cost_usd: float = 0.0


class AgentResult(TokenUsage):
    """What an agent run did, as the agent itself reported it."""

    ok: bool
    error: str | None = None
    session_id: str
    subtype: str | None = None
    num_turns: int = 0
    duration_s: float = 0.0
    cost_usd: float = 0.0
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict)
    final_message: str = ""
    transcript: list[dict] = Field(default_factory=list)
    gate_decisions: list[GateDecision] = Field(default_factory=list)
    verifier_calls: list[VerifierCall] = Field(default_factory=list)


class Agent(Protocol):
    """Runs a coding agent in a sandbox's workspace."""

    def run(
        self, sandbox: Sandbox, request: AgentRequest, on_event: EventCallback | None = None
    ) -> AgentResult:
        """Run the agent to completion (or failure) and report what it did."""
        ...
