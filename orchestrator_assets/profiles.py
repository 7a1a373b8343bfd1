"""Sandbox profiles: named sandbox setups a campaign refers to by name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator_assets.errors import Problem, SpecError
from orchestrator_assets.spec_errors import problems_from_validation, yaml_problem
from resources.env_cache import DEFAULT_MANIFESTS


def check_relative(path: str) -> str:
    """A workspace-relative path: no absolute paths, no `..`."""
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{path!r} must be a path inside the workspace (relative, without '..')")
    return path


class Profile(BaseModel):
    """How a target's sandbox is set up: provider, network and the default command timeout."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["local"] = "local"
    network: Literal["none", "full"] = "none"
    timeout_s: int = Field(default=900, gt=0, description="default timeout of one command")
    setup: list[str | list[str]] = Field(
        default_factory=list, description="setup commands for campaigns that name none"
    )
    setup_network: Literal["none", "full"] = Field(
        default="full", description="setup may reach the package registries"
    )
    setup_timeout_s: int = Field(default=900, gt=0, description="timeout of one setup command")
    cache_paths: list[str] = Field(
        default_factory=lambda: [".venv"],
        description="workspace paths setup produces, kept in the environment cache",
    )
    manifests: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MANIFESTS),
        description="dependency manifests whose contents key the environment cache",
    )

    _paths = field_validator("cache_paths")(lambda v: [check_relative(p) for p in v])


class ProfilesFile(BaseModel):
    """The profiles file: `profiles: {name: {...}}` and which one is the default."""

    model_config = ConfigDict(extra="forbid")

    default: str = "default"
    profiles: dict[str, Profile] = Field(default_factory=dict)


BUILTIN = ProfilesFile(profiles={"default": Profile()})


def load_profiles(path: Path) -> ProfilesFile:
    """Read a profiles file (the built-in `default` profile when it does not exist)."""
    if not path.exists():
        return BUILTIN
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [yaml_problem(exc)]) from None
    try:
        loaded = ProfilesFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), problems_from_validation(exc)) from None
    profiles = {**BUILTIN.profiles, **loaded.profiles}
    if loaded.default not in profiles:
        known = ", ".join(sorted(profiles))
        raise SpecError(str(path), [Problem("default", f"unknown profile; known: {known}")])
    return ProfilesFile(default=loaded.default, profiles=profiles)
