"""The campaign report: one row per target, its status and what each stage recorded."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from orchestrator_assets.assets import history
from orchestrator_assets.assets.rollout_history import add_rollout_columns
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    VerificationRecord,
    decision_applies,
)
from orchestrator_assets.stages.review import latest_decisions
from orchestrator_assets.stages.status import ChangeOutcome, TargetStatus

COLUMNS = [
    "target", "status", "reason", "base_sha", "head_sha", "files_changed", "verifiers",
    "failed_verifiers", "setup", "pr_number", "pr_url", "pr_state", "checks", "review",
    "mergeable", "iterations", "decision", "verifier_tool_calls", "stop_blocks", "repairs",
    "judge", "cost_usd", "duration_s", "repo",
]  # fmt: skip
BURNDOWN_COLUMNS = ["day", "open", "merged", "closed"]
ENDED = ("merged", "closed")  # pull request states that end a target (until a reopen is seen)


def target_status(
    change: ChangeRecord | None,
    verification: VerificationRecord | None,
    pull_request: PullRequestRecord | None,
    removed: bool = False,
    observed_state: str | None = None,
) -> tuple[TargetStatus, str | None]:
    """Where a target stands given its newest records, and why (for failures).

    `observed_state` is the state its pull request was last seen in on the forge (by the PR
    status sensor or a bulk action); a PR seen merged or closed ends the target there.
    """
    if removed:
        return TargetStatus.SKIPPED, "removed from the campaign"
    if pull_request is not None and observed_state in ENDED:
        return TargetStatus(observed_state), None
    if change is None:
        return TargetStatus.PENDING, None
    if change.outcome == ChangeOutcome.FAILED:
        return TargetStatus.CHANGE_FAILED, change.reason
    if change.outcome == ChangeOutcome.SETUP_FAILED:
        return TargetStatus.SETUP_FAILED, change.reason
    if change.outcome == ChangeOutcome.SKIPPED:
        return TargetStatus.OVER_BUDGET, change.reason
    if change.outcome == ChangeOutcome.NO_CHANGE:
        return TargetStatus.NO_CHANGE, None
    if verification is None or verification.head_sha != change.head_sha:
        return TargetStatus.PENDING, "verification has not run for the current change"
    if verification.setup_failed:
        return TargetStatus.SETUP_FAILED, verification.error
    if not verification.passed:
        failed = verification.failed_verifiers
        reason = verification.error or f"verifier failed: {', '.join(failed)}"
        return TargetStatus.VERIFICATION_FAILED, reason
    verdict = change.verdict
    if verdict is not None and verdict.verdict == "veto":
        why = "; ".join(f"{r.get('kind')}: {r.get('detail')}" for r in verdict.reasons)
        return TargetStatus.JUDGE_VETOED, f"judge vetoed: {why}"
    if pull_request is None or pull_request.head_sha != change.head_sha:
        return TargetStatus.PENDING, "pull request not delivered yet"
    if pull_request.outcome == "rejected":
        return TargetStatus.REJECTED, pull_request.reason
    if pull_request.outcome == "awaiting_review":
        return TargetStatus.AWAITING_REVIEW, None
    if pull_request.outcome == "previewed":  # nothing pushed: `orchestrator publish` opens it
        return TargetStatus.PREVIEWED, pull_request.reason
    if pull_request.outcome == "failed":
        return TargetStatus.PR_FAILED, pull_request.reason
    if pull_request.outcome == "blocked":
        return TargetStatus.VERIFICATION_FAILED, pull_request.reason
    if pull_request.outcome == "held":  # the judge gave no verdict: a later run asks again
        return TargetStatus.PENDING, pull_request.reason
    state = pull_request.state
    if state == "merged":
        return TargetStatus.MERGED, None
    if state == "closed":
        return TargetStatus.CLOSED, None
    if state == "open":
        return TargetStatus.PR_OPEN, None
    return TargetStatus.PENDING, pull_request.reason


def build_report(instance: DagsterInstance, spec: CampaignSpec) -> pd.DataFrame:
    """The report frame over every target the campaign has or had (removed ones as skipped)."""
    changes = history.latest_changes(instance, spec)
    verifications = history.latest_verifications(instance, spec)
    prs = history.latest_pull_requests(instance, spec)
    observations = history.latest_pr_observations(instance, spec)
    decisions = latest_decisions(instance, spec)
    removed = history.removed_targets(instance, spec)
    current = {t.key: t for t in spec.targets}
    keys = list(current) + sorted((set(changes) | removed) - set(current))
    rows = []
    for key in keys:
        change, verification, pr = changes.get(key), verifications.get(key), prs.get(key)
        seen = _seen(pr, observations.get(key))
        pr_state = _pr_state(pr, seen)
        status, reason = target_status(
            change, verification, pr, key not in current, seen.state if seen else None
        )
        decision = decisions.get(key)
        applies = decision_applies(decision, change)
        if applies and decision is not None and status == TargetStatus.AWAITING_REVIEW:
            if decision.decision == "reject":  # final at once; the next run closes its draft
                status, reason = TargetStatus.REJECTED, decision.reason
            else:
                reason = f"{decision.decision} decided, applied by the next run"
        results = verification.results if verification else []
        stage_durations = [r.duration_s for r in (change, verification, pr) if r is not None]
        rows.append(
            {
                "target": key,
                "status": status.value,
                "reason": reason,
                "base_sha": change.base_sha if change else None,
                "head_sha": change.head_sha if change else None,
                "files_changed": len(change.files) if change else 0,
                "verifiers": ", ".join(
                    f"{r.name}:{'pass' if r.passed else 'fail'}" for r in results
                ),
                "failed_verifiers": ", ".join(r.name for r in results if not r.passed),
                "setup": _setup_applied(change, verification),
                "pr_number": pr.number if pr and pr.number else None,
                "pr_url": pr.url if pr else None,
                "pr_state": pr_state,
                "checks": seen.checks if seen else None,
                "review": seen.review if seen else None,
                "mergeable": seen.mergeable if seen and pr_state in ("open", "draft") else None,
                "iterations": change.iteration or (1 if change.head_sha else 0) if change else 0,
                "decision": _decision_text(decision),
                **_quality(change),
                "cost_usd": change.total_cost_usd if change else 0.0,
                "duration_s": round(sum(stage_durations), 3),
                "repo": current[key].repo if key in current else (change.repo if change else None),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["pr_number"] = frame["pr_number"].astype("Int64")
    frame["mergeable"] = frame["mergeable"].astype("boolean")
    add_rollout_columns(instance, spec, frame)  # wave, ci_repairs, post_merge
    add_host_columns(spec, frame)  # forge, host
    return frame


def add_host_columns(spec: CampaignSpec, frame: pd.DataFrame) -> None:
    """Where each target lives: `forge` (the named forge: the target's, else the campaign's,
    else `default`) and `host` (its web host, `local` for the local forge; None when the forges
    file cannot be read)."""
    from orchestrator_assets.spec.errors import OrchestratorError
    from resources.build import forge_registry
    from resources.forges.base import ForgeError
    from resources.forges.registry import DEFAULT

    own = {t.key: t.forge for t in spec.targets}
    names = [own.get(key) or spec.forge or DEFAULT for key in frame["target"]]
    try:
        registry = forge_registry()
    except (OrchestratorError, ForgeError):
        registry = None
    hosts = []
    for name in names:
        config = registry.configs.get(name) if registry else None
        hosts.append(config.host() if config else None)
    frame["forge"] = pd.Series(names, index=frame.index, dtype="object")
    frame["host"] = pd.Series(hosts, index=frame.index, dtype="object")


def _quality(change: ChangeRecord | None) -> dict:
    """The agent quality loop's columns: the agent's own verifier tool calls and stop-gate
    blocks over all iterations, repair passes, and the judge's verdicts in order."""
    if change is None:
        return {"verifier_tool_calls": 0, "stop_blocks": 0, "repairs": 0, "judge": None}
    iterations = change.iterations
    calls = sum(i.verifier_calls for i in iterations)
    blocks = sum(i.stop_blocks for i in iterations)
    if not iterations and change.agent is not None:
        calls, blocks = len(change.agent.verifier_calls), change.agent.stop_blocks
    verdicts = " → ".join(v.verdict for v in change.verdicts) or None
    return {"verifier_tool_calls": calls, "stop_blocks": blocks, "repairs": change.repairs,
            "judge": verdicts}  # fmt: skip


