"""A target that is a sub-project of its repository (`Target.path`, from `workspaces:`): its
commands run in its directory, and its change stays inside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator_assets.spec.target import Target
from resources.git import run_git

# Sandboxes run argv without a shell and take no working directory: `sh` changes into the
# workspace's directory first, then execs the command as given (no word splitting of it).
_CD_THEN_EXEC = 'cd -- "$1" && shift && exec "$@"'


def in_directory(argv: Sequence[str], target: Target) -> list[str]:
    """`argv` run from the target's directory (as it is for a whole-repository target)."""
    if not target.path:
        return list(argv)
    return ["sh", "-c", _CD_THEN_EXEC, "sh", target.path, *argv]


def directory(workspace: Path, target: Target) -> Path:
    """The target's directory in a checked-out workspace."""
    return workspace / target.path if target.path else workspace


def outside_changes(workspace: Path, target: Target) -> list[str]:
    """The staged changes of `workspace` outside the target's directory (none for a target
    that is the whole repository)."""
    if not target.path:
        return []
    names = run_git(["diff", "--cached", "--name-only", "--no-renames", "-z"], workspace)
    inside = target.path.rstrip("/") + "/"
    return [n for n in names.split("\0") if n and not n.startswith(inside)]


def scope_note(target: Target) -> str:
    """What an agent is told of a workspace target (empty for a whole repository)."""
    if not target.path:
        return ""
    return (
        f"\n\nThis task is limited to the sub-project in `{target.path}/` of this repository: "
        f"change only files inside `{target.path}/` (a change outside it is refused). Its "
        f"verifiers run from `{target.path}/`."
    )
