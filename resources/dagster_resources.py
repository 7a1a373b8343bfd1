"""Thin Dagster resources around the plain sandbox, forge and cache classes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import dagster as dg

from resources.agents.claude_code import ClaudeCodeAgent, find_cli
from resources.env_cache import EnvCache
from resources.forges.local import LocalForge
from resources.repo_cache import RepoCache
from resources.sandboxes.docker import DEFAULT_IMAGE, ContainerLimits, DockerSandboxProvider
from resources.sandboxes.local import LocalSandboxProvider


class SandboxResource(dg.ConfigurableResource):
    """Provisions the sandboxes targets run in: local temp workspaces under bubblewrap, or
    containers on a Docker engine, as a campaign's profile says."""

    root: str
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    hidden_paths: list[str] = []

    def get(
        self,
        provider: str = "local",
        image: str | None = None,
        limits: ContainerLimits | None = None,
    ) -> LocalSandboxProvider | DockerSandboxProvider:
        """The sandbox provider a profile names (one per distinct setting, kept for reuse)."""
        return _provider(
            self.root, self.isolation, tuple(self.hidden_paths), provider, image,
            limits or ContainerLimits(),
        )  # fmt: skip


@cache
def _provider(
    root: str,
    isolation: str,
    hidden: tuple[str, ...],
    provider: str,
    image: str | None,
    limits: ContainerLimits,
) -> LocalSandboxProvider | DockerSandboxProvider:
    # Kept per setting: providers track their open sandboxes, so a cancelled run can close them.
    if provider == "docker":
        return DockerSandboxProvider(Path(root), image or DEFAULT_IMAGE, limits)
    if provider != "local":
        raise ValueError(f"unknown sandbox provider {provider!r}")
    return LocalSandboxProvider(
        Path(root), hidden_paths=[Path(p) for p in hidden], isolation=isolation, limits=limits
    )


class ForgeResource(dg.ConfigurableResource):
    """Where repositories and pull requests live (local: repositories on this machine)."""

    kind: Literal["local"] = "local"
    author_name: str = "Campaign Bot"
    author_email: str = "campaigns@localhost"

    def get(self) -> LocalForge:
        """The forge client."""
        return LocalForge(merge_author=(self.author_name, self.author_email))


class RepoCacheResource(dg.ConfigurableResource):
    """The local mirror cache that workspaces are cloned from."""

    root: str

    def get(self) -> RepoCache:
        """The cache."""
        return RepoCache(Path(self.root))


class AgentResource(dg.ConfigurableResource):
    """The coding agent for agentic campaigns (Claude Code CLI).

    The model endpoint and key come from the environment of the process running the step
    (ANTHROPIC_API_KEY, optionally ANTHROPIC_BASE_URL); they are passed to the CLI only.
    """

    kind: Literal["claude-code"] = "claude-code"
    cli: str = ""
    homes: str = ""
    transcripts: str = ""

    def get(self) -> ClaudeCodeAgent | None:
        """The agent, or None when its CLI is not installed."""
        path = find_cli(self.cli or None)
        return ClaudeCodeAgent(path) if path else None


class EnvCacheResource(dg.ConfigurableResource):
    """The environment cache: what setup produced, restored instead of running setup again."""

    root: str
    max_mb: int = 5120

    def get(self) -> EnvCache:
        """The cache."""
        return EnvCache(Path(self.root), self.max_mb * 1024 * 1024)
