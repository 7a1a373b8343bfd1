"""Reading the rollout's own observations back from the event log: CI repair requests and
post-merge watch results, both observations on a campaign's `pull_request` asset, and the report
columns they give (wave, CI repairs, post-merge)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from dagster import DagsterInstance
from pydantic import BaseModel, Field, ValidationError

from orchestrator_assets.assets import history
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.ci_repair import CI_REPAIR, CiRepairRequest
from orchestrator_assets.stages.rollout import Standing, TargetState, standing, waves_of

POST_MERGE = "post_merge"  # observation metadata on `pull_request`: a post-merge watch result


class PostMergeResult(BaseModel):
    """What the post-merge watch found on a target's default branch after its PR merged."""

    number: int | None = Field(default=None, description="the merged pull request")
    branch: str
    state: str = Field(description="failure, or passed when the watch ended without one")
    failing: list[str] = Field(default_factory=list)
    sha: str | None = None
    merged_at: float = 0.0


def _latest(
    instance: DagsterInstance, spec: CampaignSpec, keys: Sequence[str] | None, label: str, model
) -> dict:
    stored = history.latest_stored(
        instance, history.asset_key(spec, "pull_request"), keys, True, label, labels=()
    )
    found = {}
    for partition, event in stored.items():
        try:
            found[partition] = model.model_validate(event.metadata[label])
        except ValidationError:
            continue  # a record of an older shape
    return found


def latest_ci_repairs(
    instance: DagsterInstance, spec: CampaignSpec, keys: Sequence[str] | None = None
) -> dict[str, CiRepairRequest]:
    """The newest CI repair request per target."""
    return _latest(instance, spec, keys, CI_REPAIR, CiRepairRequest)


def latest_post_merge(
    instance: DagsterInstance, spec: CampaignSpec, keys: Sequence[str] | None = None
) -> dict[str, PostMergeResult]:
    """The newest post-merge watch result per target."""
    return _latest(instance, spec, keys, POST_MERGE, PostMergeResult)


def wave_numbers(spec: CampaignSpec) -> dict[str, int]:
    """target -> its rollout wave (empty without `rollout:`)."""
    if spec.rollout is None:
        return {}
    keys = [t.key for t in spec.targets]
    return {k: n for n, wave in enumerate(waves_of(spec.rollout, keys), 1) for k in wave}


def add_rollout_columns(instance: DagsterInstance, spec: CampaignSpec, frame: pd.DataFrame) -> None:
    """Add the report's `wave`, `ci_repairs` and `post_merge` columns to `frame` (in place)."""
    waves = wave_numbers(spec)
    repairs = latest_ci_repairs(instance, spec) if spec.ci_repairs else {}
    watched = latest_post_merge(instance, spec) if spec.post_merge else {}
    keys = list(frame["target"])
    frame["wave"] = pd.array([waves.get(k) for k in keys], dtype="Int64")
    frame["ci_repairs"] = [repairs[k].attempt if k in repairs else 0 for k in keys]
    frame["post_merge"] = [_post_merge_text(watched.get(k)) for k in keys]
    current = standing_of(spec, frame)
    if current is not None:  # the CLI and the report asset show it under the table
        frame.attrs["rollout"] = current.describe()


def standing_of(spec: CampaignSpec, frame: pd.DataFrame) -> Standing | None:
    """The rollout's standing given a report frame (None: the campaign has no rollout)."""
    if spec.rollout is None:
        return None
    states = {
        row["target"]: TargetState(
            row["status"], row["checks"] if isinstance(row["checks"], str) else None
        )
        for row in frame[["target", "status", "checks"]].to_dict("records")
    }
    return standing(spec, states)


def _post_merge_text(result: PostMergeResult | None) -> str | None:
    if result is None:
        return None
    if result.state == "failure":
        return f"failure on {result.branch}: {', '.join(result.failing) or 'checks'}"
    return f"{result.state} on {result.branch}"
