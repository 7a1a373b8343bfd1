"""`orchestrator prs`: merge, close, comment on or publish a campaign's pull requests in bulk.

Every command previews first: without `--yes` it prints what it would do to which PR (and why
it leaves the others alone) and changes nothing. With `--yes` it acts on each PR in turn; one
PR's failure is reported and the others go on (exit 1 when any failed). Every action taken is
recorded in Dagster's event log as an `AssetObservation` on the campaign's `pull_request` asset
for that target, with the action, the actor and the state it left the PR in, so the report and
the PR status sensor see the result at once.

Dagster is imported only when a command runs, so `orchestrator --help` stays quick.
"""

from __future__ import annotations

import getpass
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import Settings
from resources.forges.base import MERGE_METHODS, Forge, PullRequestDraft, PullRequestStatus

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from orchestrator_assets.spec.campaign import CampaignSpec
    from orchestrator_assets.spec.catalog import Campaign

VERBS = {"merge": "merged", "close": "closed", "comment": "commented on", "publish": "published"}
STATUS_READERS = 8  # PR statuses read at once for the preview


def current_actor() -> str:
    """Who acts: `$ORCHESTRATOR_ACTOR`, else the OS user."""
    try:
        return os.environ.get("ORCHESTRATOR_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        return f"uid {os.getuid()}"


def forge_for(campaign: Campaign) -> Forge:
    """The forge the campaign's pull requests live on (the one place that chooses it)."""
    from resources.build import build_forge

    return build_forge(Settings(), campaign.spec)


@dataclass
class PlannedAction:
    """What a bulk command does (or would do) to one target's pull request, and how it went."""

    target: str
    repo: str
    number: int | None
    url: str | None
    state: str | None = None
    checks: str | None = None
    review: str | None = None
    action: str | None = None  # the verb, when the PR is acted on
    skipped: str | None = None  # why not, otherwise
    outcome: str | None = None  # after --yes: what happened
    failed: bool = False
    status: PullRequestStatus | None = None

    def row(self) -> dict:
        """The plain fields, for JSON output."""
        data = asdict(self)
        data.pop("status")
        data.pop("repo")
        return data


def plan_actions(
    verb: str,
    spec: CampaignSpec,
    instance: DagsterInstance,
    forge: Forge,
    targets: tuple[str, ...] = (),
    only_green: bool = False,
) -> list[PlannedAction]:
    """What `verb` would do to each selected target's pull request, from its live status."""
    from orchestrator_assets.assets import history

    keys = [t.key for t in spec.targets]
    unknown = [k for k in targets if k not in keys]
    if unknown:
        raise OrchestratorError(
            f"campaign {spec.name!r} has no target(s) {', '.join(unknown)}; known: "
            f"{', '.join(keys)}"
        )
    selected = list(dict.fromkeys(targets)) if targets else keys
    records = history.latest_numbered_pull_requests(instance, spec, selected)
    plans: list[PlannedAction] = []
    for key in selected:
        record = records.get(key)
        target = spec.target(key)
        assert target is not None
        if record is None or record.number is None:
            if targets:  # asked for by name: say why nothing happens
                plans.append(PlannedAction(key, target.repo, None, None, skipped="no pull request"))
            continue
        plans.append(PlannedAction(key, target.repo, record.number, record.url))

    def read(plan: PlannedAction) -> None:
        if plan.number is None:
            return
        try:
            plan.status = forge.pull_request_status(plan.repo, plan.number)
        except Exception as exc:
            plan.skipped = f"cannot read its status: {exc}"
            plan.failed = True
            return
        plan.state = plan.status.state
        plan.checks = plan.status.checks
        plan.review = plan.status.review
        why = _why_not(verb, plan.status, only_green)
        if why:
            plan.skipped = why
        else:
            plan.action = verb

    with ThreadPoolExecutor(max_workers=STATUS_READERS) as pool:
        list(pool.map(read, plans))
    return plans


def _why_not(verb: str, status: PullRequestStatus, only_green: bool) -> str | None:
    """Why `verb` leaves a PR alone (None: it acts on it)."""
    if status.state in ("merged", "closed"):
        return f"not open: {status.state}"
    if verb == "publish" and status.state == "open":
        return "already ready for review"
    if verb == "merge" and status.state == "draft":
        return "a draft: publish it first"
    if only_green and status.checks != "success":
        if status.checks == "none":
            return "checks not green: none reported (--only-green needs success)"
        return f"checks not green: {status.checks}"
    if verb == "merge" and status.mergeable is False:
        return f"not mergeable ({status.mergeable_state or 'conflicts'})"
    return None


def act(
    verb: str,
    plan: PlannedAction,
    spec: CampaignSpec,
    instance: DagsterInstance,
    forge: Forge,
    message: str | None,
    actor: str,
    reason: str,
    method: str = "merge",
) -> None:
    """Do `verb` to one planned PR, record it in the event log and note the outcome on `plan`
    (`method`: how a merge is made: merge, squash or rebase)."""
    assert plan.number is not None and plan.status is not None
    result: dict = {}
    try:
        if verb == "merge":
            result["method"] = method
            pr = forge.merge_pull_request(plan.repo, plan.number, method=method)
            plan.outcome = pr.state
        elif verb == "close":
            pr = forge.close_pull_request(plan.repo, plan.number, message)
            plan.outcome = pr.state
        elif verb == "comment":
            assert message is not None
            result["comment_url"] = forge.comment(plan.repo, plan.number, message)
            plan.outcome = f"commented: {result['comment_url']}"
        elif verb == "publish":
            plan.outcome = _publish(plan, spec, forge)
        else:  # pragma: no cover - click restricts the verbs
            raise OrchestratorError(f"unknown action {verb!r}")
    except Exception as exc:
        plan.failed = True
        plan.outcome = f"failed: {exc}"
        result["error"] = str(exc)[:2000]
    _record(plan, spec, instance, forge, verb, actor, reason, message, result)


def _publish(plan: PlannedAction, spec: CampaignSpec, forge: Forge) -> str:
    """Mark a draft PR ready for review (its title, body and labels as they are)."""
    assert plan.number is not None
    target = spec.target(plan.target)  # a workspace has a branch of its own
    branch = spec.branch_for(target) if target else spec.branch_name
    pr = forge.find_pull_request(plan.repo, branch)
    if pr is None or pr.number != plan.number:
        raise OrchestratorError(
            f"pull request #{plan.number} is no longer the one of branch {branch}"
        )
    ready = PullRequestDraft(
        head=pr.head, base=pr.base, title=pr.title, body=pr.body, labels=pr.labels, draft=False
    )
    updated = forge.update_pull_request(plan.repo, plan.number, ready)
    if updated.draft:
        raise OrchestratorError("the forge left it a draft")
    return "ready for review"


def _record(
    plan: PlannedAction,
    spec: CampaignSpec,
    instance: DagsterInstance,
    forge: Forge,
    verb: str,
    actor: str,
    reason: str,
    message: str | None,
    result: dict,
) -> None:
    """Log the action as an observation of the PR, with the state it is in now."""
    import dagster as dg

    from orchestrator_assets.assets import history

    assert plan.number is not None and plan.status is not None
    status = plan.status
    try:
        status = forge.pull_request_status(plan.repo, plan.number)
    except Exception:
        if not plan.failed and verb in ("merge", "close"):
            status = status.model_copy(update={"state": plan.outcome, "mergeable": None})
        elif not plan.failed and verb == "publish":
            status = status.model_copy(update={"state": "open"})
    plan.state = status.state
    metadata = {
        **history.pr_status_metadata(status),
        "action": verb,
        "actor": actor,
        "reason": reason,
        "outcome": "failed" if plan.failed else "done",
        **result,
    }
    if message:
        metadata["message"] = message
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=history.asset_key(spec, "pull_request"),
            partition=plan.target,
            metadata=metadata,
        )
    )


