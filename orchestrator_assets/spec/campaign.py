"""Campaign specs: the pydantic models for `campaigns/*.yaml` and how they are loaded."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.delivery import Merge, PullRequestTemplate, Review
from orchestrator_assets.spec.errors import OrchestratorError, Problem, SpecError
from orchestrator_assets.spec.reading import problems_from_validation, read_yaml_file
from orchestrator_assets.spec.rollout import PostMerge, Rollout
from orchestrator_assets.spec.selection import Selector
from orchestrator_assets.spec.slugs import checked_name, dagster_name
from orchestrator_assets.spec.steps import (
    Command,
    StrictModel,
    Transformation,
    Verifier,
    check_command,
    merge_verifiers,
    to_argv,
)
from orchestrator_assets.spec.target import (
    Discovery,
    Target,
    check_forge_name,
    forge_context,
    owner_name_root,
)
from orchestrator_assets.spec.workspaces import Workspaces, dir_slug
from resources.forges.base import BRANCH_PREFIX


def _platform_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("campaign-orchestrator")
    except PackageNotFoundError:
        return "dev"


PLATFORM_VERSION = _platform_version()  # part of every step result's cache key


class CampaignSpec(StrictModel):
    """One campaign: what to change where, how to check it and how to deliver it."""

    name: str
    description: str = ""
    discover: Discovery | None = None  # before targets: their check looks at it
    # The keys of targets added by discovery (spec/discovery.py), not the file's.
    _discovered: frozenset[str] = PrivateAttr(default=frozenset())
    targets: list[Target] = Field(default_factory=list, validate_default=True)
    select: Selector | None = None  # keep the targets whose base holds these files/text
    workspaces: Workspaces | None = None  # split each target into its sub-projects
    # The targets before `select`/`workspaces` were applied (spec/selection.py); None until then.
    _candidates: list[Target] | None = PrivateAttr(default=None)
    transformation: Transformation
    verifiers: list[Verifier] = Field(default_factory=list)
    setup: list[Command] = Field(
        default_factory=list,
        description="commands that prepare each workspace (install dependencies) before the "
        "transformation and before the verifiers",
    )
    cache_paths: list[str] | None = Field(
        default=None, description="what setup produces, for the environment cache (profile's)"
    )
    profile: str | None = None
    forge: str | None = Field(
        default=None,
        description="the named forge the targets live on (forges file; default: the profile's, "
        "else the platform's)",
    )
    branch: str | None = None
    pull_request: PullRequestTemplate = Field(default_factory=PullRequestTemplate)
    review: Review = Field(default_factory=Review)
    preview: bool = Field(default=False, description="verify, publish nothing (`publish` does)")
    merge: Merge | None = None  # merge each PR once its checks pass (stages/automerge.py)
    schedule: str | None = None
    budget_usd: float | None = Field(default=None, description="a positive amount of US dollars")
    concurrency: int = Field(default=4, ge=1, le=64)
    rollout: Rollout | None = Field(default=None, description="publish in waves (spec/rollout.py)")
    ci_repairs: int = Field(
        default=0, ge=0, le=20, description="repairs after a PR's checks fail or it conflicts"
    )
    post_merge: PostMerge | None = Field(default=None, description="watch the default branch")

    _check_setup = field_validator("setup")(lambda value: [check_command(c) for c in value])
    _check_forge = field_validator("forge")(check_forge_name)

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, value: list[Target], info: ValidationInfo) -> list[Target]:
        # A `discover:` that failed its own validation is absent from info.data: its error
        # already says what is wrong, so "no targets" would only mislead.
        if not value and "discover" in info.data and not info.data["discover"]:
            raise ValueError(
                "List should have at least 1 item (or select targets with `discover:`)"
            )
        return value

    @field_validator("cache_paths")
    @classmethod
    def _cache_paths(cls, value: list[str] | None) -> list[str] | None:
        from orchestrator_assets.spec.profiles import check_relative

        return [check_relative(p) for p in value] if value is not None else None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return checked_name(value, "campaign")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        # croniter also takes a sixth (seconds) field, which Dagster's schedules refuse: only
        # five fields, or an alias such as @daily, reach a schedule.
        if len(fields) != 5 and not value.strip().startswith("@"):
            raise ValueError(
                f"{value!r} is not a valid cron expression: it has {len(fields)} field"
                f"{'s' if len(fields) != 1 else ''}, a schedule has five (minute hour "
                "day-of-month month day-of-week, e.g. '0 6 * * 1') or is @daily, @hourly, …"
            )
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 6 * * 1')")
        return value

    @field_validator("budget_usd")
    @classmethod
    def _budget(cls, value: float | None) -> float | None:
        # Zero would stop every target before it starts; leave the field out for no budget.
        if value is not None and not (0 < value < math.inf):
            raise ValueError("must be a positive amount of US dollars (e.g. 50)")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(BRANCH_PREFIX) or value == BRANCH_PREFIX:
            raise ValueError(
                f"{value!r}: campaign branches must live under {BRANCH_PREFIX!r} so that a "
                "campaign never pushes to another branch"
            )
        if any(c in value for c in " ~^:?*[\\") or ".." in value or value.endswith((".lock", "/")):
            raise ValueError(f"{value!r} is not a valid git branch name")
        return value

    @model_validator(mode="after")
    def _unique(self, info: ValidationInfo) -> CampaignSpec:
        names: dict[str, int] = {}
        for i, verifier in enumerate(self.verifiers):
            if verifier.check_name in names:
                raise ValueError(f"verifiers.{i}: verifier name {verifier.name!r} is used twice")
            names[verifier.check_name] = i
        # The profile's verifiers come first; a campaign verifier of the same name replaces one.
        base = (info.context or {}).get("base_verifiers") or []
        if base:
            self.verifiers = merge_verifiers(base, self.verifiers)
        seen: dict[str, int] = {}
        for i, target in enumerate(self.targets):
            if target.key in seen:
                raise ValueError(
                    f"targets.{i}: target {target.key!r} appears twice "
                    f"(also targets.{seen[target.key]}); give one an explicit `slug:`"
                )
            seen[target.key] = i
        for i, target in enumerate(self.targets):
            unknown = [
                n for n in target.skip_verifiers if n not in {v.name for v in self.verifiers}
            ]
            if unknown:
                raise ValueError(
                    f"targets.{i}.skip_verifiers: {', '.join(map(repr, unknown))} is not a "
                    f"verifier of the campaign (known: {', '.join(v.name for v in self.verifiers)})"
                )
        combined = self.workspaces and self.workspaces.pull_requests == "per_repository"
        if combined and (self.ci_repairs or self.rollout):
            # Both see each workspace on its own, while the PR is the repository's: a failing
            # check would repair every workspace, and a wave would count workspaces.
            used = " and ".join(n for n in ("ci_repairs", "rollout") if getattr(self, n))
            raise ValueError(
                f"workspaces.pull_requests: per_repository cannot be combined with {used} yet "
                "(use pull_requests: per_workspace, or leave them out)"
            )
        return self

    @property
    def id(self) -> str:
        """The campaign as a Dagster identifier (group name, asset key prefix)."""
        return dagster_name(self.name)

    @property
    def branch_name(self) -> str:
        """The campaign branch pushed to every target."""
        return self.branch or f"{BRANCH_PREFIX}{self.name}"

    def branch_for(self, target: Target) -> str:
        """The campaign branch of one target: a workspace has its own below the campaign's."""
        return f"{self.branch_name}/{dir_slug(target.path)}" if target.path else self.branch_name

    def pr_branch(self, target: Target) -> str:
        """The branch a target's pull request is opened from: its own (`branch_for`), or with
        `workspaces: {pull_requests: per_repository}` the repository's, which combines its
        workspaces' changes (stages/combine.py)."""
        if target.path and self.workspaces and self.workspaces.pull_requests == "per_repository":
            return self.branch_name
        return self.branch_for(target)

    @property
    def selects_targets(self) -> bool:
        """Whether `select:` or `workspaces:` choose the targets when a run begins (the file's
        targets are only candidates)."""
        return self.select is not None or self.workspaces is not None

    @property
    def partitions_name(self) -> str:
        """The name of the campaign's dynamic partitions definition."""
        return f"{self.id}_targets"

    def target(self, key: str) -> Target | None:
        """The target with partition key `key`, if the campaign still has it."""
        return next((t for t in self.targets if t.key == key), None)

    def require_target(self, key: str) -> Target:
        """The target with partition key `key`; an error naming the known ones otherwise."""
        found = self.target(key)
        if found is None:
            known = ", ".join(t.key for t in self.targets[:20])
            more = ", …" if len(self.targets) > 20 else ""
            raise OrchestratorError(
                f"campaign {self.name!r} has no target {key!r}; known: {known}{more}"
            )
        return found

    def verifiers_for(self, target: Target) -> list[Verifier]:
        """The verifiers that gate one target: the campaign's, less those it skips, with its own
        added (or replacing one of the same name)."""
        own = {v.name: v for v in target.verifiers}
        chosen = [own.pop(v.name, v) for v in self.verifiers if v.name not in target.skip_verifiers]
        return [*chosen, *own.values()]

    def all_verifiers(self) -> list[Verifier]:
        """Every verifier any target runs (one asset check each)."""
        found: dict[str, Verifier] = {v.check_name: v for v in self.verifiers}
        for target in self.targets:
            for verifier in target.verifiers:
                found.setdefault(verifier.check_name, verifier)
        return list(found.values())

    def setup_for(self, target: Target, defaults: list[Command] = ()) -> list[list[str]]:
        """The setup commands of one target: its own, or the campaign's (else the profile's
        defaults), followed by its `setup_extend`."""
        chosen = target.setup if target.setup is not None else (self.setup or list(defaults))
        return [to_argv(c) for c in [*chosen, *target.setup_extend]]

    def transformation_fingerprint(
        self, setup: list[list[str]] | None = None, environment: str = "local"
    ) -> str:
        """A digest of everything that determines a change besides the base commit
        (`environment`: the sandbox the change is made in, e.g. its image)."""
        payload = {
            "transformation": self.transformation.model_dump(mode="json"),
            "branch": self.branch_name,
            "title": self.pull_request.title,
            "setup": setup or [],
            "platform": PLATFORM_VERSION,
        }
        if environment != "local":  # keeps the local sandbox's keys as they were
            payload["environment"] = environment
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def parse_campaign(
    data: Any,
    *,
    file: str,
    base_dir: Path,
    base_verifiers: list[Verifier] | None = None,
    profile_forge: str | None = None,
) -> CampaignSpec:
    """Validate already-parsed YAML; raise `SpecError` naming every problem. `base_verifiers`
    are the profile's, which the campaign's extend; `profile_forge` the profile's forge, the
    campaign's unless it names its own."""
    if not isinstance(data, dict):
        raise SpecError(file, [Problem("", "a campaign file must be a YAML mapping")])
    from_profile = bool(profile_forge) and data.get("forge") is None
    if from_profile:
        data = {**data, "forge": profile_forge}
    forge = data.get("forge")
    context = {
        "base_dir": base_dir,
        "base_verifiers": base_verifiers or [],
        "owner_name_root": owner_name_root(),
        **forge_context(),
        "campaign_forge": forge if isinstance(forge, str) else None,
    }
    try:
        return CampaignSpec.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        for problem in problems:
            if from_profile and problem.field == "forge":
                problem.message += " (the forge of the campaign's profile)"
        raise SpecError(file, problems) from None


