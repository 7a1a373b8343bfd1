"""How a change is delivered: the pull request's templates, its reviewers and assignees, whether a
human reviews it first, and whether the platform merges it once it may (`merge:`)."""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from jinja2 import Environment, StrictUndefined, Template, TemplateSyntaxError
from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator_assets.spec.steps import StrictModel


class PullRequestTemplate(StrictModel):
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
    team_reviewers: list[str] = Field(
        default_factory=list, description="teams asked to review, as org/team (or team)"
    )
    reviewers_from: Literal["codeowners"] | None = Field(
        default=None,
        description="codeowners: also ask the owners of the changed files, from the target's "
        "CODEOWNERS at the change's base commit",
    )
    assignees: list[str] = Field(default_factory=list, description="users the PR is assigned to")
    draft: bool = False
    reopen: bool = Field(default=False, description="reopen a PR a human closed (not merged)")
    max_per_hour: int | None = Field(
        default=None,
        gt=0,
        description="open at most this many pull requests in any hour (across runs), to spare "
        "the targets' CI; a target past the limit stays pending until a later run",
    )

    @field_validator("reviewers", "team_reviewers", "assignees")
    @classmethod
    def _names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        team = info.field_name == "team_reviewers"
        names = []
        for raw in value:
            # as CODEOWNERS writes them (@alice, @org/team); forges' own ids (Bitbucket's
            # 557058:alice) pass as they are
            name = raw.strip().removeprefix("@")
            if not name or re.search(r"\s", name):
                raise ValueError(f"{raw!r} is not a name")
            if not team and "/" in name:
                raise ValueError(f"{raw!r} is a team: put it in pull_request.team_reviewers")
            if name not in names:
                names.append(name)
        return names

    @field_validator("title", "body")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            template(value)  # compiled once: the renders of every target reuse it
        except TemplateSyntaxError as exc:
            raise ValueError(f"template error at line {exc.lineno}: {exc.message}") from None
        return value


TEMPLATES = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=64)
def template(source: str) -> Template:
    """The compiled pull request template `source` (a campaign renders its title and body for
    every target: compiled once, not each time)."""
    return TEMPLATES.from_string(source)


class Review(StrictModel):
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


class Merge(StrictModel):
    """When and how the platform merges a campaign's pull requests (`merge:` in the campaign)."""

    when: Literal["checks_green"] = Field(
        default="checks_green",
        description="checks_green: once the required checks pass and reviews allow it",
    )
    method: Literal["merge", "squash", "rebase"] = "squash"
    auto_merge: bool = Field(
        default=True,
        description="ask the code host to merge by itself (GitHub auto-merge) when the "
        "repository allows it; otherwise the PR status sensor merges",
    )
