"""The PR status sensor: follows each open pull request of a campaign on its forge to the end.

Each tick polls the pull requests that are due (the newest `pull_request` record naming a PR
says it is open, and no observation says it was merged) and records an `AssetObservation` on
`pull_request` for each target whose PR changed: state, mergeability, checks, review. A PR is
polled again one interval later while it changes; each poll that finds it unchanged, or that
fails, doubles its wait up to `max_interval_s`. Per PR the cursor keeps the next poll time, the
failure and idle counts and a digest of the last status seen, so a restart neither re-polls
everything at once nor records a status twice (without a cursor entry, the last observation's
status is the reference). A PR a human closed is still looked at every `max_interval_s` for
`follow_closed_s` after its close was seen, so that reopening it on the forge is noticed.

CI-driven repair (`ci_repairs: N` in the campaign): when a PR's checks fail, or it stops merging
into its base (a conflict after the base moved), the tick records a `CiRepairRequest` on the
target's `pull_request` (with the failed checks' logs from the forge's optional
`failed_check_logs`) and requests a run of the target tagged `orchestrator/ci_repair`, at most
once per failing head and at most N times per PR (stages/ci_repair.py says what the run does).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import dagster as dg

from orchestrator_assets.assets import history
from orchestrator_assets.assets.rollout_history import latest_ci_repairs
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.automerge import merge_when_ready
from orchestrator_assets.stages.ci_repair import (
    CI_REPAIR,
    CI_REPAIR_TAG,
    CiRepairRequest,
    repair_reason,
    tail_logs,
)
from resources.forges.base import Forge, PullRequestStatus
from resources.notify import Notify, no_notifier


def status_digest(status: PullRequestStatus) -> str:
    """A short fingerprint of everything a status says (to tell whether it changed)."""
    return hashlib.sha256(status.model_dump_json().encode()).hexdigest()[:16]


def next_delay(interval_s: float, idle: int, failures: int, max_interval_s: float) -> float:
    """How long to wait before the next poll of a PR after `idle` unchanged polls in a row and
    `failures` failed ones: the interval, doubled for each, at most `max_interval_s`."""
    return float(min(interval_s * 2 ** min(idle + failures, 32), max_interval_s))


def build_pr_status_sensor(
    spec: CampaignSpec,
    forge_getter: Callable[[], Forge],
    *,
    minimum_interval_seconds: int = 60,
    max_interval_s: float = 3600,
    max_polls_per_tick: int = 200,
    tick_budget_s: float = 40,
    follow_closed_s: float = 7 * 86400,
    clock: Callable[[], float] = time.time,
    notifier_getter: Callable[[], Notify] = lambda: no_notifier,
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition | None = None,
) -> dg.SensorDefinition:
    """A sensor that records how each open pull request of the campaign moves on its forge.

    With `job` (the campaign's targets job) and `ci_repairs` set, it also requests the runs
    that repair failing or conflicting PRs.

    `forge_getter` returns the forge (called when a tick has a PR to poll). At most
    `max_polls_per_tick` PRs are polled per tick, for at most about `tick_budget_s` seconds (the
    most overdue first); the rest stay due for the next tick. `clock` is injectable for tests.
    """
    pr_key = history.asset_key(spec, "pull_request")

    @dg.sensor(
        name=f"{spec.id}_pr_status",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Follows the open pull requests of campaign {spec.name} on their forge "
        "(state, checks, review, mergeability), backing off while nothing changes.",
    )
    def pr_status(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock()
        started = time.monotonic()
        previous = _load(context.cursor)
        instance = context.instance
        keys = [t.key for t in spec.targets]
        records = history.latest_numbered_pull_requests(instance, spec, keys)
        candidates = {
            k: r for k, r in records.items() if r.state == "open" and r.number is not None
        }
        seen = history.latest_pr_observations(instance, spec, list(candidates))
        repairs = (
            latest_ci_repairs(instance, spec, list(candidates))
            if spec.ci_repairs and job is not None
            else {}
        )
        run_requests: list[dg.RunRequest] = []
        tracked: dict[str, dict] = {}
        for key, record in candidates.items():
            last = seen.get(key)
            if (
                last is not None
                and last.number == record.number
                and _ended(last, now, follow_closed_s)
            ):
                continue
            entry = previous.get(key)
            if entry is not None and entry.get("number") == record.number:
                entry = {"next": 0.0, "failures": 0, "idle": 0, "digest": None, **entry}
            else:
                reference = last.status if last and last.number == record.number else None
                entry = {
                    "number": record.number,
                    "next": 0.0,
                    "failures": 0,
                    "idle": 0,
                    "digest": status_digest(reference) if reference else None,
                }
            tracked[key] = entry
        due = sorted((e["next"], k) for k, e in tracked.items() if e["next"] <= now)
        events: list[dg.AssetObservation] = []
        polled = failed = 0
        forge: Forge | None = None
        for _, key in due[:max_polls_per_tick]:
            if time.monotonic() - started > tick_budget_s:
                break
            entry = tracked[key]
            target = spec.target(key)
            assert target is not None
            polled += 1
            try:
                forge = forge or forge_getter()
                status = forge.pull_request_status(target.repo, entry["number"])
                # H4 auto-merge (`merge:`): merge a ready PR; its status is then the merged one
                status = merge_when_ready(spec, key, target.repo, status, forge, context.log.info)
            except Exception as exc:  # one PR's failure must not stop the others
                failed += 1
                entry["failures"] += 1
                entry["error"] = str(exc)[:300]
                context.log.warning(
                    f"{key}: reading pull request #{entry['number']} failed "
                    f"({entry['failures']} in a row): {exc}"
                )
            else:
                entry["failures"] = 0
                entry.pop("error", None)
                digest = status_digest(status)
                changed = digest != entry["digest"]
                if changed:
                    entry["digest"] = digest
                    entry["idle"] = 0
                    events.append(
                        dg.AssetObservation(
                            asset_key=pr_key,
                            partition=key,
                            metadata=history.pr_status_metadata(status),
                        )
                    )
                else:
                    entry["idle"] += 1
                if changed and job is not None and spec.ci_repairs:
                    repair = _ci_repair(
                        spec, key, target.repo, status, repairs.get(key), forge, context.log
                    )
                    if repair is not None:
                        event, request = repair
                        events.append(event)
                        run_requests.append(request)
                        notifier_getter()(
                            "ci_repair", f"*{spec.name}*: `{key}`: {event.description}"
                        )
                if changed and status.state == "merged":
                    notifier_getter()("merged", f"*{spec.name}*: `{key}` merged: {status.url}")
                if status.state == "merged":
                    del tracked[key]  # followed to the end
                    continue
                if status.state == "closed":  # seldom: only a reopen would change it
                    entry["next"] = now + max_interval_s
                    continue
            entry["next"] = now + next_delay(
                minimum_interval_seconds, entry["idle"], entry["failures"], max_interval_s
            )
        cursor = json.dumps({"prs": tracked}, sort_keys=True, separators=(",", ":"))
        summary = (
            f"{len(tracked)} PR(s) followed, {polled} polled, {len(events)} changed, "
            f"{failed} failed"
        )
        context.log.info(summary)
        if not events:
            return dg.SensorResult(skip_reason=summary, cursor=cursor)
        return dg.SensorResult(asset_events=events, run_requests=run_requests, cursor=cursor)

    return pr_status


def _ci_repair(
    spec: CampaignSpec,
    key: str,
    repo: str,
    status: PullRequestStatus,
    last: CiRepairRequest | None,
    forge: Forge,
    log,
) -> tuple[dg.AssetObservation, dg.RunRequest] | None:
    """The request (an observation, and the run) to repair a failing or conflicting PR; None
    when it needs none, was asked for this head already, or used up `ci_repairs`."""
    reason = repair_reason(status)
    if reason is None:
        return None
    same_pr = last is not None and last.number == status.number
    if same_pr and last.head_sha == status.head_sha and last.reason == reason:  # type: ignore[union-attr]
        return None  # asked for this head already: its run is under way or changed nothing
    attempt = (last.attempt if same_pr else 0) + 1  # type: ignore[union-attr]
    if attempt > spec.ci_repairs:
        log.warning(
            f"{key}: pull request #{status.number} {reason} failed again; no repair left "
            f"(ci_repairs: {spec.ci_repairs})"
        )
        return None
    logs: dict[str, str] = {}
    read_logs = getattr(forge, "failed_check_logs", None)
    if reason == "checks":
        if callable(read_logs):
            try:
                logs = tail_logs(read_logs(repo, status.number))
            except Exception as exc:  # the repair goes on without the logs
                log.warning(f"{key}: reading the failed checks' logs failed: {exc}")
        else:
            log.warning(f"{key}: this forge cannot give failed checks' logs; repairing without")
    request = CiRepairRequest(
        number=status.number,
        head_sha=status.head_sha,
        reason=reason,
        attempt=attempt,
        failing=list(status.failing_checks) or list(logs),
        logs=logs,
    )
    event = dg.AssetObservation(
        asset_key=history.asset_key(spec, "pull_request"),
        partition=key,
        description=request.describe(),
        metadata={
            CI_REPAIR: dg.MetadataValue.json(request.model_dump(mode="json")),
            "ci_repair_attempt": attempt,
            "ci_repair_reason": reason,
        },
    )
    run = dg.RunRequest(
        run_key=f"ci_repair:{key}:{status.number}:{attempt}",
        partition_key=key,
        tags={CI_REPAIR_TAG: reason},
    )
    return event, run


def _ended(last: history.PullRequestObservation, now: float, follow_closed_s: float) -> bool:
    """True when the PR needs no more polls: seen merged, or seen closed longer ago than a
    reopen is still expected."""
    return last.state == "merged" or (
        last.state == "closed" and now - last.timestamp > follow_closed_s
    )


def _load(cursor: str | None) -> dict[str, dict]:
    """Per target, what the cursor kept of its PR (nothing for a missing or unreadable one)."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    prs = data.get("prs") if isinstance(data, dict) else None
    return {k: v for k, v in prs.items() if isinstance(v, dict)} if isinstance(prs, dict) else {}
