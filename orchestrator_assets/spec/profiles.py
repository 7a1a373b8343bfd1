"""Sandbox profiles: named sandbox setups a campaign refers to by name.

The profiles file is `campaigns/profiles.yaml` (or `ORCHESTRATOR_PROFILES_FILE`). Any field of any
profile can be overridden from the environment with
`ORCHESTRATOR_PROFILE__<PROFILE>__<FIELD>[__<SUBFIELD>]=<YAML value>` (profile names upper-cased,
`-` written as `_`), and the default profile with `ORCHESTRATOR_DEFAULT_PROFILE`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.errors import Problem, SpecError
from orchestrator_assets.spec.reading import (
    load_yaml_text,
    problems_from_validation,
    read_yaml_file,
)
from orchestrator_assets.spec.steps import Verifier
from resources.cores import usable_cores
from resources.env_cache import DEFAULT_MANIFESTS
from resources.sandboxes.docker import DEFAULT_IMAGE, ContainerLimits
from resources.sandboxes.k8s_config import AgentSandboxSettings, KubernetesSettings

ENV_PREFIX = "ORCHESTRATOR_PROFILE__"
DEFAULT_PROFILE_ENV = "ORCHESTRATOR_DEFAULT_PROFILE"
Network = Literal["none", "model-only", "full"]


def check_relative(path: str) -> str:
    """A workspace-relative path: no absolute paths, no `..`."""
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{path!r} must be a path inside the workspace (relative, without '..')")
    return path


class Resources(BaseModel):
    """Limits of one sandbox command (enforced by the docker provider)."""

    model_config = ConfigDict(extra="forbid")

    memory_mb: int | None = Field(default=None, ge=6, description="memory limit, no swap")
    cpus: float | None = Field(default=None, gt=0, description="CPU limit (1.5 = one and a half)")


class Profile(BaseModel):
    """How a target's sandbox is set up: provider, image, limits, network and defaults."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["local", "docker", "kubernetes", "agent-sandbox"] = "local"
    image: str = Field(
        default=DEFAULT_IMAGE, description="sandbox image (docker and kubernetes providers)"
    )
    isolation: Literal["default", "gvisor", "none"] = Field(
        default="default",
        description="gvisor: commands run under gVisor (runsc) — locally instead of bubblewrap, "
        "on Docker with the runsc runtime; on a cluster set kubernetes.runtime_class. none (local "
        "provider only): commands run as plain host processes, for trusted code on a "
        "throwaway machine; without it a missing bubblewrap stops the campaign",
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="pods of the kubernetes provider"
    )
    agent_sandbox: AgentSandboxSettings = Field(
        default_factory=AgentSandboxSettings, description="claims of the agent-sandbox provider"
    )
    resources: Resources = Field(default_factory=Resources)
    network: Network = Field(
        default="none",
        description="what commands may reach: none, model-only (the agent's model endpoint; "
        "commands none) or full",
    )
    docker_network: str = Field(
        default="host", description="the Docker network used when network is full"
    )
    timeout_s: int = Field(default=900, gt=0, description="default timeout of one command")
    verifiers: list[Verifier] = Field(
        default_factory=list, description="verifiers every campaign on this profile runs"
    )
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
    forge: str | None = Field(
        default=None,
        description="the named forge (forges file) of campaigns on this profile that name none",
    )
    command_slots: int | None = Field(
        default=None,
        ge=1,
        description="at most this many transformation and verifier commands of a run at once, "
        "whatever the campaign's concurrency (default: the CPU cores this process may use, for "
        "the local and docker providers; no cap for cluster providers); a campaign's other work "
        "(clones, pushes, forge requests, agents) is not counted",
    )

    _paths = field_validator("cache_paths")(lambda v: [check_relative(p) for p in v])

    @model_validator(mode="after")
    def _isolation_none_is_local(self) -> Profile:
        if self.isolation == "none" and self.provider != "local":
            raise ValueError(
                f"isolation: none is for the local provider only (a {self.provider} sandbox is "
                "isolated by its container or pod)"
            )
        return self

    @field_validator("verifiers")
    @classmethod
    def _unique(cls, value: list[Verifier]) -> list[Verifier]:
        names = [v.name for v in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"verifier name {twice[0]!r} is used twice")
        return value

    @property
    def commands_network(self) -> bool:
        """Whether transformations and verifiers may reach the network."""
        return self.network == "full"

    def host_command_slots(self) -> int | None:
        """How many transformation and verifier commands of a run may run at once (None: no
        cap). Commands on this machine get its cores by default: more of them only contend for
        the CPU while the rest of a wider run (clones, pushes, forge requests) can overlap."""
        if self.command_slots is not None:
            return self.command_slots
        if self.provider in ("kubernetes", "agent-sandbox"):
            return None  # the commands run on the cluster's nodes
        return usable_cores()

    def limits(self) -> ContainerLimits:
        """What every container of this profile is limited to."""
        cluster = None
        if self.provider == "kubernetes":
            cluster = self.kubernetes.model_dump_json()
        elif self.provider == "agent-sandbox":
            cluster = self.agent_sandbox.model_dump_json()
        return ContainerLimits(
            memory_mb=self.resources.memory_mb,
            cpus=self.resources.cpus,
            full_network=self.docker_network,
            isolation=self.isolation,
            cluster=cluster,
        )

    def environment_key(self) -> str:
        """What about the sandbox shapes a change besides the workspace: part of its cache key."""
        if self.provider in ("docker", "kubernetes"):
            return f"{self.provider}:{self.image}"
        if self.provider == "agent-sandbox":
            return f"agent-sandbox:{self.agent_sandbox.template}"
        return "local"