def _console() -> Console:
    """Standard output (made per command, so it takes the terminal's width of the moment)."""
    return make_console()


def _print_plans(plans: list[PlannedAction], verb: str, done: bool) -> None:
    table = Table()
    for column in ("target", "PR", "state", "checks", "review"):
        table.add_column(column, no_wrap=True)
    table.add_column("outcome" if done else "action", overflow="fold")
    for p in plans:
        if done and p.action:
            what = f"[red]{p.outcome}[/]" if p.failed else f"[green]{p.outcome}[/]"
        elif p.action:
            what = f"[green]would {verb}[/]"
        else:
            what = f"[{'red' if p.failed else 'dim'}]skip: {p.skipped}[/]"
        table.add_row(
            p.target, f"#{p.number}" if p.number else "", p.state or "", p.checks or "",
            p.review or "", what,
        )  # fmt: skip
    _console().print(table)


def run_bulk(
    verb: str,
    campaign_name: str,
    targets: tuple[str, ...],
    only_green: bool,
    yes: bool,
    message: str | None,
    output: str,
    method: str = "merge",
) -> None:
    """Preview or do `verb` over a campaign's pull requests (the body of every `prs` command);
    `method` is how `merge` merges (merge, squash or rebase)."""
    from orchestrator_assets.spec.catalog import load_catalog

    if verb == "comment" and not (message or "").strip():
        raise OrchestratorError("prs comment needs --message TEXT")
    instance = open_instance()
    campaign = load_catalog(Settings(), instance).get(campaign_name)
    spec = campaign.spec
    forge = forge_for(campaign)
    plans = plan_actions(verb, spec, instance, forge, targets, only_green)
    todo = [p for p in plans if p.action]
    if yes:
        actor = current_actor()
        reason = message or f"orchestrator prs {verb}" + (" --only-green" if only_green else "")
        for plan in todo:
            act(verb, plan, spec, instance, forge, message, actor, reason, method)
    if output == "json":
        click.echo(json.dumps([p.row() for p in plans], indent=2))
    else:
        _print_plans(plans, verb, done=yes)
        unread = sum(1 for p in plans if p.failed and not p.action)
        if not yes:
            _console().print(
                f"{len(todo)} of {len(plans)} pull request(s) would be {VERBS[verb]}"
                + (f"; {unread} status(es) could not be read" if unread else "")
                + (". Nothing changed: add --yes to act." if todo else ". Nothing to do.")
            )
        else:
            failed = sum(1 for p in todo if p.failed)
            _console().print(
                f"{len(todo) - failed} of {len(todo)} pull request(s) {VERBS[verb]}"
                + (f", {failed} failed" if failed else "")
                + (f"; {unread} status(es) could not be read" if unread else "")
            )
    if yes and any(p.failed for p in plans):
        raise SystemExit(1)


