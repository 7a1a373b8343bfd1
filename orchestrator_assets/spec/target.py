"""A campaign's targets: one repository each, as listed in the file or selected from a code host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.spec.slugs import slug_problem, target_slug
from orchestrator_assets.spec.steps import Command, StrictModel, Verifier, check_command
from resources.forges.github_discovery import GitHubSelector
from resources.forges.github_names import web_root


class Target(StrictModel):
    """One repository of a campaign."""

    # Before `repo`: an `OWNER/NAME` repo is resolved against this forge's web root.
    forge: str | None = Field(
        default=None, description="the named forge this target lives on (default: the campaign's)"
    )
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
    path: str | None = Field(
        default=None,
        description="a subdirectory: the target is this sub-project (a monorepo workspace); "
        "commands run in it and its changes stay inside it",
    )

    _check_setup = field_validator("setup", "setup_extend")(
        lambda value: [check_command(c) for c in value] if value else value
    )

    @field_validator("cache_paths")
    @classmethod
    def _cache_paths(cls, value: list[str]) -> list[str]:
        from orchestrator_assets.spec.profiles import check_relative  # profiles imports this module

        return [check_relative(p) for p in value]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        from orchestrator_assets.spec.profiles import check_relative  # profiles imports this module

        return check_relative(value.strip("/")) if value is not None else None

    @field_validator("repo")
    @classmethod
    def _owner_name(cls, value: str, info: ValidationInfo) -> str:
        # `OWNER/NAME` reads as a GitHub repository and as a relative path alike: decide by the
        # platform's forge here, so that it does not validate and then fail at run time.
        context = info.context or {}
        if context.get("base_dir") is None or not _OWNER_NAME.match(value):
            return value
        root = context.get("owner_name_root")
        roots = context.get("forge_roots")
        if roots is not None:  # named forges: the target's, else the campaign's
            root = roots.get(info.data.get("forge") or context.get("campaign_forge") or "default")
        if root:
            return f"{root}/{value}"
        if not (Path(context["base_dir"]) / value).exists():
            raise ValueError(
                f"{value!r} is not an existing path (relative to the campaign file) nor a "
                "repository URL; the local forge takes paths and git URLs (OWNER/NAME names a "
                "GitHub repository with ORCHESTRATOR_FORGE=github)"
            )
        return value

    @field_validator("forge")
    @classmethod
    def _known_forge(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_forge_name(value, info)

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
                if self.path:  # a workspace: owner__repo__packages-foo
                    from orchestrator_assets.spec.selection import workspace_slug

                    self.slug = workspace_slug(self.slug, self.path)
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


def check_forge_name(value: str | None, info: ValidationInfo) -> str | None:
    """A forge name a campaign or target gives, checked against the platform's named forges
    (`forge_roots` in the validation context: name -> web root; absent: not checked)."""
    roots = (info.context or {}).get("forge_roots")
    if value is None or roots is None or value in roots:
        return value
    raise ValueError(f"unknown forge {value!r}; known: {', '.join(roots)}")


def forge_context(settings: Settings | None = None) -> dict[str, Any]:
    """What validating a campaign needs to know of the named forges: `forge_roots`, each
    forge's web root (where `OWNER/NAME` lives; None: the local forge)."""
    from resources.build import forge_registry

    registry = forge_registry(settings or Settings())
    return {"forge_roots": {name: c.web_root() for name, c in registry.configs.items()}}


def _is_local_path(repo: str) -> bool:
    if "://" in repo:
        return False
    head = repo.split("/", 1)[0]
    return not (":" in head and "@" in head)  # scp-like git@host:path is remote


class Discovery(StrictModel):
    """Targets selected from a code host instead of (or besides) an explicit list: exactly one
    of `github:`, `gitlab:` or `bitbucket:`, asked of the campaign's forge."""

    github: GitHubSelector | None = None
    gitlab: Any = Field(default=None, description="a GitLab selector (GitLabSelector)")
    bitbucket: Any = Field(default=None, description="a Bitbucket selector (BitbucketSelector)")
    base: str | None = Field(default=None, description="base branch (default: each repo's)")

    @field_validator("gitlab", "bitbucket", mode="before")
    @classmethod
    def _selector(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        model = _selector_model(str(info.field_name))
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(selector)'}: {e['msg']}"
                    for e in exc.errors()
                )
            ) from None

    @model_validator(mode="after")
    def _one_host(self) -> Discovery:
        given = [k for k in SELECTOR_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of {', '.join(SELECTOR_KINDS)} must be set (got: "
                f"{', '.join(given) or 'none'})"
            )
        return self

    @property
    def host(self) -> str:
        """Which code host the selector is for: github, gitlab or bitbucket."""
        return next(k for k in SELECTOR_KINDS if getattr(self, k) is not None)

    @property
    def selector(self) -> Any:
        """The selector given (a GitHubSelector, GitLabSelector or BitbucketSelector)."""
        return getattr(self, self.host)


# selector key -> the forge kinds that answer it
SELECTOR_KINDS: dict[str, tuple[str, ...]] = {
    "github": ("github",),
    "gitlab": ("gitlab",),
    "bitbucket": ("bitbucket_cloud", "bitbucket_dc"),
}
# selector key -> (module, class) of its model, imported when a campaign uses it
_SELECTOR_MODELS = {
    "gitlab": ("resources.forges.gitlab_discovery", "GitLabSelector"),
    "bitbucket": ("resources.forges.bitbucket_discovery", "BitbucketSelector"),
}


def _selector_model(key: str) -> Any:
    """The selector model of `gitlab:` or `bitbucket:` (from its forge's discovery module)."""
    import importlib

    module, name = _SELECTOR_MODELS[key]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"`discover: {key}` is not available in this version") from None
