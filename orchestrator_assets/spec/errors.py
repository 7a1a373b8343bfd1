"""Error types that carry what a user needs to fix a mistake: the file, field or target."""

from __future__ import annotations

from dataclasses import dataclass, field


class OrchestratorError(Exception):
    """A user-facing error: the CLI prints its message as one line, without a traceback."""


@dataclass
class Problem:
    """One thing wrong with a file: where (a dotted field path) and what."""

    field: str
    message: str

    def render(self, file: str) -> str:
        """One line a user can act on: `file: field: message`."""
        where = f"{file}: {self.field}" if self.field else file
        return f"{where}: {self.message}"


@dataclass
class SpecError(OrchestratorError):
    """A campaign or profiles file that cannot be used, with every problem found in it."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(p.render(self.file) for p in self.problems)


class TargetError(OrchestratorError):
    """A failure that belongs to one target; it is recorded for that target and others go on."""

    def __init__(self, target: str, message: str):
        super().__init__(f"{target}: {message}")
        self.target = target
        self.reason = message
