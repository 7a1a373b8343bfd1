"""Targets selected from a code host: asked for on refresh, kept in a file between refreshes.

A campaign with `discover:` gets its targets from GitHub. Asking GitHub is slow and rate
limited, so the answer is stored in `<data dir>/discovered/<campaign>.json`; loading a campaign
adds the stored targets to its explicit ones without calling GitHub. `orchestrator run` and the
discovery sensor refresh the file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.selection import with_selected, without_selection
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.spec.target import Target
from resources.forges.base import Forge, ForgeError

STALE_AFTER_S = 600  # the sensor asks GitHub again after this long


def discovered_path(settings: Settings, spec: CampaignSpec) -> Path:
    """Where a campaign's discovered targets are kept."""
    return settings.data_dir / "discovered" / f"{spec.id}.json"


def _stored(settings: Settings, spec: CampaignSpec) -> dict:
    try:
        return json.loads(discovered_path(settings, spec).read_text())
    except (OSError, ValueError):
        return {}


def with_discovered(spec: CampaignSpec, settings: Settings) -> CampaignSpec:
    """The campaign with its last discovered targets added (an explicit target wins), then
    only those its `select:`/`workspaces:` chose (spec/selection.py)."""
    spec = without_selection(spec)  # discovery works on all the candidates
    if spec.discover is None:
        return with_selected(spec, settings)
    own = [t for t in spec.targets if t.key not in spec._discovered]  # the file's targets
    explicit = {t.key for t in own}
    found = [
        Target.model_validate(t)
        for t in _stored(settings, spec).get("targets", [])
        if t.get("slug") not in explicit
    ]
    merged = spec.model_copy(update={"targets": [*own, *found]})
    merged._discovered = frozenset(t.key for t in found)
    return with_selected(merged, settings)


def age_s(settings: Settings, spec: CampaignSpec) -> float:
    """Seconds since the last refresh (infinite when there was none)."""
    refreshed = _stored(settings, spec).get("refreshed")
    return time.time() - refreshed if refreshed else float("inf")


@dataclass
class Refresh:
    """What a refresh found compared with the one before."""

    total: int
    added: list[str]
    removed: list[str]


def refresh(spec: CampaignSpec, settings: Settings, forge: Forge) -> Refresh:
    """Ask the code host for the campaign's targets and store them."""
    from resources.forges.github import GitHubForge
    from resources.forges.github_discovery import discover

    assert spec.discover is not None
    if not isinstance(forge, GitHubForge):
        raise OrchestratorError(
            f"campaign {spec.name}: `discover: github` needs the GitHub forge "
            "(set ORCHESTRATOR_FORGE=github and the token)"
        )
    try:
        repos = discover(forge, spec.discover.github)
    except ForgeError as exc:
        raise OrchestratorError(f"campaign {spec.name}: discovery failed: {exc}") from None
    base = spec.discover.base
    targets = [Target(repo=r.url, base=base) for r in repos]
    before = {t.get("slug") for t in _stored(settings, spec).get("targets", [])}
    now = [t.key for t in targets]
    path = discovered_path(settings, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "refreshed": time.time(),
        "selector": spec.discover.model_dump(mode="json"),
        "targets": [t.model_dump(mode="json", exclude_defaults=True) for t in targets],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return Refresh(
        total=len(now),
        added=[k for k in now if k not in before],
        removed=sorted(k for k in before if k not in set(now)),
    )
