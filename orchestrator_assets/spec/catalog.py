"""All campaigns of the campaigns folder, each with its profile, and the problems found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator_assets.spec.campaign import (
    CampaignSpec,
    campaign_files,
    load_campaign,
    parse_campaign,
)
from orchestrator_assets.spec.discovery import with_discovered
from orchestrator_assets.spec.errors import OrchestratorError, Problem, SpecError
from orchestrator_assets.spec.profiles import Profile, ProfilesFile, load_profiles
from orchestrator_assets.spec.reading import read_yaml_file
from orchestrator_assets.spec.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

# The run tag that names the campaign file a run came from (absolute path): `report`, `list` and
# the review commands find a campaign run with `--file` from outside the campaigns folder by it.
FILE_TAG = "orchestrator/campaign_file"
# The run tag that lists the command-line overrides a run applied to its campaign file.
OVERRIDES_TAG = "orchestrator/overrides"


@dataclass
class Campaign:
    """A valid campaign, where it came from, and the profile its sandboxes use."""

    spec: CampaignSpec
    file: Path
    profile: Profile
    overrides: dict[str, str] = field(default_factory=dict)  # flag -> value, for this run only


@dataclass(frozen=True)
class Overrides:
    """Settings from the command line (`run --file/--campaign`) that replace the campaign
    file's for one run; None leaves the file's value."""

    profile: str | None = None
    base: str | None = None
    model: str | None = None
    review: str | None = None
    description: str | None = None

    def given(self) -> dict[str, str]:
        """The flags given, as `--flag` -> value."""
        values = {
            "--profile": self.profile, "--base": self.base, "--model": self.model,
            "--review": self.review, "--description": self.description,
        }  # fmt: skip
        return {flag: value for flag, value in values.items() if value is not None}

    def apply(self, data: Any, file: str) -> Any:
        """The campaign file's parsed YAML with these settings put in (before validation, so a
        new profile brings its own verifiers and every value is checked like the file's)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if self.profile is not None:
            data["profile"] = self.profile
        if self.description is not None:
            data["description"] = self.description
        if self.review is not None:
            review = data.get("review")
            data["review"] = (
                {**review, "policy": self.review}
                if isinstance(review, dict)
                else {"policy": self.review}
            )
        if self.model is not None:
            transformation = data.get("transformation")
            if not isinstance(transformation, dict) or transformation.get("kind") != "agentic":
                raise OrchestratorError(
                    f"--model {self.model!r}: {file} has a deterministic transformation; "
                    "--model chooses the coding agent's model (transformation.kind: agentic)"
                )
            data["transformation"] = {**transformation, "model": self.model}
        if self.base is not None:
            # Every target, and the targets discovery finds, start from this branch.
            data["targets"] = [
                {**t, "base": self.base} if isinstance(t, dict) else {"repo": t, "base": self.base}
                for t in data.get("targets") or []
            ]
            if isinstance(data.get("discover"), dict):
                data["discover"] = {**data["discover"], "base": self.base}
        return data


