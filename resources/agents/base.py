"""The agent interface and the result every agent run reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from resources.sandboxes.base import Sandbox

EventCallback = Callable[[str], None]  # one short progress line per agent event


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


class ModelUsage(BaseModel):
    """Tokens and cost of one model within an agent run."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


class AgentResult(BaseModel):
    """What an agent run did, as the agent itself reported it."""

    ok: bool
    error: str | None = None
    session_id: str
    subtype: str | None = None
    num_turns: int = 0
    duration_s: float = 0.0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model_usage: dict[str, ModelUsage] = Field(default_factory=dict)
    final_message: str = ""
    transcript: list[dict] = Field(default_factory=list)


class Agent(Protocol):
    """Runs a coding agent in a sandbox's workspace."""

    def run(
        self, sandbox: Sandbox, request: AgentRequest, on_event: EventCallback | None = None
    ) -> AgentResult:
        """Run the agent to completion (or failure) and report what it did."""
        ...
