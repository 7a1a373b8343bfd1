"""Thin Dagster resources around the plain sandbox, forge and cache classes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

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


def field_value(value: str) -> str:
    """The value of a `str` resource field that may be configured with `dg.EnvVar`.

    Dagster resolves an EnvVar field when it initialises the resource for a run, so inside a run
    the field holds the value. A resource built for plain code (the CLI, sensors, bulk
    operations) is never initialised: its field still holds the EnvVar, read here with
    `EnvVar.get_value` (empty when the variable is unset)."""
    if isinstance(value, dg.EnvVar):
        return value.get_value() or ""
    return value


class ForgeResource(dg.ConfigurableResource):
    """Where repositories and pull requests live: `local` (repositories on this machine) or
    `github` (github.com or GitHub Enterprise, with a token).

    The token is configured as `dg.EnvVar(<variable>)`: Dagster reads the variable when a run
    starts, in the run's own environment, and the UI shows the variable's name, never the value.
    A run whose variable is unset fails before it starts, with Dagster's error naming it.
    """

    kind: Literal["local", "github"] = "local"
    author_name: str = "Campaign Bot"
    author_email: str = "campaigns@localhost"
    base_url: str = "https://api.github.com"
    token: str = Field(
        default="",
        description="the GitHub token, as dg.EnvVar(<variable>) (GITHUB_TOKEN unless "
        "ORCHESTRATOR_GITHUB_TOKEN_ENV names another); unused by the local forge",
    )
    write_concurrency: int = Field(
        default=4, ge=1, description="GitHub writes and pushes in flight at once"
    )
    write_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="a fixed pause between GitHub writes on top of the limits below (0: none; "
        "writes are paced by GitHub's documented limits instead)",
    )
    writes_per_minute: int = Field(
        default=80,
        ge=1,
        description="content-generating GitHub requests per minute and token (GitHub's "
        "secondary limit: 80); a burst of this many goes at once",
    )
    writes_per_hour: int = Field(
        default=500,
        ge=1,
        description="content-generating GitHub requests per hour and token (GitHub's "
        "secondary limit: 500); never exceeded in any hour",
    )
    max_concurrent_requests: int = Field(
        default=20, ge=1, description="GitHub API requests in flight at once (GitHub: <= 100)"
    )

    def get(self) -> Forge:
        """The forge client (one per setting, so GitHub's write limits hold across runs' steps)."""
        if self.kind == "local":
            return LocalForge(merge_author=(self.author_name, self.author_email))
        token = field_value(self.token)
        if not token:
            raise ForgeError(missing_token(self.token))
        return github_client(
            self.base_url, token, self.write_concurrency, self.write_interval_s,
            self.writes_per_minute, self.writes_per_hour, self.max_concurrent_requests,
        )  # fmt: skip

    def for_campaign(self, spec: Any) -> Forge:
        """The forge of one campaign: a router (resources/forges/router.py) that sends each
        repository's verbs to the named forge it lives on (`forge:` of the campaign, its profile
        or the target; the forges file names them), this resource's forge being `default`."""
        from resources.build import forge_registry  # build imports this module
        from resources.forges.router import campaign_router

        return campaign_router(spec, forge_registry(default_client=self.get))


def missing_token(token: str) -> str:
    """The error for a GitHub forge without a token, naming the variable it comes from.

    Outside a run the field still holds its EnvVar, so the name is known. Inside one, Dagster has
    replaced it by the value (an unset variable already failed the run, naming it), so an empty
    token there came from a variable that is set but empty: named by its default and setting."""
    variable = (
        token.env_var_name
        if isinstance(token, dg.EnvVar)
        else "GITHUB_TOKEN (or the variable ORCHESTRATOR_GITHUB_TOKEN_ENV names)"
    )
    return (
        f"the GitHub forge needs a token: set {variable} in the environment of the process that "
        "runs the campaign"
    )


@cache
def github_client(
    base_url: str,
    token: str,
    concurrency: int,
    interval: float,
    per_minute: int,
    per_hour: int,
    max_concurrent: int,
) -> Forge:
    """The GitHub forge client for one API root, token and set of limits (one per process)."""
    from resources.forges.github import GitHubForge
    from resources.forges.github_pacing import WriteLimits

    # Every forge of the process on this host and token (with these limits) shares one write
    # budget (github_pacing.shared_budget), so GitHub's per-token limits hold across them.
    limits = WriteLimits(per_minute, per_hour, max_concurrent)
    return GitHubForge(
        token, base_url, write_concurrency=concurrency, write_interval_s=interval, limits=limits
    )


def forge_git_env(forge: Forge) -> Mapping[str, str]:
    """What git needs in its environment to fetch from `forge` (its credentials), if anything:
    read again each time git is run (`LiveGitEnv`), as a GitHub App's token changes hourly."""
    git_env = getattr(forge, "git_env", None)
    return LiveGitEnv(git_env) if callable(git_env) else {}


class LiveGitEnv(Mapping[str, str]):
    """A forge's `git_env()` as a mapping that is read anew whenever it is iterated (each git
    command's environment is built by iterating it), so that a credential renewed since (a
    GitHub App's installation token) is the one git gets, however long the holder lives."""

    def __init__(self, read: Callable[[], dict[str, str]]):
        self._read = read
        self._last: dict[str, str] = {}

    def _fresh(self) -> dict[str, str]:
        self._last = dict(self._read())
        return self._last

    def __iter__(self) -> Iterator[str]:
        return iter(self._fresh())

    def __len__(self) -> int:
        return len(self._fresh())

    def __getitem__(self, key: str) -> str:
        # dict.update iterates the keys first, then reads each: from the same reading
        return self._last[key] if key in self._last else self._fresh()[key]


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

    # No EnvVar field for the model's credentials, on purpose: the CLI runs in a sandbox and
    # reads them from its own environment, so they are forwarded there by name
    # (claude_code.PASSED_THROUGH), and the judge (agents/judge.py) uses the same ones. Either
    # of two variables may carry them (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN) and neither is
    # required (a proxy at ANTHROPIC_BASE_URL may need none; non-agentic campaigns use no model),
    # whereas Dagster fails every run whose EnvVar is unset.

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
