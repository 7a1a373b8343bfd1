"""The one place that builds resources from configuration (and the named forges from the
forges file: `forge_registry`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import ValidationError

from orchestrator_assets.spec.errors import Problem, SpecError
from orchestrator_assets.spec.reading import problems_from_validation, read_yaml_file
from orchestrator_assets.spec.settings import Settings
from resources.dagster_resources import (
    AgentResource,
    EnvCacheResource,
    ForgeResource,
    RepoCacheResource,
    SandboxResource,
)
from resources.forges.base import Forge
from resources.forges.registry import (
    DEFAULT,
    ForgeConfig,
    ForgeDefaults,
    ForgeRegistry,
    ForgesFile,
)
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


def forges_file_path(settings: Settings) -> Path | None:
    """The forges file in use: ORCHESTRATOR_FORGES (which must exist), else
    `<data dir>/forges.yaml` when it exists, else None (only the default forge)."""
    if settings.forges is not None:
        path = settings.forges.expanduser()
        if not path.is_file():
            raise SpecError(str(path), [Problem("", "no such file (named by ORCHESTRATOR_FORGES)")])
        return path
    path = settings.data_dir / "forges.yaml"
    return path if path.is_file() else None


def read_forges_file(path: Path) -> ForgesFile:
    """Read and validate a forges file; a SpecError names the file and every bad field."""
    data = read_yaml_file(path, "a forges file")  # duplicate keys refused, like campaign files
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(str(path), [Problem("", "a forges file must be a YAML mapping")])
    try:
        return ForgesFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), problems_from_validation(exc)) from None


def default_forge_config(settings: Settings) -> ForgeConfig:
    """The platform's own forge (`ORCHESTRATOR_FORGE` and the GitHub settings) as a config."""
    if settings.forge == "local":
        return ForgeConfig(kind="local")
    return ForgeConfig(
        kind="github", base_url=settings.github_api_url, token_env=settings.github_token_env
    )


def forge_defaults(settings: Settings) -> ForgeDefaults:
    """What named forges take from the platform's settings: merge author, GitHub's limits."""
    return ForgeDefaults(
        author_name=settings.git_author_name,
        author_email=settings.git_author_email,
        write_concurrency=settings.github_write_concurrency,
        write_interval_s=settings.github_write_interval_s,
        writes_per_minute=settings.github_writes_per_minute,
        writes_per_hour=settings.github_writes_per_hour,
        max_concurrent_requests=settings.github_max_concurrent_requests,
    )


def forge_registry(
    settings: Settings | None = None, default_client: Callable[[], Forge] | None = None
) -> ForgeRegistry:
    """The platform's named forges: `default` (its own forge; `default_client` builds it, e.g.
    the run's ForgeResource) plus those of the forges file, if any."""
    settings = settings or Settings()
    path = forges_file_path(settings)
    named = read_forges_file(path).forges if path else {}
    return ForgeRegistry(
        {DEFAULT: default_forge_config(settings), **named},
        forge_defaults(settings),
        source=str(path) if path else None,
        default_client=default_client,
    )


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
