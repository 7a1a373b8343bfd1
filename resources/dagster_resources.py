"""Thin Dagster resources around the plain sandbox, forge and cache classes."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal

import dagster as dg

from resources.agents.claude_code import ClaudeCodeAgent, find_cli
from resources.env_cache import EnvCache
from resources.forges.base import Forge, ForgeError
from resources.forges.local import LocalForge
from resources.repo_cache import RepoCache
from resources.sandboxes.base import SandboxProvider
from resources.sandboxes.docker import DEFAULT_IMAGE, ContainerLimits, DockerSandboxProvider
from resources.sandboxes.local import LocalSandboxProvider


class SandboxResource(dg.ConfigurableResource):
    """Provisions the sandboxes targets run in: local temp workspaces under bubblewrap (or
    gVisor), containers on a Docker engine, pods on a Kubernetes cluster or agent-sandbox
    claims, as a campaign's profile says."""

    root: str
    isolation: Literal["auto", "bwrap", "gvisor", "none"] = "auto"
    hidden_paths: list[str] = []

    def get(
        self,
        provider: str = "local",
        image: str | None = None,
        limits: ContainerLimits | None = None,
    ) -> SandboxProvider:
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
) -> SandboxProvider:
    # Kept per setting: providers track their open sandboxes, so a cancelled run can close them.
    if provider == "docker":
        return DockerSandboxProvider(Path(root), image or DEFAULT_IMAGE, limits)
    if provider == "kubernetes":
        from resources.sandboxes.k8s_config import KubernetesSettings
        from resources.sandboxes.kubernetes import KubernetesSandboxProvider

        settings = KubernetesSettings.model_validate_json(limits.cluster or "{}")
        return KubernetesSandboxProvider(Path(root), image or DEFAULT_IMAGE, settings, limits)
    if provider == "agent-sandbox":
        from resources.sandboxes.agent_sandbox import AgentSandboxProvider
        from resources.sandboxes.k8s_config import AgentSandboxSettings

        settings = AgentSandboxSettings.model_validate_json(limits.cluster or "{}")
        # Beside the workspaces, in the data folder: `orchestrator sandboxes pools` reads it.
        claims_log = Path(root).parent / "sandboxes" / "claims.jsonl"
        return AgentSandboxProvider(Path(root), settings, claims_log, limits)
    if provider != "local":
        raise ValueError(f"unknown sandbox provider {provider!r}")
    if limits.isolation in ("gvisor", "none"):
        isolation = limits.isolation  # the profile asks for it, whatever the platform's default
    return LocalSandboxProvider(
        Path(root), hidden_paths=[Path(p) for p in hidden], isolation=isolation, limits=limits
    )


class ForgeResource(dg.ConfigurableResource):
    """Where repositories and pull requests live: `local` (repositories on this machine) or
    `github` (github.com or GitHub Enterprise, the token read from the environment variable
    `token_env` when the forge is first used — never from configuration)."""

    kind: Literal["local", "github"] = "local"
    author_name: str = "Campaign Bot"
    author_email: str = "campaigns@localhost"
    base_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    write_concurrency: int = 4
    write_interval_s: float = 1.0

    def get(self) -> Forge:
        """The forge client (one per setting, so GitHub's write limits hold across runs' steps)."""
        if self.kind == "local":
            return LocalForge(merge_author=(self.author_name, self.author_email))
        token = os.environ.get(self.token_env, "")
        if not token:
            raise ForgeError(
                f"the GitHub forge needs a token: set {self.token_env} in the environment of the "
                "process that runs the campaign"
            )
        return _github(self.base_url, token, self.write_concurrency, self.write_interval_s)


@cache
def _github(base_url: str, token: str, concurrency: int, interval: float) -> Forge:
    from resources.forges.github import GitHubForge

    return GitHubForge(token, base_url, write_concurrency=concurrency, write_interval_s=interval)


def forge_git_env(forge: Forge) -> dict[str, str]:
    """What git needs in its environment to fetch from `forge` (its credentials), if anything."""
    git_env = getattr(forge, "git_env", None)
    return git_env() if callable(git_env) else {}


class RepoCacheResource(dg.ConfigurableResource):
    """The local mirror cache that workspaces are cloned from."""

    root: str

    def get(self, git_env: dict[str, str] | None = None) -> RepoCache:
        """The cache, fetching with `git_env` (a forge's credentials)."""
        return RepoCache(Path(self.root), git_env)


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