def load_campaign(
    path: Path, base_verifiers: Any = None, profile_forge: Any = None
) -> CampaignSpec:
    """Read and validate one campaign file. `base_verifiers(profile_name)` gives the verifiers
    of the profile the campaign names (None: the default), which the campaign's extend;
    `profile_forge(profile_name)` that profile's forge (None: the platform's)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), [Problem("", "no such file")])
    data = read_yaml_file(path)  # refuses duplicate keys, bytes that are not UTF-8, deep nesting
    base = forge = None
    if isinstance(data, dict):
        named = data.get("profile")
        profile = named if isinstance(named, str) else None
        base = base_verifiers(profile) if base_verifiers is not None else None
        forge = profile_forge(profile) if profile_forge is not None else None
    return parse_campaign(
        data, file=str(path), base_dir=path.parent, base_verifiers=base, profile_forge=forge
    )


def campaign_files(directory: Path) -> list[Path]:
    """The campaign files in a folder (every `*.yaml`/`*.yml` but the profiles file)."""
    if not directory.is_dir():
        return []
    files = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    return sorted(p for p in files if p.stem != "profiles")


def dump_campaign(spec: CampaignSpec) -> str:
    """The spec as YAML, the way a user would write it."""
    data = spec.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    data = {"name": spec.name, **{k: v for k, v in data.items() if k != "name"}}
    data["transformation"] = spec.transformation.model_dump(mode="json", exclude_defaults=True)
    data["transformation"]["kind"] = spec.transformation.kind
    return yaml.safe_dump(data, sort_keys=False)
