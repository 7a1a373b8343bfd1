"""Campaign specs: the pydantic models for `campaigns/*.yaml` and how they are loaded."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from jinja2 import Environment, StrictUndefined, TemplateSyntaxError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.errors import OrchestratorError, Problem, SpecError
from orchestrator_assets.spec.reading import problems_from_validation, read_yaml_file
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.spec.slugs import CAMPAIGN_NAME_RE, dagster_name, slug_problem, target_slug
from resources.forges.base import BRANCH_PREFIX
from resources.forges.github import web_root
from resources.forges.github_discovery import GitHubSelector

Command = str | list[str]


def _platform_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("campaign-orchestrator")
    except PackageNotFoundError:
        return "dev"


PLATFORM_VERSION = _platform_version()  # part of every step result's cache key


def to_argv(command: Command) -> list[str]:
    """A command as an argv list: a string is split like a shell would, but no shell runs."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def _check_command(value: Command) -> Command:
    try:
        argv = to_argv(value)
    except ValueError as exc:
        raise ValueError(f"cannot split command: {exc}") from None
    if not argv or not argv[0]:
        raise ValueError("command is empty")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Model):
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
        lambda value: [_check_command(c) for c in value] if value else value
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


class DeterministicTransformation(_Model):
    """A command, or a container image, run with args and env in the target's workspace.

    With `image`, the image runs with the workspace mounted at `/workspace` (its working
    directory) and `args` as its arguments; `command`, if given, replaces its entrypoint.
    """

    kind: Literal["deterministic"]
    command: Command | None = None
    image: str | None = Field(default=None, min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: int | None = Field(default=None, gt=0)

    _check = field_validator("command")(lambda v: _check_command(v) if v is not None else v)

    @model_validator(mode="after")
    def _something_to_run(self) -> DeterministicTransformation:
        if self.command is None and self.image is None:
            raise ValueError("a deterministic transformation needs a `command` or an `image`")
        return self

    def argv(self) -> list[str]:
        """The full argv to run (with an image: what follows its entrypoint)."""
        return (to_argv(self.command) if self.command is not None else []) + list(self.args)

    def entrypoint(self) -> list[str] | None:
        """The image's entrypoint replacement (None: the image's own)."""
        return to_argv(self.command) if self.image and self.command is not None else None

    def image_args(self) -> list[str]:
        """The arguments given to the image."""
        return list(self.args)


class AgenticTransformation(_Model):
    """A prompt given to a coding agent in the target's workspace."""

    kind: Literal["agentic"]
    prompt: str = Field(min_length=1)
    agent: Literal["claude-code"] = "claude-code"
    model: str | None = None
    max_turns: int | None = Field(default=None, gt=0)
    max_budget_usd: float | None = Field(default=None, gt=0)
    allowed_tools: list[str] | None = None
    timeout_s: int | None = Field(default=None, gt=0)
    # The quality loop (resources/agents: verifier_mcp, stop_gate, judge).
    verifier_tools: bool = Field(
        default=True, description="offer the verifiers to the agent as MCP tools"
    )
    max_stop_blocks: int = Field(
        default=3, ge=0, le=8,
        description="the stop gate sends the agent back this often while a verifier fails (0: off)",
    )  # fmt: skip
    repair_attempts: int = Field(
        default=0, ge=0, le=10,
        description="resume the agent with the failure when the platform's verification fails",
    )  # fmt: skip
    feedback_chars: int = Field(
        default=2000, ge=200, le=20000, description="size bound of a verifier failure's text"
    )
    judge: JudgeConfig | None = None
    disallowed_tools: list[str] | None = Field(
        default=None,
        description="tool patterns the agent may not use (default: pushing, git remotes and "
        "network clients; [] widens the agent to whatever allowed_tools allows)",
    )


class JudgeConfig(_Model):
    """A model that compares the diff with the request after the verifiers pass."""

    model: str = "claude-sonnet-4-5"
    criteria: list[str] = Field(default_factory=list, description="checked besides the defaults")
    on_veto: Literal["repair", "fail"] = "repair"
    on_error: Literal["approve", "hold"] = Field(
        default="approve",
        description="when the judge gives no verdict (API error): let the PR open, or hold it "
        "until a later run's judge answers",
    )
    max_diff_chars: int = Field(default=60_000, ge=1000, le=400_000)


AgenticTransformation.model_rebuild()


Transformation = Annotated[
    DeterministicTransformation | AgenticTransformation, Field(discriminator="kind")
]


class Verifier(_Model):
    """A named command that must pass in the sandbox before a PR is opened."""

    name: str
    command: Command
    timeout_s: int = Field(default=600, gt=0, alias="timeout")
    extractor: Literal["auto", "pytest", "go", "jest", "maven", "generic"] = Field(
        default="auto", description="how a failure is trimmed for the agent (auto: by command)"
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _check = field_validator("command")(_check_command)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CAMPAIGN_NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid verifier name: lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
        return value

    @property
    def check_name(self) -> str:
        """The name of this verifier's asset check."""
        return dagster_name(self.name)

    def argv(self) -> list[str]:
        """The argv to run."""
        return to_argv(self.command)

    def command_line(self) -> str:
        """The command as a shell would read it (quoted), to show to people and the agent and
        to paste into a terminal."""
        return shlex.join(self.argv())


Target.model_rebuild()


class PullRequestTemplate(_Model):
    """How the pull request of each target reads; title and body are Jinja templates."""

    title: str = "{{ campaign.name }}: automated change"
    body: str = (
        "{{ campaign.description }}\n\n"
        "{{ summary }}\n\n"
        "### Verifiers\n\n{{ verifier_table }}\n\n"
        "Cost: ${{ '%.4f' | format(cost_usd) }}\n\n"
        "_Opened by campaign `{{ campaign.name }}` for `{{ target.slug }}`._\n"
    )
    labels: list[str] = Field(default_factory=list)
    reviewers: list[str] = Field(default_factory=list, description="users asked to review")
    draft: bool = False
    reopen: bool = Field(default=False, description="reopen a PR a human closed (not merged)")

    @field_validator("title", "body")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            TEMPLATES.from_string(value)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template error at line {exc.lineno}: {exc.message}") from None
        return value


TEMPLATES = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class Review(_Model):
    """Whether a human decides before a PR opens."""

    policy: Literal["auto", "required"] = "auto"
    timeout: str | None = Field(
        default=None, description="e.g. 24h: a review not given by then rejects the target"
    )

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$", value):
            raise ValueError(f"{value!r} is not a duration such as 30m, 24h or 7d")
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"policy": value} if isinstance(value, str) else value


class Discovery(_Model):
    """Targets selected from a code host instead of (or besides) an explicit list."""

    github: GitHubSelector
    base: str | None = Field(default=None, description="base branch (default: each repo's)")


class CampaignSpec(_Model):
    """One campaign: what to change where, how to check it and how to deliver it."""

    name: str
    description: str = ""
    discover: Discovery | None = None  # before targets: their check looks at it
    # The keys of targets added by discovery (spec/discovery.py), not the file's.
    _discovered: frozenset[str] = PrivateAttr(default=frozenset())
    targets: list[Target] = Field(default_factory=list, validate_default=True)
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
    branch: str | None = None
    pull_request: PullRequestTemplate = Field(default_factory=PullRequestTemplate)
    review: Review = Field(default_factory=Review)
    schedule: str | None = None
    budget_usd: float | None = Field(default=None, description="a positive amount of US dollars")
    concurrency: int = Field(default=4, ge=1, le=64)

    _check_setup = field_validator("setup")(lambda value: [_check_command(c) for c in value])

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, value: list[Target], info: ValidationInfo) -> list[Target]:
        if not value and not info.data.get("discover"):
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
        if not CAMPAIGN_NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid campaign name: a slug of lowercase letters, digits, "
                "'_' and '-', starting with a letter, at most 63 characters"
            )
        return value

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
        return self

    @property
    def id(self) -> str:
        """The campaign as a Dagster identifier (group name, asset key prefix)."""
        return dagster_name(self.name)

    @property
    def branch_name(self) -> str:
        """The campaign branch pushed to every target."""
        return self.branch or f"{BRANCH_PREFIX}{self.name}"

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


