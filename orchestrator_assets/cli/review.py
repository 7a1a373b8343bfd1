"""`orchestrator approve|reject|steer|diff|cancel`: the human side of a campaign.

A decision is recorded in Dagster's event log at once (with who, when and why) and applied by
the next run of the target: the review sensor requests one when the daemon runs, and without a
daemon `orchestrator run` on the campaign applies it the same way.

Dagster is imported only when a command runs, so `orchestrator --help` stays quick.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.syntax import Syntax

from orchestrator_assets.cli.options import make_console, open_instance
from orchestrator_assets.cli.prs import current_actor
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from orchestrator_assets.spec.campaign import CampaignSpec

PID_TAG = "orchestrator/pid"  # on a run the CLI executes in its own process
HOST_TAG = "orchestrator/host"
CANCEL_WAIT_S = 30.0  # how long a run's process gets to stop after SIGTERM


def _console() -> Console:
    return make_console()


def _spec(campaign: str) -> CampaignSpec:
    from orchestrator_assets.spec.catalog import load_catalog

    return load_catalog(Settings(), open_instance()).get(campaign).spec


def _files(value: str | None) -> list[str]:
    return [f.strip() for f in (value or "").split(",") if f.strip()]


def _decide(campaign: str, target: str, decision: str, **fields) -> None:
    from orchestrator_assets.stages.records import ReviewDecision
    from orchestrator_assets.stages.review import prepare_decision, record_decision

    spec = _spec(campaign)
    instance = open_instance()
    made = prepare_decision(
        instance,
        spec,
        ReviewDecision(decision=decision, target=target, actor=current_actor(), **fields),  # type: ignore[arg-type]
    )
    record_decision(instance, spec, made)
    console = _console()
    console.print(f"recorded: {made.describe()}")
    console.print(
        f"applied by the next run of the target: the review sensor starts one when the daemon "
        f"runs, or run `orchestrator run --campaign {spec.name} --target {target}`"
    )


CAMPAIGN = click.argument("campaign")
TARGET = click.argument("target")
REASON = click.option("--reason", help="Why (kept in the event log with who and when).")


@click.command()
@CAMPAIGN
@TARGET
@click.option(
    "--files",
    help="Comma-separated: approve only these files; the PR has just their changes (verified "
    "again first).",
)
@REASON
def approve(campaign: str, target: str, files: str | None, reason: str | None) -> None:
    """Approve a target's change that awaits review: its pull request opens."""
    _decide(campaign, target, "approve", files=_files(files), reason=reason)


@click.command()
@CAMPAIGN
@TARGET
@REASON
def reject(campaign: str, target: str, reason: str | None) -> None:
    """Reject a target's change that awaits review: the target is closed with the reason."""
    _decide(campaign, target, "reject", reason=reason)


@click.command()
@CAMPAIGN
@TARGET
@click.option("--prompt", required=True, help="What the agent should do next.")
@click.option("--files", help="Comma-separated: the agent works on these files only.")
@REASON
def steer(campaign: str, target: str, prompt: str, files: str | None, reason: str | None) -> None:
    """Send an agentic change back to its agent: the agent's session resumes with the prompt."""
    _decide(campaign, target, "steer", prompt=prompt, files=_files(files), reason=reason)