TARGETS = click.option(
    "--target", "targets", multiple=True, help="Only this target (slug); repeatable."
)
ONLY_GREEN = click.option(
    "--only-green", is_flag=True, help="Only PRs whose checks are `success` (none is not green)."
)
YES = click.option("--yes", is_flag=True, help="Act; without it only a preview is printed.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def prs() -> None:
    """Act on a campaign's pull requests in bulk: merge, close, comment, publish.

    Each command previews what it would do and changes nothing unless --yes is given.
    """


@prs.command()
@click.argument("campaign")
@TARGETS
@ONLY_GREEN
@YES
@click.option(
    "--method",
    type=click.Choice(MERGE_METHODS),
    default="merge",
    show_default=True,
    help="merge: a merge commit; squash: one commit of the PR's changes; rebase: its commits "
    "replayed onto the base.",
)
@OUTPUT
def merge(campaign: str, targets, only_green: bool, yes: bool, method: str, output: str) -> None:
    """Merge the campaign's open (non-draft, mergeable) pull requests."""
    run_bulk("merge", campaign, targets, only_green, yes, None, output, method)


@prs.command()
@click.argument("campaign")
@TARGETS
@ONLY_GREEN
@YES
@click.option("--message", help="A comment saying why, added as the PR is closed.")
@OUTPUT
def close(campaign: str, targets, only_green: bool, yes: bool, message, output: str) -> None:
    """Close the campaign's open pull requests without merging."""
    run_bulk("close", campaign, targets, only_green, yes, message, output)


@prs.command()
@click.argument("campaign")
@TARGETS
@ONLY_GREEN
@YES
@click.option("--message", required=True, help="The comment to add.")
@OUTPUT
def comment(campaign: str, targets, only_green: bool, yes: bool, message, output: str) -> None:
    """Comment on the campaign's open pull requests."""
    run_bulk("comment", campaign, targets, only_green, yes, message, output)


@prs.command()
@click.argument("campaign")
@TARGETS
@ONLY_GREEN
@YES
@OUTPUT
def publish(campaign: str, targets, only_green: bool, yes: bool, output: str) -> None:
    """Mark the campaign's draft pull requests ready for review."""
    run_bulk("publish", campaign, targets, only_green, yes, None, output)