def merge_verifiers(base: list[Verifier], own: list[Verifier]) -> list[Verifier]:
    """`base` (a profile's verifiers) extended by `own`; one of `own` with a name in `base`
    replaces it in place."""
    mine = {v.name: v for v in own}
    return [*(mine.pop(v.name, v) for v in base), *mine.values()]


def parse_campaign(
    data: Any, *, file: str, base_dir: Path, base_verifiers: list[Verifier] | None = None
) -> CampaignSpec:
    """Validate already-parsed YAML; raise `SpecError` naming every problem. `base_verifiers`
    are the profile's, which the campaign's extend."""
    if not isinstance(data, dict):
        raise SpecError(file, [Problem("", "a campaign file must be a YAML mapping")])
    context = {
        "base_dir": base_dir,
        "base_verifiers": base_verifiers or [],
        "owner_name_root": owner_name_root(),
    }
    try:
        return CampaignSpec.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError(file, problems_from_validation(exc)) from None


def load_campaign(path: Path, base_verifiers: Any = None) -> CampaignSpec:
    """Read and validate one campaign file. `base_verifiers(profile_name)` gives the verifiers
    of the profile the campaign names (None: the default), which the campaign's extend."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), [Problem("", "no such file")])
    data = read_yaml_file(path)  # refuses duplicate keys, bytes that are not UTF-8, deep nesting
    base = None
    if base_verifiers is not None and isinstance(data, dict):
        named = data.get("profile")
        base = base_verifiers(named if isinstance(named, str) else None)
    return parse_campaign(data, file=str(path), base_dir=path.parent, base_verifiers=base)


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
