"""The one place that builds resources from configuration."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from orchestrator_assets.spec.settings import Settings
from resources.dagster_resources import (
    AgentResource,
    EnvCacheResource,
    ForgeResource,
    RepoCacheResource,
    SandboxResource,
)
from resources.forges.base import Forge
from resources.notify import WEBHOOK_ENV, NotifierResource


def forge_resource(settings: Settings) -> ForgeResource:
    """The forge resource the settings name (local, or GitHub with its token as an EnvVar)."""
    # Only the GitHub forge names the token's variable: Dagster would fail any run whose
    # EnvVar is unset, and the local forge needs no token.
    token = dg.EnvVar(settings.github_token_env) if settings.forge == "github" else ""
    return ForgeResource(
        kind=settings.forge,
        author_name=settings.git_author_name,
        author_email=settings.git_author_email,
        base_url=settings.github_api_url,
        token=token,
        write_concurrency=settings.github_write_concurrency,
        write_interval_s=settings.github_write_interval_s,
        writes_per_minute=settings.github_writes_per_minute,
        writes_per_hour=settings.github_writes_per_hour,
        max_concurrent_requests=settings.github_max_concurrent_requests,
    )


def build_forge(settings: Settings, spec: Any = None) -> Forge:
    """The forge client, for work outside an asset (discovery, PR status, bulk operations):
    with a campaign `spec`, its router over the named forges its targets live on
    (resources/forges/router.py); without, the platform's default forge."""
    resource = forge_resource(settings)
    return resource.for_campaign(spec) if spec is not None else resource.get()


def notifier_resource() -> NotifierResource:
    """The notifier resource: the webhook's EnvVar when its variable is set, else off."""
    # Notifications are optional, but Dagster fails a run whose EnvVar is unset: so the variable
    # is named only when set. Every process that loads the definitions decides for itself (a run
    # worker loads them again, in its own environment), so a run never asks for a variable that
    # its process lacks.
    return NotifierResource() if WEBHOOK_ENV in os.environ else NotifierResource(webhook_url="")


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
        "notifier": notifier_resource(),
    }