def judge_rates(frame: pd.DataFrame) -> dict[str, float | int]:
    """Per campaign: how many targets the judge saw, the share it vetoed at least once, and the
    share of those the agent then corrected (the judge approved a later diff)."""
    judged = [str(j) for j in frame["judge"] if isinstance(j, str) and j]
    vetoed = [j for j in judged if "veto" in j]
    corrected = [j for j in vetoed if j.split(" → ")[-1] == "approve"]
    return {
        "judged_targets": len(judged),
        "veto_rate": round(len(vetoed) / len(judged), 4) if judged else 0.0,
        "self_correction_rate": round(len(corrected) / len(vetoed), 4) if vetoed else 0.0,
    }


def _decision_text(decision: ReviewDecision | None) -> str | None:
    """The newest review decision in a cell: what, by whom."""
    if decision is None:
        return None
    return f"{decision.decision} by {decision.actor}"


def _seen(
    pr: PullRequestRecord | None, seen: history.PullRequestObservation | None
) -> history.PullRequestObservation | None:
    """The observation, when it is of the PR the record names."""
    if pr is None or seen is None or pr.number is None or seen.number != pr.number:
        return None
    return seen


def _pr_state(
    pr: PullRequestRecord | None, seen: history.PullRequestObservation | None
) -> str | None:
    """The PR's state: as last seen on the forge, unless its record says it ended."""
    if pr is None:
        return None
    if seen is None or pr.state in ENDED:
        return pr.state
    return seen.state


