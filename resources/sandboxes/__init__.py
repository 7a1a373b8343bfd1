"""Sandboxes: where a target's commands run."""

from resources.sandboxes.base import ExecResult, Sandbox, SandboxProvider

__all__ = ["ExecResult", "Sandbox", "SandboxProvider"]
