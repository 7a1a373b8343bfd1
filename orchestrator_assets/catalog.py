"""All campaigns of the campaigns folder, each with its profile, and the problems found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_assets.discovery import with_discovered
from orchestrator_assets.errors import OrchestratorError, Problem, SpecError
from orchestrator_assets.profiles import Profile, ProfilesFile, load_profiles
from orchestrator_assets.settings import Settings
from orchestrator_assets.spec import CampaignSpec, campaign_files, load_campaign


@dataclass
class Campaign:
    """A valid campaign, where it came from, and the profile its sandboxes use."""

    spec: CampaignSpec
    file: Path
    profile: Profile


@dataclass
class Catalog:
    """The campaigns that loaded and the files that did not."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)

    def get(self, name: str) -> Campaign:
        """The campaign called `name` (a clear error listing the known ones otherwise)."""
        if name in self.campaigns:
            return self.campaigns[name]
        known = ", ".join(sorted(self.campaigns)) or "none"
        broken = [e.file for e in self.errors]
        hint = f"; files with errors: {', '.join(broken)}" if broken else ""
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


def load_one(path: Path, settings: Settings) -> Campaign:
    """Load and fully check one campaign file (spec and profile)."""
    profiles = load_profiles(settings.resolved_profiles_file())
    spec = with_discovered(load_campaign(path, profile_verifiers(profiles)), settings)
    return Campaign(spec=spec, file=path, profile=resolve_profile(spec, profiles, str(path)))


def load_catalog(settings: Settings) -> Catalog:
    """Every campaign file in the campaigns folder; bad files are reported, not fatal."""
    catalog = Catalog()
    profiles = load_profiles(settings.resolved_profiles_file())
    ids: dict[str, Path] = {}
    for path in campaign_files(settings.campaigns_dir):
        try:
            spec = with_discovered(load_campaign(path, profile_verifiers(profiles)), settings)
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
    return catalog