@click.command()
@CAMPAIGN
@click.argument("target", required=False)
@click.option("--iteration", type=int, help="The diff of this iteration (default: the change).")
@click.option("--stat", is_flag=True, help="Only the files and line counts.")
def diff(campaign: str, target: str | None, iteration: int | None, stat: bool) -> None:
    """Print a target's change as a diff: coloured in a terminal, plain when piped.

    Without TARGET: every previewed change (what `orchestrator publish` would push), each under
    a header naming its target, then how many targets stand at each pull request status."""
    from orchestrator_assets.assets import history

    spec = _spec(campaign)
    if target is None:
        if iteration is not None:
            raise OrchestratorError("--iteration needs a TARGET")
        _previewed_diffs(spec, stat)
        return
    spec.require_target(target)
    change = history.latest_changes(open_instance(), spec, [target]).get(target)
    if change is None or not change.head_sha:
        reason = f" ({change.outcome}: {change.reason or ''})" if change else ""
        raise OrchestratorError(f"{target}: no change to show{reason}")
    if iteration is not None:
        found = next((i for i in change.iterations if i.number == iteration), None)
        if found is None:
            numbers = ", ".join(str(i.number) for i in change.iterations) or "none recorded"
            raise OrchestratorError(f"{target}: no iteration {iteration}; iterations: {numbers}")
        text = found.diff
    else:
        text = _full_diff(change) or change.diff
    if stat:
        click.echo(_stat(text))
        return
    console = _console()
    if console.is_terminal:
        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _previewed_diffs(spec, stat: bool) -> None:
    """Print the diff of every target whose change is previewed and not yet published, and a
    count of the campaign's targets per pull request status."""
    from collections import Counter

    from orchestrator_assets.assets import history

    instance = open_instance()
    prs = history.latest_pull_requests(instance, spec)
    changes = history.latest_changes(instance, spec)
    previewed = [
        key
        for key, pr in prs.items()
        if pr.outcome == "previewed"
        and key in changes
        and changes[key].head_sha
        and changes[key].head_sha == pr.head_sha
    ]
    console = _console()
    for key in sorted(previewed):
        change = changes[key]
        text = _full_diff(change) or change.diff
        click.echo(f"=== {key} {(change.head_sha or '')[:8]} (would be published)")
        if stat:
            click.echo(_stat(text))
        elif console.is_terminal:
            console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
        else:
            click.echo(text, nl=not text.endswith("\n"))
    counts = Counter(pr.outcome for pr in prs.values())
    untouched = len(spec.targets) - len(prs)
    if untouched > 0:
        counts["no pull request stage yet"] = untouched
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    click.echo(f"{len(previewed)} previewed change(s) to publish; targets: {summary or 'none'}")


def _full_diff(change) -> str | None:
    """The whole diff from the local mirror of the repository, when it has both commits (the
    stored diff is cut at 20 kB)."""
    from resources.git import GitError, run_git
    from resources.repo_cache import RepoCache

    if not change.diff_truncated or not change.clone_url:
        return None
    mirror = RepoCache(Settings().cache_dir).path_for(change.clone_url)
    if not mirror.exists():
        return None
    try:
        return run_git(["diff", "--no-color", change.base_sha, change.head_sha], mirror)
    except GitError:
        return None


