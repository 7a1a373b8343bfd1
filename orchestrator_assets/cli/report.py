"""`orchestrator report`, `logs` and `list`: a campaign's targets, one target's output and agent
transcript, and all campaigns with their status counts."""

from __future__ import annotations

import json

import click
from rich.table import Table

from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance
from orchestrator_assets.reports.transcript import print_transcript
from orchestrator_assets.spec.settings import Settings

console = make_console()
errors = make_console(stderr=True)

STATUS_STYLE = {
    "pr_open": "green", "merged": "bold green", "no_change": "dim", "pending": "yellow",
    "awaiting_review": "cyan", "change_failed": "red", "verification_failed": "red",
    "pr_failed": "red", "rejected": "magenta", "closed": "magenta", "skipped": "dim",
    "over_budget": "yellow", "previewed": "cyan",
}  # fmt: skip


def _text(value: object) -> str:
    """A report cell as text: empty for missing values (None or NaN)."""
    import pandas as pd

    return "" if value is None or pd.isna(value) else str(value)


def print_report(frame, output: str) -> None:
    """Print a campaign report: a table with each target's status, PR and cost, or JSON."""
    from orchestrator_assets.reports.report import status_counts

    if output == "json":
        records = json.loads(frame.to_json(orient="records"))
        click.echo(json.dumps(records, indent=2))
        return
    table = Table(show_lines=False)
    # The host column only for campaigns on named forges (the forges file): one host otherwise.
    hosts = "forge" in frame and any(f != "default" for f in frame["forge"])
    for column in ("target", "status", "files", "PR", "cost $", *(["host"] if hosts else [])):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in frame.itertuples():
        style = STATUS_STYLE.get(row.status, "")
        pr = f"#{int(row.pr_number)}" if _text(row.pr_number) else ""
        host = [f"{row.forge} ({_text(row.host) or '?'})"] if hosts else []
        table.add_row(
            row.target, f"[{style}]{row.status}[/]" if style else row.status,
            str(row.files_changed), pr, f"{row.cost_usd:.4f}", *host, _text(row.reason)[:300],
        )  # fmt: skip
    console.print(table)
    for row in frame.itertuples():
        if _text(row.pr_url):
            console.print(f"  {row.target}: {row.pr_url}", soft_wrap=True)
    counts = ", ".join(f"{k}: {v}" for k, v in status_counts(frame).items())
    console.print(f"{len(frame)} targets ({counts}); total cost ${frame['cost_usd'].sum():.4f}")
    if frame.attrs.get("rollout"):  # rollout waves (stages/rollout.py)
        console.print(f"rollout: {frame.attrs['rollout']}", soft_wrap=True)


@click.command()
@click.argument("campaign")
@OUTPUT
def report(campaign: str, output: str) -> None:
    """Print a campaign's report: one row per target with status, PR and cost.

    CAMPAIGN is a campaign of the campaigns folder, or one run before with `run --file`."""
    from orchestrator_assets.reports.report import build_report
    from orchestrator_assets.spec.catalog import load_catalog

    instance = open_instance()
    loaded = load_catalog(Settings(), instance).get(campaign)
    print_report(build_report(instance, loaded.spec), output)


@click.command()
@click.argument("campaign")
@click.argument("target")
@click.option("--agent", "agent", is_flag=True, help="Print the agent's transcript as well.")
def logs(campaign: str, target: str, agent: bool) -> None:
    """Print a target's verifier output and, with --agent, the agent's transcript."""
    from orchestrator_assets.assets import history
    from orchestrator_assets.spec.catalog import load_catalog

    instance = open_instance()
    spec = load_catalog(Settings(), instance).get(campaign).spec
    spec.require_target(target)
    change = history.latest_changes(instance, spec, [target]).get(target)
    verification = history.latest_verifications(instance, spec, [target]).get(target)
    if change is None:
        console.print(f"{target}: not run yet")
        return
    console.print(
        f"[bold]change[/] {change.outcome}" + (f": {change.reason}" if change.reason else "")
    )
    if change.output_tail and not change.agent:
        console.print(change.output_tail.rstrip(), markup=False)
    for result in verification.results if verification else []:
        mark = "[green]passed[/]" if result.passed else "[red]failed[/]"
        console.print(f"[bold]verifier {result.name}[/] {mark} (exit {result.exit_code}, "
                      f"{result.duration_s:.1f}s): {result.command}")  # fmt: skip
        console.print(result.output_tail.rstrip() or "(no output)", markup=False)
    if agent:
        print_transcript(console, change)


@click.command(name="list")
@OUTPUT
def list_campaigns(output: str) -> None:
    """List the campaigns with how many targets are in each status: those of the campaigns
    folder and those run with `run --file` from elsewhere (named by their file)."""
    from orchestrator_assets.reports.report import build_report, status_counts
    from orchestrator_assets.spec.catalog import load_catalog

    instance = open_instance()
    catalog = load_catalog(Settings(), instance)
    rows = []
    for name, loaded in sorted(catalog.campaigns.items()):
        frame = build_report(instance, loaded.spec)
        rows.append({"campaign": name, "file": str(loaded.file), "targets": len(frame),
                     "statuses": status_counts(frame),
                     "cost_usd": round(float(frame["cost_usd"].sum()), 6)})  # fmt: skip
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        table = Table()
        for column in ("campaign", "targets", "statuses", "cost $", "file"):
            table.add_column(column, overflow="fold")
        for row in rows:
            statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items())
            table.add_row(
                row["campaign"],
                str(row["targets"]),
                statuses,
                f"{row['cost_usd']:.4f}",
                row["file"],
            )
        console.print(table)
    for error in catalog.errors:
        errors.print(
            f"[yellow]skipped invalid campaign file[/] {error.file} "
            f"(run `orchestrator validate {error.file}`)"
        )
    for gone in catalog.gone:
        errors.print(f"[yellow]not listed:[/] campaign file {gone} was run before and is gone")
