"""Monorepo workspaces: `workspaces:` makes each sub-project of a repository its own target.

```yaml
workspaces:
  marker: pyproject.toml     # a directory holding this file is a workspace
  under: "packages/*"        # where to look: a glob of directories from the repository root
  pull_requests: per_workspace
```

Each directory matching `under` that holds `marker` on the base commit becomes a target of its
own (partition `owner__repo__packages-foo`, branch `campaign/<name>/packages-foo`): setup, the
transformation and the verifiers run with it as their working directory, and a change to a file
outside it is refused. Found on the mirror cache by `stages/selection.py`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, field_validator

from orchestrator_assets.spec.selection import check_glob
from orchestrator_assets.spec.steps import StrictModel


class Workspaces(StrictModel):
    """How a campaign splits its repositories into sub-projects."""

    marker: str = Field(description="the file that makes a directory a workspace")
    under: str = Field(
        default="*", description="glob of the directories to look in (from the repository root)"
    )
    pull_requests: Literal["per_workspace", "per_repository"] = Field(
        default="per_workspace",
        description="one branch and PR per workspace, or one per repository combining the "
        "workspaces whose changes passed their gates",
    )

    @field_validator("marker")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not value or "/" in value or value in (".", "..") or any(c in value for c in "*?["):
            raise ValueError(f"{value!r} must be a file name (e.g. pyproject.toml), not a path")
        return value

    _check_under = field_validator("under")(lambda value: check_glob(value.rstrip("/")))

    @property
    def pathspec(self) -> str:
        """The git pathspec of the marker files."""
        return f":(glob){self.under}/{self.marker}"

    def digest(self) -> str:
        """What finds the workspaces, as a short digest (part of the answers' cache key)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def dir_slug(path: str) -> str:
    """A workspace directory as a slug part: `packages/foo` -> `packages-foo`."""
    import re

    return re.sub(r"[^a-z0-9_.]+", "-", path.lower()).strip("-.") or "root"