def _stat(text: str) -> str:
    """Files and +/- counts of a unified diff."""
    counts: dict[str, list[int]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("diff --git "):
            current = line.split(" b/", 1)[-1]
            counts[current] = [0, 0]
        elif current and line.startswith("+") and not line.startswith("+++"):
            counts[current][0] += 1
        elif current and line.startswith("-") and not line.startswith("---"):
            counts[current][1] += 1
    return "\n".join(f"{name} +{a} -{d}" for name, (a, d) in counts.items())


@click.command()
@CAMPAIGN
@click.argument("target", required=False)
@click.option(
    "--wait",
    "wait_s",
    default=CANCEL_WAIT_S,
    show_default=True,
    help="Seconds a run's process gets to stop before it is killed and marked cancelled.",
)
def cancel(campaign: str, target: str | None, wait_s: float) -> None:
    """Stop a campaign's running work (or one target's) and clean up its sandboxes.

    Queued runs are cancelled; a run in progress is asked to stop (SIGTERM to an `orchestrator
    run` process on this machine, or the run launcher's termination), and its sandboxes are
    removed. A run over several targets stops as a whole; what it finished stays recorded and
    the next run continues from there.
    """
    spec = _spec(campaign)
    if target is not None:
        spec.require_target(target)
    instance = open_instance()
    console = _console()
    runs = active_runs(instance, spec, target)
    if not runs:
        console.print(f"nothing running for {spec.name}" + (f" / {target}" if target else ""))
    for run in runs:
        console.print(f"run {run.run_id[:8]} ({_covers(run)}): {stop_run(instance, run, wait_s)}")
    removed = sweep_runs(instance, {r.run_id for r in runs})
    console.print(f"removed {removed} sandbox(es) of the cancelled run(s)")
    from orchestrator_assets.reports.audit import cancel_observation

    instance.report_runless_asset_event(
        cancel_observation(spec, current_actor(), target, [r.run_id for r in runs])
    )


def active_runs(instance: DagsterInstance, spec: CampaignSpec, target: str | None) -> list:
    """The campaign's runs that are queued or in progress (those covering `target`, if given)."""
    import dagster as dg

    from orchestrator_assets.assets.partitions import RANGE_END, RANGE_START

    statuses = [
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]  # fmt: skip
    runs = instance.get_runs(dg.RunsFilter(tags={"campaign": spec.name}, statuses=statuses))
    if target is None:
        return list(runs)
    order = [t.key for t in spec.targets]
    chosen = []
    for run in runs:
        tags = run.tags
        if target in (tags.get("target"), tags.get("dagster/partition")):
            chosen.append(run)
        elif RANGE_START in tags and RANGE_END in tags and target in order:
            start, end = tags[RANGE_START], tags[RANGE_END]
            inside = start in order and end in order
            if inside and order.index(start) <= order.index(target) <= order.index(end):
                chosen.append(run)
    return chosen


def _covers(run) -> str:
    tags = run.tags
    return tags.get("target") or tags.get("targets") or tags.get("dagster/partition") or "all"


def stop_run(instance: DagsterInstance, run, wait_s: float) -> str:
    """Stop one run; what was done, in words."""
    import dagster as dg

    from orchestrator_assets.assets.sweep import process_alive

    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if pid and pid.isdigit() and host == socket.gethostname():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and process_alive(int(pid)):
            time.sleep(0.2)
        if process_alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
        current = instance.get_run_by_id(run.run_id)
        if current is not None and not current.is_finished:
            instance.report_run_canceled(current, message="cancelled by `orchestrator cancel`")
        return f"process {pid} stopped; run cancelled"
    if run.status == dg.DagsterRunStatus.QUEUED or run.status == dg.DagsterRunStatus.NOT_STARTED:
        instance.report_run_canceled(run, message="cancelled by `orchestrator cancel`")
        return "cancelled before it started"
    if instance.run_launcher.terminate(run.run_id):
        return "termination requested from the run launcher"
    instance.report_run_canceled(run, message="cancelled by `orchestrator cancel`")
    return "marked cancelled (its launcher could not terminate it)"


def sweep_runs(instance: DagsterInstance, run_ids: set[str]) -> int:
    """Remove the sandboxes (workspaces, containers, pods) the given runs left behind."""
    from orchestrator_assets.assets.sweep import find_leftovers

    if not run_ids:
        return 0
    found, _ = find_leftovers(Settings().workspaces_dir, instance)
    removed = 0
    for leftover in found:
        if leftover.run_id in run_ids and leftover.orphan:
            leftover.remove()
            removed += 1
    return removed


@click.command()
@click.argument("campaign", required=False)
@click.option("--since", "since_h", type=float, help="Only the last N hours.")
@click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="A table for people, or JSON lines for scripts.",
)  # fmt: skip
def audit(campaign: str | None, since_h: float | None, output: str) -> None:
    """Who did what, when and why: review decisions, bulk PR actions, cancels, and the
    platform's pushes and PR writes (all campaigns, or one)."""
    import json
    from datetime import datetime

    from rich.table import Table

    from orchestrator_assets.reports import audit as audit_log
    from orchestrator_assets.spec.catalog import load_catalog

    instance = open_instance()
    catalog = load_catalog(Settings(), instance)
    specs = (
        [catalog.get(campaign).spec] if campaign else [c.spec for c in catalog.campaigns.values()]
    )
    entries = sorted(
        (e for spec in specs for e in audit_log.audit_entries(instance, spec)), key=lambda e: e.at
    )
    entries = audit_log.since(entries, since_h * 3600 if since_h is not None else None)
    if output == "json":
        for entry in entries:
            click.echo(json.dumps(entry.model_dump()))
        return
    table = Table(show_lines=False)
    for column in ("when", "campaign", "target", "who", "what"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail / why", overflow="fold")
    for e in entries:
        when = datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S")
        why = " · ".join(x for x in (e.detail, e.reason or "") if x)
        table.add_row(when, e.campaign, e.target or "", e.actor, e.action, why)
    _console().print(table)
    _console().print(f"{len(entries)} audited action(s)")
