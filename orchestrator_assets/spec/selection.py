"""Targeting by content: `select:` keeps only the repositories whose base branch holds some files
or some text.

```yaml
select:
  paths: ["requirements*.txt"]          # a file matching each glob exists
  contains:                             # a file matching `path` has a line matching `pattern`
    - {path: "**/requirements*.txt", pattern: "django[<=]=?[0-3]\\."}
  match: all                            # all conditions (default) or any one of them
```

Globs are git's `:(glob)` pathspecs from the repository root (`*` stays within a folder, `**/`
spans any number of them); patterns are Perl-compatible regular expressions (`git grep -P`), one
line at a time. The evaluation itself is in `stages/selection.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from orchestrator_assets.spec.slugs import slug_problem
from orchestrator_assets.spec.steps import StrictModel

if TYPE_CHECKING:  # campaign.py imports this module
    from orchestrator_assets.spec.campaign import CampaignSpec
    from orchestrator_assets.spec.settings import Settings
    from orchestrator_assets.spec.target import Target


def check_glob(value: str) -> str:
    """A repository-relative glob (no absolute path, no `..`, no pathspec magic of its own)."""
    value = value.strip()
    if not value or value.startswith(("/", ":")) or ".." in value.split("/"):
        raise ValueError(
            f"{value!r} must be a glob relative to the repository root, without '..' "
            "(e.g. 'requirements*.txt' or '**/package.json')"
        )
    return value


class ContentMatch(StrictModel):
    """A file matching `path` has a line matching `pattern`."""

    path: str = Field(description="glob of the files to search, from the repository root")
    pattern: str = Field(description="a Perl-compatible regular expression (git grep -P)")

    _check_path = field_validator("path")(lambda value: check_glob(value))

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        if not value:
            raise ValueError("the pattern is empty")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value


class Selector(StrictModel):
    """Which of the campaign's repositories it works on, judged on each one's base commit."""

    paths: list[str] = Field(
        default_factory=list, description="globs; a file matching each must exist"
    )
    contains: list[ContentMatch] = Field(
        default_factory=list, description="a file matching `path` has a line matching `pattern`"
    )
    match: Literal["all", "any"] = Field(
        default="all", description="`all`: every condition holds; `any`: one does"
    )

    _check_paths = field_validator("paths")(lambda value: [check_glob(v) for v in value])

    @field_validator("contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _some_condition(self) -> Selector:
        if not self.paths and not self.contains:
            raise ValueError("give `paths:` or `contains:` (or both): a selector needs a condition")
        return self

    def digest(self) -> str:
        """What the selector asks, as a short digest (part of its answers' cache key)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the stored answers, applied when a campaign is loaded -------------------------------------
#
# Evaluating a selector needs each repository's base commit in the mirror cache, which loading a
# campaign must not wait for: `stages/selection.py` evaluates (on `orchestrator run` and in the
# discovery sensor) and stores the answers in `<data dir>/selection/<campaign>.json`; loading
# applies the stored answers. A target without one is not a target yet (the next evaluation
# decides), so nothing is ever done to a repository the selector did not choose.


def selection_digest(spec: CampaignSpec) -> str:
    """What the campaign's `select` and `workspaces` ask, as one digest."""
    parts = [
        spec.select.digest() if spec.select else "-",
        spec.workspaces.digest() if spec.workspaces else "-",
    ]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


def selection_path(settings: Settings, spec: CampaignSpec) -> Path:
    """Where the campaign's last evaluation is kept."""
    return settings.data_dir / "selection" / f"{spec.id}.json"


def stored_selection(settings: Settings, spec: CampaignSpec) -> dict:
    """The campaign's last evaluation ({} when none, or when it asked something else)."""
    try:
        stored = json.loads(selection_path(settings, spec).read_text())
    except (OSError, ValueError):
        return {}
    return stored if stored.get("digest") == selection_digest(spec) else {}


def without_selection(spec: CampaignSpec) -> CampaignSpec:
    """The campaign with the targets it had before `with_selected`."""
    if spec._candidates is None:
        return spec
    plain = spec.model_copy(update={"targets": list(spec._candidates)})
    plain._candidates = None
    return plain


def with_selected(spec: CampaignSpec, settings: Settings) -> CampaignSpec:
    """The campaign with only the targets its last evaluation selected, each repository split
    into its workspaces (`workspaces:`). Campaigns with neither setting come back as they are."""
    if not spec.selects_targets:
        return spec
    spec = without_selection(spec)
    answers = stored_selection(settings, spec).get("targets", {})
    chosen: list[Target] = []
    for target in spec.targets:
        answer = answers.get(target.key)
        if not answer or not answer.get("selected"):
            continue
        if spec.workspaces is None or target.path:
            chosen.append(target)
            continue
        chosen.extend(workspace_targets(target, answer.get("workspaces", [])))
    selected = spec.model_copy(update={"targets": chosen})
    selected._candidates = list(spec.targets)
    return selected


def workspace_targets(target: Target, directories: list[str]) -> list[Target]:
    """One target per workspace directory of `target`'s repository."""
    return [
        target.model_copy(update={"path": d, "slug": workspace_slug(target.key, d)})
        for d in directories
    ]


def workspace_slug(repo_key: str, directory: str) -> str:
    """The partition key of a workspace: `owner__repo__packages-foo`, shortened with a digest of
    the directory where that would pass the 120 characters a key may have."""
    from orchestrator_assets.spec.workspaces import dir_slug

    slug = f"{repo_key}__{dir_slug(directory)}"
    if not slug_problem(slug):
        return slug
    digest = hashlib.sha256(directory.encode()).hexdigest()[:10]
    return f"{slug[:100].rstrip('-_.')}-{digest}"


def describe_targets(spec: CampaignSpec) -> str:
    """How many targets the campaign has, for people: with `select:`/`workspaces:` also how many
    repositories are listed and that the last evaluation chose the rest."""
    count = f"{len(spec.targets)} target(s)"
    if spec._candidates is None:
        return count
    return (
        f"{count} chosen by select/workspaces from {len(spec._candidates)} listed repositories "
        "(evaluated by `orchestrator run` and the discovery sensor)"
    )