class ProfilesFile(BaseModel):
    """The profiles file: `profiles: {name: {...}}` and which one is the default."""

    model_config = ConfigDict(extra="forbid")

    default: str = "default"
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _template_names(self) -> ProfilesFile:
        # An agent-sandbox profile's template (and warm pool) is named after the profile unless
        # it says otherwise: deploy/agent-sandbox/ ships them under the profiles' names.
        for name, profile in self.profiles.items():
            if profile.agent_sandbox.template is None:
                profile.agent_sandbox.template = name
        return self


BUILTIN = ProfilesFile(profiles={"default": Profile()})


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The profile fields set in the environment, as nested YAML data, and which variable set
    each field (to name it in errors)."""
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if len(parts) < 2 or not all(parts):
            raise SpecError(
                var, [Problem("", "expected ORCHESTRATOR_PROFILE__<PROFILE>__<FIELD>=<value>")]
            )
        value = load_yaml_text(raw, var, "a variable's value") if raw.strip() else raw
        node = data.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        sources[tuple(parts)] = var
    return data, sources


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_profiles(path: Path, environ: Mapping[str, str] | None = None) -> ProfilesFile:
    """Read a profiles file (the built-in `default` profile when it does not exist), with the
    environment's overrides applied."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path.exists():
        # The same strict reading as a campaign file's (duplicate keys, not UTF-8, too deep).
        data = read_yaml_file(path, "a profiles file") or {}
        if not isinstance(data, dict):
            raise SpecError(str(path), [Problem("", "a profiles file must be a YAML mapping")])
    overrides, sources = env_overrides(environ)
    profiles = data.get("profiles") if isinstance(data.get("profiles"), dict) else {}
    names = {_env_name(n): n for n in [*BUILTIN.profiles, *profiles]}
    merged_profiles = {n: v or {} for n, v in {"default": {}, **profiles}.items()}
    for env_name, fields in overrides.items():
        name = names.get(env_name)
        if name is None:
            var = next(v for k, v in sources.items() if k[0] == env_name)
            known = ", ".join(sorted(names.values()))
            problem = Problem("", f"no profile {env_name!r} to override; known: {known}")
            raise SpecError(var, [problem])
        merged_profiles[name] = _deep_merge(merged_profiles[name], fields)
    data = {**data, "profiles": merged_profiles}
    if environ.get(DEFAULT_PROFILE_ENV):
        data["default"] = environ[DEFAULT_PROFILE_ENV]
    try:
        loaded = ProfilesFile.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        for problem in problems:
            parts = problem.field.split(".")
            if parts[0] == "profiles" and len(parts) > 2:
                key = (_env_name(parts[1]), *parts[2:])
                var = next((v for k, v in sources.items() if key[: len(k)] == k), None)
                if var:
                    problem.message += f" (set by {var})"
        raise SpecError(str(path), problems) from None
    if loaded.default not in loaded.profiles:
        known = ", ".join(sorted(loaded.profiles))
        where = DEFAULT_PROFILE_ENV if environ.get(DEFAULT_PROFILE_ENV) else "default"
        raise SpecError(str(path), [Problem(where, f"unknown profile; known: {known}")])
    return loaded


def _env_name(profile: str) -> str:
    return profile.lower().replace("-", "_")
