"""The sandbox interface every provider implements."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

OutputCallback = Callable[[str], None]

# What every container-based provider (Docker, Kubernetes pod, agent-sandbox claim) shares:
# where the workspace is mounted and the environment a command starts from.
WORKSPACE = "/workspace"
BASE_ENV = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "CI": "true",
}
OUTPUT_CHARS = 8000  # how much of a command's output its result keeps (the end)


class ExecResult(BaseModel):
    """What one command did: exit code, how long it took, the tail of its output."""

    argv: list[str]
    exit_code: int
    duration_s: float
    output_tail: str
    timed_out: bool = False
    timeout_s: float | None = None  # the limit it ran under
    oom_killed: bool = False

    @classmethod
    def of(
        cls,
        argv: Sequence[str],
        exit_code: int,
        output: str,
        *,
        started: float | None = None,
        **details: Any,
    ) -> ExecResult:
        """The result of `argv` with the end of its `output`, timed from `started` (a
        `time.monotonic()` reading; None for a command that never started)."""
        duration = 0.0 if started is None else round(time.monotonic() - started, 3)
        return cls(
            argv=list(argv),
            exit_code=exit_code,
            duration_s=duration,
            output_tail=output[-OUTPUT_CHARS:],
            **details,
        )

    @property
    def ok(self) -> bool:
        """True when the command exited 0 within its timeout."""
        return self.exit_code == 0 and not self.timed_out

    def describe_failure(self) -> str:
        """One line saying how the command failed."""
        cmd = shlex.join(self.argv)  # quoted as a shell reads it, so it can be pasted
        cmd = cmd if len(cmd) <= 200 else cmd[:199] + "…"
        if self.timed_out:
            return f"`{cmd}` timed out after {self.timeout_s or self.duration_s:.0f}s"
        if self.oom_killed:
            return f"`{cmd}` was killed: out of memory"
        if self.exit_code < 0:
            return f"`{cmd}` was killed by signal {-self.exit_code}"
        return f"`{cmd}` exited with code {self.exit_code}"


@dataclass(frozen=True)
class ExecRequest:
    """One command a sandbox was asked to run, with how: what `Sandbox.exec` hands a provider."""

    argv: list[str]
    env: Mapping[str, str] | None = None
    timeout_s: float = 600
    network: bool = False
    on_output: OutputCallback | None = None
    model_endpoint: str | None = None  # without network: the one endpoint it may reach


class Sandbox(Protocol):
    """One provisioned sandbox with a workspace.

    Callers use `exec`; a provider implements `run`, which gets the same call as one
    `ExecRequest` (providers subclass this protocol, or `workspaces.HostSandbox`, to inherit
    `exec`)."""

    image: str | None  # the image commands run in; None: the host's own tools
    tags: dict[str, str]  # campaign, target and run the sandbox belongs to

    @property
    def workspace(self) -> Path:
        """The workspace as a host path."""
        ...

    readable_paths: list[Path]  # host paths the commands may read (mounted read-only)
    writable_paths: list[Path]  # host paths the commands may write besides the workspace

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout_s: float = 600,
        network: bool = False,
        on_output: OutputCallback | None = None,
        model_endpoint: str | None = None,
    ) -> ExecResult:
        """Run `argv` in the workspace (no shell) and report how it went. Without `network`,
        a `model_endpoint` URL is the one place the command may still reach."""
        return self.run(ExecRequest(list(argv), env, timeout_s, network, on_output, model_endpoint))

    def run(self, request: ExecRequest) -> ExecResult:
        """Run one command as `exec` was asked to (what each provider implements)."""
        ...

    def run_image(
        self,
        image: str,
        args: list[str],
        *,
        entrypoint: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 600,
        network: bool = False,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """Run a container image with the workspace mounted at /workspace (its working
        directory) and `args` as its arguments."""
        ...


class SandboxProvider(Protocol):
    """Provisions sandboxes and cleans them up."""

    def open(
        self, label: str, tags: Mapping[str, str] | None = None
    ) -> AbstractContextManager[Sandbox]:
        """A new sandbox with an empty workspace, removed when the context exits; `tags` name
        the campaign, target and run it belongs to (on its containers and its marker file)."""
        ...

    def close_all(self) -> None:
        """Kill every running command and remove every open sandbox."""
        ...