def _setup_applied(change: ChangeRecord | None, verification: VerificationRecord | None) -> str:
    """How the last run prepared the target's workspaces: `none` (no setup), `reused` (it
    reused the earlier change and verification, so no setup ran), or per stage whether setup
    ran (cache miss or off), was restored (cache hit), failed, or the stage's record was reused.

    A reused record is a copy of the run that made it, setup included: it must not be shown
    as what this run did."""
    if change is None:
        return "none"
    current = verification if verification and verification.head_sha == change.head_sha else None
    failed = {
        "change": change.outcome == ChangeOutcome.SETUP_FAILED,
        "verification": bool(current and current.setup_failed),
    }
    stages: list[tuple[str, ChangeRecord | VerificationRecord]] = [("change", change)]
    if current is not None and current.head_sha:
        stages.append(("verification", current))
    commands = max((r.setup.commands for _, r in stages if r.setup is not None), default=0)
    if not commands and not any(failed.values()):
        return "none"  # the campaign has no setup
    if all(r.reused for _, r in stages):
        return "reused"
    parts = []
    for name, record in stages:
        if record.reused:
            parts.append(f"{name} reused")
        elif record.setup is not None:
            parts.append(f"{name} cache {record.setup.cache}")
        elif failed[name]:
            parts.append(f"{name} setup failed")
        else:  # the stage stopped before its setup (e.g. the repository could not be cloned)
            parts.append(f"{name} no setup")
    return (f"{commands} command(s): " if commands else "") + ", ".join(parts)


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many targets are in each status (only statuses that occur)."""
    return {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()}


UNFINISHED = (
    TargetStatus.PENDING.value, TargetStatus.AWAITING_REVIEW.value, TargetStatus.PREVIEWED.value,
)  # fmt: skip
# What `run --strict` calls a failed target: its change, setup, a verifier, the judge or the PR
# failed. Waiting (pending, awaiting review, over budget) and ended targets are not failures.
FAILED = (
    TargetStatus.SETUP_FAILED.value, TargetStatus.CHANGE_FAILED.value,
    TargetStatus.VERIFICATION_FAILED.value, TargetStatus.JUDGE_VETOED.value,
    TargetStatus.PR_FAILED.value,
)  # fmt: skip


def failed_targets(frame: pd.DataFrame, targets: list[str] | None = None) -> dict[str, str]:
    """target -> status of the targets that failed (of `targets`, default: all of them)."""
    rows = frame[frame["status"].isin(FAILED)]
    if targets is not None:
        rows = rows[rows["target"].isin(targets)]
    return dict(zip(rows["target"], rows["status"], strict=True))


def is_finished(frame: pd.DataFrame) -> bool:
    """True when every target got as far as the platform takes it on its own (nothing pending,
    nothing awaiting review)."""
    return bool(len(frame)) and not frame["status"].isin(UNFINISHED).any()


def finished_message(name: str, frame: pd.DataFrame) -> str:
    """The notification that a campaign finished: counts per status and the cost."""
    counts = ", ".join(f"{k}: {v}" for k, v in status_counts(frame).items())
    total = float(frame["cost_usd"].sum())
    return f"*{name}* finished: {len(frame)} targets ({counts}); total cost ${total:.4f}"


def report_markdown(frame: pd.DataFrame) -> str:
    """The report as a markdown table followed by totals."""
    shown = frame[["target", "status", "files_changed", "failed_verifiers", "pr_url", "cost_usd"]]
    table = shown.fillna("").to_markdown(index=False) if len(frame) else "_no targets_"
    counts = ", ".join(f"{k}: {v}" for k, v in status_counts(frame).items())
    total = float(frame["cost_usd"].sum()) if len(frame) else 0.0
    return f"{table}\n\n**Targets:** {len(frame)} ({counts})  \n**Total cost:** ${total:.4f}\n"


def burndown(
    instance: DagsterInstance, spec: CampaignSpec, until: date | None = None
) -> pd.DataFrame:
    """Per day (UTC), how many of the campaign's targets had their PR open, merged or closed
    at the end of that day, from the first PR opened until `until` (default: today).

    Openings come from the `pull_request` records, later states from those records and from
    the observations of the PRs on the forge (status sensor, bulk actions); a draft counts as
    open. Targets no longer in the campaign are left out.
    """
    current = {t.key for t in spec.targets}
    events = [e for e in history.pr_timeline(instance, spec) if e[0] in current]
    if not events:
        return pd.DataFrame(columns=BURNDOWN_COLUMNS)
    first = datetime.fromtimestamp(events[0][1], UTC).date()
    last = datetime.fromtimestamp(events[-1][1], UTC).date()
    end = max(until or datetime.now(UTC).date(), last)
    states: dict[str, str] = {}
    rows, i, day = [], 0, first
    while day <= end:
        boundary = datetime.combine(day + timedelta(days=1), time.min, UTC).timestamp()
        while i < len(events) and events[i][1] < boundary:
            target, _, _, state = events[i]
            states[target] = "open" if state == "draft" else state
            i += 1
        counts = Counter(states.values())
        rows.append({"day": day, **{k: counts.get(k, 0) for k in BURNDOWN_COLUMNS[1:]}})
        day += timedelta(days=1)
    return pd.DataFrame(rows, columns=BURNDOWN_COLUMNS)


def burndown_markdown(frame: pd.DataFrame) -> str:
    """The burndown as a markdown table."""
    if not len(frame):
        return "_no pull requests yet_"
    shown = frame.assign(day=frame["day"].astype(str))
    return shown.to_markdown(index=False)


def burndown_chart(frame: pd.DataFrame, path: Path | str, title: str = "") -> Path:
    """Draw the burndown (stacked bars per day: open, merged, closed) as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)  # the Agg backend, without pyplot's global state
    axes = figure.subplots()
    days = [pd.Timestamp(d).to_pydatetime() for d in frame["day"]]
    bottom = [0] * len(frame)
    colors = {"open": "#f0ad4e", "merged": "#5cb85c", "closed": "#999999"}
    for column in BURNDOWN_COLUMNS[1:]:
        values = [int(v) for v in frame[column]] if len(frame) else []
        axes.bar(days, values, bottom=bottom, width=0.8, label=column, color=colors[column])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_ylabel("targets")
    axes.set_title(title or "Pull requests per day")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.legend(loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
