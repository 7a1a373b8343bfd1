"""A campaign's targets: one repository each, as listed in the file or selected from a code host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.spec.slugs import slug_problem, target_slug
from orchestrator_assets.spec.steps import Command, StrictModel, Verifier, check_command
from resources.forges.github import web_root
from resources.forges.github_discovery import GitHubSelector


class Target(StrictModel):
    """One repository of a campaign."""

    repo: str = Field(description="repository URL or local path (relative to the campaign file)")
    base: str | None = Field(default=None, description="base branch; default: the repo's HEAD")
    slug: str | None = Field(default=None, description="partition key; default: owner__name")
    setup: list[Command] | None = Field(
        default=None, description="replaces the campaign's setup for this target"
    )
    setup_extend: list[Command] = Field(
        default_factory=list, description="runs after the campaign's setup for this target"
    )
    verifiers: list[Verifier] = Field(
        default_factory=list, description="added to the campaign's, or replacing one by name"
    )
    skip_verifiers: list[str] = Field(
        default_factory=list, description="names of campaign verifiers not run for this target"
    )
    pr_base: str | None = Field(
        default=None, description="the branch the PR targets (default: the base branch)"
    )
    cache_paths: list[str] = Field(
        default_factory=list,
        description="workspace paths setup produces for this target, cached and restored "
        "besides the campaign's (part of the environment cache's key)",
    )

    _check_setup = field_validator("setup", "setup_extend")(
        lambda value: [check_command(c) for c in value] if value else value
    )

    @field_validator("cache_paths")
    @classmethod
    def _cache_paths(cls, value: list[str]) -> list[str]:
        from orchestrator_assets.spec.profiles import check_relative  # profiles imports this module

        return [check_relative(p) for p in value]

    @field_validator("repo")
    @classmethod
    def _owner_name(cls, value: str, info: ValidationInfo) -> str:
        # `OWNER/NAME` reads as a GitHub repository and as a relative path alike: decide by the
        # platform's forge here, so that it does not validate and then fail at run time.
        context = info.context or {}
        if context.get("base_dir") is None or not _OWNER_NAME.match(value):
            return value
        root = context.get("owner_name_root")
        if root:
            return f"{root}/{value}"
        if not (Path(context["base_dir"]) / value).exists():
            raise ValueError(
                f"{value!r} is not an existing path (relative to the campaign file) nor a "
                "repository URL; the local forge takes paths and git URLs (OWNER/NAME names a "
                "GitHub repository with ORCHESTRATOR_FORGE=github)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"repo": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Target:
        if not self.repo.strip():
            raise ValueError("repo is empty")
        base_dir = (info.context or {}).get("base_dir")
        if base_dir is not None and _is_local_path(self.repo):
            self.repo = str((Path(base_dir) / Path(self.repo).expanduser()).resolve())
        if self.slug is None:
            try:
                self.slug = target_slug(self.repo)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        problem = slug_problem(self.slug)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def key(self) -> str:
        """The target's partition key."""
        assert self.slug is not None
        return self.slug


# A target written as GitHub names it (not `./x/y`, `../x`, `/x/y`, `~/x` or a URL).
_OWNER_NAME = re.compile(r"^(?!\.)[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def owner_name_root(settings: Settings | None = None) -> str | None:
    """Where a target written `OWNER/NAME` lives: the web root of the GitHub forge when it is the
    platform's forge (`ORCHESTRATOR_FORGE=github`), None with the local forge (a path then)."""
    settings = settings or Settings()
    return web_root(settings.github_api_url) if settings.forge == "github" else None


def _is_local_path(repo: str) -> bool:
    if "://" in repo:
        return False
    head = repo.split("/", 1)[0]
    return not (":" in head and "@" in head)  # scp-like git@host:path is remote


class Discovery(StrictModel):
    """Targets selected from a code host instead of (or besides) an explicit list."""

    github: GitHubSelector
    base: str | None = Field(default=None, description="base branch (default: each repo's)")