@dataclass
class Catalog:
    """The campaigns that loaded and the files that did not."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    gone: list[Path] = field(default_factory=list)  # files campaigns were run from, now missing

    def get(self, name: str) -> Campaign:
        """The campaign called `name` (a clear error listing the known ones otherwise)."""
        if name in self.campaigns:
            return self.campaigns[name]
        known = ", ".join(sorted(self.campaigns)) or "none"
        broken = [e.file for e in self.errors]
        hint = f"; files with errors: {', '.join(broken)}" if broken else ""
        if self.gone:
            hint += f"; campaign files run before that are gone: {', '.join(map(str, self.gone))}"
        raise OrchestratorError(f"no campaign named {name!r} (known: {known}){hint}")


def resolve_profile(spec: CampaignSpec, profiles: ProfilesFile, file: str) -> Profile:
    """The profile a campaign names (or the default one)."""
    name = spec.profile or profiles.default
    if name not in profiles.profiles:
        known = ", ".join(sorted(profiles.profiles))
        raise SpecError(file, [Problem("profile", f"unknown profile {name!r}; known: {known}")])
    return profiles.profiles[name]


def profile_verifiers(profiles: ProfilesFile):
    """For `load_campaign`: the verifiers of a named profile (none for an unknown one, which
    `resolve_profile` reports)."""

    def lookup(name: str | None) -> list:
        profile = profiles.profiles.get(name or profiles.default)
        return list(profile.verifiers) if profile else []

    return lookup


def profile_forge(profiles: ProfilesFile):
    """For `load_campaign`: the forge of a named profile (None: the platform's)."""

    def lookup(name: str | None) -> str | None:
        profile = profiles.profiles.get(name or profiles.default)
        return profile.forge if profile else None

    return lookup


def load_one(path: Path, settings: Settings, overrides: Overrides | None = None) -> Campaign:
    """Load and fully check one campaign file (spec and profile), with `overrides` from the
    command line put in place of the file's settings."""
    profiles = load_profiles(settings.resolved_profiles_file())
    spec = load_campaign(path, profile_verifiers(profiles), profile_forge(profiles))  # valid?
    given = overrides.given() if overrides else {}
    where = str(path)
    if overrides and given:
        # Problems an override brings are reported against the flags that brought them.
        where = f"{path} with {' '.join(f'{k} {v}' for k, v in given.items())}"
        data = overrides.apply(read_yaml_file(Path(path)), str(path))
        named = data.get("profile") if isinstance(data, dict) else None
        spec = parse_campaign(
            data, file=where, base_dir=Path(path).parent,
            base_verifiers=profile_verifiers(profiles)(named if isinstance(named, str) else None),
            profile_forge=profile_forge(profiles)(named if isinstance(named, str) else None),
        )  # fmt: skip
    spec = with_discovered(spec, settings)
    return Campaign(
        spec=spec, file=path, profile=resolve_profile(spec, profiles, where), overrides=given
    )


def load_catalog(settings: Settings, instance: DagsterInstance | None = None) -> Catalog:
    """Every campaign file in the campaigns folder; bad files are reported, not fatal.

    With an `instance`, also the campaigns its runs were started from with `run --file` outside
    the folder (a campaign of the folder wins over one of the same name run from elsewhere)."""
    catalog = Catalog()
    profiles = load_profiles(settings.resolved_profiles_file())
    ids: dict[str, Path] = {}
    for path in campaign_files(settings.campaigns_dir):
        try:
            spec = with_discovered(
                load_campaign(path, profile_verifiers(profiles), profile_forge(profiles)), settings
            )
            profile = resolve_profile(spec, profiles, str(path))
        except SpecError as exc:
            catalog.errors.append(exc)
            continue
        if spec.id in ids:
            catalog.errors.append(
                SpecError(
                    str(path), [Problem("name", f"{spec.name!r} is also used by {ids[spec.id]}")]
                )
            )
            continue
        ids[spec.id] = path
        catalog.campaigns[spec.name] = Campaign(spec=spec, file=path, profile=profile)
    if instance is not None:
        _add_run_files(catalog, instance, settings)
    return catalog


def run_files(instance: DagsterInstance) -> list[Path]:
    """The campaign files the instance's runs were started from, the most recently run first."""
    from dagster import RunsFilter

    found = [Path(v) for key, values in instance.get_run_tags([FILE_TAG]) for v in values]

    def last_run(path: Path) -> float:
        records = instance.get_run_records(RunsFilter(tags={FILE_TAG: str(path)}), limit=1)
        return records[0].create_timestamp.timestamp() if records else 0.0

    return sorted(found, key=last_run, reverse=True)


def _add_run_files(catalog: Catalog, instance: DagsterInstance, settings: Settings) -> None:
    """Add the campaigns run from files outside the campaigns folder; for a name run from
    several files, the most recently run one."""
    folder = settings.campaigns_dir.resolve()
    for path in run_files(instance):
        if path.parent == folder:  # the folder's own files were loaded (or are deleted) above
            continue
        if not path.is_file():
            catalog.gone.append(path)
            continue
        try:
            campaign = load_one(path, settings)
        except SpecError as exc:
            catalog.errors.append(exc)
            continue
        catalog.campaigns.setdefault(campaign.spec.name, campaign)
