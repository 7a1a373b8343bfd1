"""The post-merge watch: after a campaign's PR merged, the target's default-branch checks are
watched for `post_merge.watch`; a failure is recorded on the campaign and notified.

Each tick looks at the targets whose PR was seen merged (the PR status sensor's or a bulk
action's observation on `pull_request`) less than the watch ago and that have no watch result
for that PR yet, and reads their base branch's checks with the forge's optional
`branch_checks(url, branch)`. A failure ends the watch at once: a `PostMergeResult` (state
`failure`, the failing checks) is recorded as an observation on the target's `pull_request` and
notified. When the watch time is over, the last state seen (`success`, `pending`, `none`) is
recorded the same way, and the target is not looked at again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from orchestrator_assets.assets import history
from orchestrator_assets.assets.rollout_history import (
    POST_MERGE,
    PostMergeResult,
    latest_post_merge,
)
from orchestrator_assets.spec.campaign import CampaignSpec
from resources.forges.base import Forge
from resources.notify import Notify, no_notifier


def build_post_merge_sensor(
    spec: CampaignSpec,
    forge_getter: Callable[[], Forge],
    *,
    minimum_interval_seconds: int = 120,
    max_polls_per_tick: int = 200,
    tick_budget_s: float = 40,
    clock: Callable[[], float] = time.time,
    notifier_getter: Callable[[], Notify] = lambda: no_notifier,
) -> dg.SensorDefinition:
    """A sensor that watches the default branch of each target whose campaign PR merged."""
    pr_key = history.asset_key(spec, "pull_request")

    @dg.sensor(
        name=f"{spec.id}_post_merge",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Watches the default-branch checks of campaign {spec.name}'s targets for a "
        "while after their pull request merged; a failure is recorded and notified.",
    )
    def post_merge(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if spec.post_merge is None:
            return dg.SensorResult(skip_reason="the campaign has no post_merge watch")
        watch_s = spec.post_merge.watch_s
        now, started = clock(), time.monotonic()
        keys = [t.key for t in spec.targets]
        seen = history.latest_pr_observations(context.instance, spec, keys)
        merged = {k: o for k, o in seen.items() if o.state == "merged"}
        done = latest_post_merge(context.instance, spec, list(merged))
        due = [
            k
            for k, o in sorted(merged.items(), key=lambda item: item[1].timestamp)
            if not (k in done and done[k].number == o.number)
        ]
        changes = history.latest_changes(context.instance, spec, due) if due else {}
        events: list[dg.AssetObservation] = []
        forge: Forge | None = None
        watching = 0
        for key in due[:max_polls_per_tick]:
            if time.monotonic() - started > tick_budget_s:
                break
            target, observation = spec.target(key), merged[key]
            assert target is not None
            change = changes.get(key)
            branch = target.base or (change.base_branch if change else None)
            if branch is None:
                continue
            forge = forge or forge_getter()
            read = getattr(forge, "branch_checks", None)
            if not callable(read):
                context.log.warning(
                    f"{key}: this forge cannot read a branch's checks; no post-merge watch"
                )
                break
            try:
                checks = read(target.repo, branch)
            except Exception as exc:  # one target's failure must not stop the others
                context.log.warning(f"{key}: reading the checks of {branch} failed: {exc}")
                continue
            over = now - observation.timestamp >= watch_s
            if checks.state != "failure" and not over:
                watching += 1
                continue
            result = PostMergeResult(
                number=observation.number,
                branch=branch,
                state=checks.state,
                failing=checks.failing,
                sha=checks.sha,
                merged_at=observation.timestamp,
            )
            events.append(_observation(pr_key, key, result))
            if checks.state == "failure":
                note = (
                    f"*{spec.name}*: `{key}`: {branch} fails after PR #{observation.number} "
                    f"merged: {', '.join(checks.failing) or 'checks failed'} "
                    f"({(checks.sha or '')[:12]})"
                )
                context.log.warning(note)
                notifier_getter()("post_merge_failure", note)
        summary = f"{watching} merged target(s) watched, {len(events)} result(s) recorded"
        if not events:
            return dg.SensorResult(skip_reason=summary)
        context.log.info(summary)
        return dg.SensorResult(asset_events=events)

    return post_merge


def _observation(key: dg.AssetKey, partition: str, result: PostMergeResult) -> dg.AssetObservation:
    """The observation recording a post-merge watch result on the target's `pull_request`."""
    return dg.AssetObservation(
        asset_key=key,
        partition=partition,
        description=f"post-merge watch of {result.branch}: {result.state}",
        metadata={
            POST_MERGE: dg.MetadataValue.json(result.model_dump(mode="json")),
            "post_merge_state": result.state,
            "post_merge_failing": ", ".join(result.failing),
        },
    )
