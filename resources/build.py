"""The one place that builds resources from configuration."""

from __future__ import annotations

import os

from orchestrator_assets.spec.settings import Settings
from resources.dagster_resources import (
    AgentResource,
    EnvCacheResource,
    ForgeResource,
    RepoCacheResource,
    SandboxResource,
)
from resources.forges.base import Forge
from resources.notify import NotifierResource


def forge_resource(settings: Settings) -> ForgeResource:
    """The forge resource the settings name (local, or GitHub with its token's variable)."""
    return ForgeResource(
        kind=settings.forge,
        author_name=settings.git_author_name,
        author_email=settings.git_author_email,
        base_url=settings.github_api_url,
        token_env=settings.github_token_env,
        write_concurrency=settings.github_write_concurrency,
        write_interval_s=settings.github_write_interval_s,
    )


def build_forge(settings: Settings) -> Forge:
    """The forge client, for work outside an asset (discovery, PR status, bulk operations)."""
    return forge_resource(settings).get()


def build_resources(settings: Settings) -> dict[str, object]:
    """The Dagster resources every campaign's assets use, from settings and the environment."""
    isolation = os.environ.get("ORCHESTRATOR_SANDBOX_ISOLATION", "auto")
    return {
        "sandbox": SandboxResource(
            root=str(settings.workspaces_dir),
            isolation=isolation,  # type: ignore[arg-type]
            hidden_paths=[str(settings.data_dir), str(settings.dagster_home)],
        ),
        "forge": forge_resource(settings),
        "repo_cache": RepoCacheResource(root=str(settings.cache_dir)),
        "env_cache": EnvCacheResource(
            root=str(settings.env_cache_dir), max_mb=settings.env_cache_max_mb
        ),
        "agent": AgentResource(
            cli=os.environ.get("CLAUDE_BIN", ""),
            homes=str(settings.data_dir / "agent-homes"),
            transcripts=str(settings.data_dir / "transcripts"),
        ),
        "notifier": NotifierResource(),
    }
