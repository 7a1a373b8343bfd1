"""What runs in a target's sandbox, as a campaign file says it: commands, the transformation (a
command, an image or an agent's prompt, with its judge) and the verifiers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.slugs import checked_name, dagster_name

Command = str | list[str]


def to_argv(command: Command) -> list[str]:
    """A command as an argv list: a string is split like a shell would, but no shell runs."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def check_command(value: Command) -> Command:
    """A command as given, once it is known to split into a non-empty argv."""
    try:
        argv = to_argv(value)
    except ValueError as exc:
        raise ValueError(f"cannot split command: {exc}") from None
    if not argv or not argv[0]:
        raise ValueError("command is empty")
    return value


class StrictModel(BaseModel):
    """A model of a campaign file's part: an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class DeterministicTransformation(StrictModel):
    """A command, or a container image, run with args and env in the target's workspace.

    With `image`, the image runs with the workspace mounted at `/workspace` (its working
    directory) and `args` as its arguments; `command`, if given, replaces its entrypoint.
    """

    kind: Literal["deterministic"]
    command: Command | None = None
    image: str | None = Field(default=None, min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: int | None = Field(default=None, gt=0)

    _check = field_validator("command")(lambda v: check_command(v) if v is not None else v)

    @model_validator(mode="after")
    def _something_to_run(self) -> DeterministicTransformation:
        if self.command is None and self.image is None:
            raise ValueError("a deterministic transformation needs a `command` or an `image`")
        return self

    def argv(self) -> list[str]:
        """The full argv to run (with an image: what follows its entrypoint)."""
        return (to_argv(self.command) if self.command is not None else []) + list(self.args)

    def entrypoint(self) -> list[str] | None:
        """The image's entrypoint replacement (None: the image's own)."""
        return to_argv(self.command) if self.image and self.command is not None else None

    def image_args(self) -> list[str]:
        """The arguments given to the image."""
        return list(self.args)


class AgenticTransformation(StrictModel):
    """A prompt given to a coding agent in the target's workspace."""

    kind: Literal["agentic"]
    prompt: str = Field(min_length=1)
    agent: Literal["claude-code"] = "claude-code"
    model: str | None = None
    max_turns: int | None = Field(default=None, gt=0)
    max_budget_usd: float | None = Field(default=None, gt=0)
    allowed_tools: list[str] | None = None
    timeout_s: int | None = Field(default=None, gt=0)
    # The quality loop (resources/agents: verifier_mcp, stop_gate, judge).
    verifier_tools: bool = Field(
        default=True, description="offer the verifiers to the agent as MCP tools"
    )
    max_stop_blocks: int = Field(
        default=3, ge=0, le=8,
        description="the stop gate sends the agent back this often while a verifier fails (0: off)",
    )  # fmt: skip
    repair_attempts: int = Field(
        default=0, ge=0, le=10,
        description="resume the agent with the failure when the platform's verification fails",
    )  # fmt: skip
    feedback_chars: int = Field(
        default=2000, ge=200, le=20000, description="size bound of a verifier failure's text"
    )
    judge: JudgeConfig | None = None
    disallowed_tools: list[str] | None = Field(
        default=None,
        description="tool patterns the agent may not use (default: pushing, git remotes and "
        "network clients; [] widens the agent to whatever allowed_tools allows)",
    )


class JudgeConfig(StrictModel):
    """A model that compares the diff with the request after the verifiers pass."""

    model: str = "claude-sonnet-4-5"
    criteria: list[str] = Field(default_factory=list, description="checked besides the defaults")
    on_veto: Literal["repair", "fail"] = "repair"
    on_error: Literal["approve", "hold"] = Field(
        default="approve",
        description="when the judge gives no verdict (API error): let the PR open, or hold it "
        "until a later run's judge answers",
    )
    max_diff_chars: int = Field(default=60_000, ge=1000, le=400_000)


AgenticTransformation.model_rebuild()


Transformation = Annotated[
    DeterministicTransformation | AgenticTransformation, Field(discriminator="kind")
]


class Verifier(StrictModel):
    """A named command that must pass in the sandbox before a PR is opened."""

    name: str
    command: Command
    timeout_s: int = Field(default=600, gt=0, alias="timeout")
    extractor: Literal["auto", "pytest", "go", "jest", "maven", "generic"] = Field(
        default="auto", description="how a failure is trimmed for the agent (auto: by command)"
    )
    report: str | None = Field(
        default=None,
        description="a report file the command writes, relative to the workspace: JUnit XML "
        "(pytest --junitxml=…, surefire TEST-*.xml), jest --json --outputFile=…, or go test "
        "-json lines; read instead of the console text when this run wrote it",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _check = field_validator("command")(check_command)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return checked_name(value, "verifier")

    @field_validator("report")
    @classmethod
    def _report(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.strip() or value.startswith("/") or ".." in Path(value).parts
        ):
            raise ValueError(f"report {value!r} must be a relative path inside the workspace")
        return value

    @property
    def check_name(self) -> str:
        """The name of this verifier's asset check."""
        return dagster_name(self.name)

    def argv(self) -> list[str]:
        """The argv to run."""
        return to_argv(self.command)

    def command_line(self) -> str:
        """The command as a shell would read it (quoted), to show to people and the agent and
        to paste into a terminal."""
        return shlex.join(self.argv())


def merge_verifiers(base: list[Verifier], own: list[Verifier]) -> list[Verifier]:
    """`base` (a profile's verifiers) extended by `own`; one of `own` with a name in `base`
    replaces it in place."""
    mine = {v.name: v for v in own}
    return [*(mine.pop(v.name, v) for v in base), *mine.values()]
