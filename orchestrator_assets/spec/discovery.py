"""Targets selected from a code host: asked for on refresh, kept in a file between refreshes.

A campaign with `discover:` gets its targets from its forge (`github:`, `gitlab:` or
`bitbucket:` selectors, asked of the campaign's named forge). Asking a code host is slow and rate
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
from orchestrator_assets.spec.target import SELECTOR_KINDS, Target
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


def _forge_kind(forge: Forge) -> tuple[str | None, str]:
    """The kind (github, local, …) and name of the forge discovery would ask, if known."""
    registry = getattr(forge, "registry", None)
    if registry is not None:  # a campaign's router
        name = forge.forge  # type: ignore[attr-defined]
        return registry.config(name).kind, name
    from resources.forges.github import GitHubForge
    from resources.forges.local import LocalForge

    if isinstance(forge, GitHubForge):
        return "github", "default"
    if isinstance(forge, LocalForge):
        return "local", "default"
    return None, "default"


def refresh(spec: CampaignSpec, settings: Settings, forge: Forge) -> Refresh:
    """Ask the campaign's forge for its targets (`forge.discover(selector)`) and store them.

    `forge` is the campaign's (`build_forge(settings, spec)`: a router whose `discover` asks
    the campaign's named forge), or a plain forge client."""
    assert spec.discover is not None
    host = spec.discover.host
    kind, name = _forge_kind(forge)
    if kind is not None and kind not in SELECTOR_KINDS[host]:
        wanted = {"github": "GitHub", "gitlab": "GitLab", "bitbucket": "Bitbucket"}[host]
        hint = (
            "set ORCHESTRATOR_FORGE=github and the token, or name a GitHub forge with `forge:`"
            if host == "github"
            else f"name a {wanted} forge of the forges file with `forge:`"
        )
        raise OrchestratorError(
            f"campaign {spec.name}: `discover: {host}` needs the {wanted} forge (the campaign's "
            f"forge {name!r} is {kind}; {hint})"
        )
    discover = getattr(forge, "discover", None)
    if not callable(discover):
        raise OrchestratorError(
            f"campaign {spec.name}: `discover: {host}` needs a forge that can discover repositories"
        )
    try:
        repos = discover(spec.discover.selector)
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
