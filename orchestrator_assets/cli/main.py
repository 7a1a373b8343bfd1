"""The `orchestrator` command line: validate, run and report on campaigns."""

from __future__ import annotations

import json
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from orchestrator_assets.cli.metrics import metrics
from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance
from orchestrator_assets.cli.prs import prs
from orchestrator_assets.cli.review import approve, audit, cancel, diff, reject, steer
from orchestrator_assets.cli.sandboxes import sandboxes
from orchestrator_assets.spec.errors import OrchestratorError, SpecError
from orchestrator_assets.spec.settings import Settings

if TYPE_CHECKING:
    from orchestrator_assets.spec.catalog import Campaign, Overrides

console = make_console()
errors = make_console(stderr=True)

STATUS_STYLE = {
    "pr_open": "green", "merged": "bold green", "no_change": "dim", "pending": "yellow",
    "awaiting_review": "cyan", "change_failed": "red", "verification_failed": "red",
    "pr_failed": "red", "rejected": "magenta", "closed": "magenta", "skipped": "dim",
    "over_budget": "yellow",
}  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Apply one change across many repositories, verified, reviewed and delivered as PRs.

    State lives in the Dagster instance in DAGSTER_HOME (default: .dagster_home in the project),
    so everything done here shows in the UI (`make dev`).
    """
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check campaign files and report every problem with file, field and reason."""
    from orchestrator_assets.spec.catalog import load_one

    settings = Settings()
    bad = 0
    for path in files:
        try:
            campaign = load_one(path, settings)
        except SpecError as exc:
            bad += 1
            for problem in exc.problems:
                errors.print(f"[red]✗[/] {problem.render(exc.file)}", soft_wrap=True)
            continue
        spec = campaign.spec
        console.print(
            f"[green]✓[/] {path}: campaign {spec.name!r}, {len(spec.targets)} target(s), "
            f"{spec.transformation.kind} transformation, {len(spec.verifiers)} verifier(s)"
        )
    if bad:
        raise SystemExit(1)


def _name_from(text: str) -> str:
    """A campaign name from the first words of a prompt or command."""
    import re

    words = re.findall(r"[a-z0-9]+", text.lower())[:5]
    return (
        ("-".join(words) or "adhoc")[:40].strip("-")
        if words and words[0][0].isalpha()
        else ("adhoc-" + "-".join(words))[:40].strip("-")
    )


def _adhoc_transformation(command, prompt, model, image, args, env) -> dict:
    """The transformation of an ad-hoc campaign from the command line."""
    import shlex

    if prompt:
        return {"kind": "agentic", "prompt": prompt, **({"model": model} if model else {})}
    pairs = {}
    for value in env:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise OrchestratorError(f"--env {value!r}: expected KEY=VALUE")
        pairs[key.strip()] = val
    try:
        split = shlex.split(args) if args else []
    except ValueError as exc:
        raise OrchestratorError(f"--args {args!r}: cannot split: {exc}") from None
    return {
        "kind": "deterministic",
        **({"command": command} if command else {}),
        **({"image": image} if image else {}),
        **({"args": split} if split else {}),
        **({"env": pairs} if pairs else {}),
    }


def _adhoc_spec(
    name, repos, transformation, verifiers, base, description, review, profile, summary
):
    from orchestrator_assets.spec.campaign import parse_campaign

    parsed = []
    for value in verifiers:
        vname, sep, cmd = value.partition(":")
        if not sep or not vname.strip() or not cmd.strip():
            raise OrchestratorError(
                f"--verifier {value!r}: expected NAME:COMMAND, e.g. 'test:pytest -q'"
            )
        parsed.append({"name": vname.strip(), "command": cmd.strip()})
    data = {
        "name": name,
        "description": description or f"Ad-hoc campaign: {summary}",
        "targets": [{"repo": r, **({"base": base} if base else {})} for r in repos],
        "transformation": transformation,
        "verifiers": parsed,
        "review": {"policy": review},
        **({"profile": profile} if profile else {}),
    }
    return parse_campaign(data, file="(command line)", base_dir=Path.cwd())


@cli.command()
@click.option("--file", "file", type=click.Path(path_type=Path), help="Campaign file to run.")
@click.option(
    "--campaign",
    "campaign_name",
    help="Name of a campaign: in the campaigns folder, or one run before with --file.",
)
@click.option("--target", "targets", multiple=True, help="Only these targets (slugs); repeatable.")
@click.option("--name", help="Ad hoc: the campaign name (written to campaigns/NAME.yaml).")
@click.option(
    "--repo", "repos", multiple=True, help="Ad hoc: a repository URL or path; repeatable."
)
@click.option("--command", help="Ad hoc: the deterministic command to run in each workspace.")
@click.option(
    "--image",
    help="Ad hoc: a container image to run in each workspace (mounted at /workspace); "
    "with --command, the command replaces the image's entrypoint.",
)
@click.option(
    "--args", "image_args", help="Ad hoc: arguments, split like a shell would (no shell runs)."
)
@click.option("--env", "env", multiple=True, help="Ad hoc: KEY=VALUE for the change; repeatable.")
@click.option(
    "--profile",
    help="The sandbox profile (default: the campaign's, else the default profile). [override]",
)
@click.option("--prompt", help="Ad hoc: what the coding agent should change in each repository.")
@click.option(
    "--model", help="The model the coding agent uses (agentic transformations only). [override]"
)
@click.option("--verifier", "verifiers", multiple=True, help="Ad hoc: NAME:COMMAND; repeatable.")
@click.option(
    "--base",
    help="Base branch of every target (default: the campaign's, else each repository's default "
    "branch). [override]",
)
@click.option("--description", help="The campaign's description. [override]")
@click.option(
    "--review",
    type=click.Choice(["auto", "required"]),
    help="Whether a human approves each change before its PR (default: the campaign's, else "
    "auto). [override]",
)
@click.option("--force", is_flag=True, help="Ad hoc: overwrite a different campaigns/NAME.yaml.")
@click.option(
    "--no-cache",
    "no_cache",
    is_flag=True,
    help="Redo changes, setup and verification even when their inputs did not change.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="For CI: exit 1 when any target failed (setup, change, verifier, judge or PR).",
)
@OUTPUT
def run(
    file,
    campaign_name,
    targets,
    name,
    repos,
    command,
    image,
    image_args,
    env,
    profile,
    prompt,
    model,
    verifiers,
    base,
    description,
    review,
    force,
    no_cache,
    strict,
    output,
):
    """Run a campaign through Dagster: each target as far as it can go, then print the report.

    Either --file/--campaign, or the ad-hoc form: --repo (repeatable), --command and/or --image
    with --args and --env (a deterministic change) or --prompt (the coding agent), --verifier
    NAME:COMMAND (repeatable) and optionally --name (default: derived from the command, image
    or prompt). Re-running repeats nothing that is done.

    The options marked [override] also go with --file/--campaign: they replace the file's
    setting for this run (the file is not changed; the run's tags record them). --model with a
    deterministic transformation is an error.

    Exit status, the same whatever the other targets did: 0 when the campaign ran (every target
    got a result; a target's failure is its status in the report and the summary), 1 when a
    Dagster run failed (a platform error: targets may have no result) or, with --strict, when
    any target failed, 2 for a mistake in the command or the campaign file, 143 when stopped by
    SIGTERM.
    """
    from orchestrator_assets.assets.runner import run_campaign
    from orchestrator_assets.reports.report import failed_targets
    from orchestrator_assets.spec.campaign import dump_campaign
    from orchestrator_assets.spec.catalog import Overrides, load_catalog, load_one

    settings = Settings()
    adhoc = name or repos or command or image or prompt or verifiers
    if sum(bool(x) for x in (file, campaign_name, adhoc)) != 1:
        raise OrchestratorError(
            "give exactly one of --file, --campaign, or the ad-hoc --repo with --command or "
            "--prompt form"
        )
    overrides = Overrides(
        profile=profile, base=base, model=model, review=review, description=description
    )
    if file:
        campaign = load_one(file, settings, overrides)
    elif campaign_name:
        found = load_catalog(settings, open_instance()).get(campaign_name)
        campaign = load_one(found.file, settings, overrides) if overrides.given() else found
    else:
        if not repos:
            raise OrchestratorError("the ad-hoc form needs --repo (one or more)")
        if bool(command or image) == bool(prompt):
            raise OrchestratorError(
                "the ad-hoc form needs one of --command/--image or --prompt (not both)"
            )
        if (image_args or env) and prompt:
            raise OrchestratorError("--args and --env go with --command or --image, not --prompt")
        if image_args and not image:
            raise OrchestratorError("--args goes with --image (put a command's arguments in it)")
        transformation = _adhoc_transformation(command, prompt, model, image, image_args, env)
        summary = prompt or " ".join(filter(None, [image, command, image_args]))
        name = name or _name_from(summary)
        spec = _adhoc_spec(
            name, repos, transformation, verifiers, base, description, review or "auto", profile,
            summary,
        )  # fmt: skip
        path = settings.campaigns_dir / f"{spec.name}.yaml"
        text = dump_campaign(spec)
        if path.exists() and path.read_text() != text and not force:
            raise OrchestratorError(
                f"{path} already exists with a different campaign; pass --force to overwrite it "
                f"or use --file {path}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")
        campaign = load_one(path, settings)
    if campaign.spec.discover is not None:
        campaign = _rediscover(campaign, settings, overrides)
    instance = open_instance()

    def emit(stage: str, message: str) -> None:
        style = "red" if ("failed" in message or "FAILED" in message) else ""
        line = f"[dim]{stage:>13}[/] {message}"
        console.print(f"[{style}]{line}[/]" if style else line, soft_wrap=True)

    console.print(
        f"[bold]campaign {campaign.spec.name}[/] ({len(campaign.spec.targets)} targets) · "
        f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
    )
    from orchestrator_assets.reports import json_logs

    json_logs.set_context(campaign=campaign.spec.name)  # ORCHESTRATOR_LOG_FORMAT=json: JSON lines
    progress = json_logs.emit if json_logs.enabled() else emit
    outcome = run_campaign(campaign, instance, settings, list(targets) or None, progress, no_cache)
    if outcome.skipped_final:
        console.print(
            f"left alone (merged, closed or rejected): {', '.join(outcome.skipped_final)}"
        )
    _print_report(outcome.report, output)
    if outcome.interrupted:
        errors.print(
            "stopped (SIGTERM): what the targets in flight finished within the grace is recorded "
            "(the rest were cancelled) and their sandboxes removed; run the campaign again to "
            "continue where it stopped"
        )
        raise SystemExit(143)
    if outcome.failed_runs:
        errors.print(
            f"[red]{len(outcome.failed_runs)} run(s) failed: {', '.join(outcome.failed_runs)}[/]"
        )
        raise SystemExit(1)
    failed = failed_targets(outcome.report, list(targets) or None)
    if strict and failed:
        listed = ", ".join(f"{k} ({v})" for k, v in failed.items())
        errors.print(f"[red]--strict: {len(failed)} target(s) failed: {listed}[/]")
        raise SystemExit(1)


def _rediscover(campaign: Campaign, settings: Settings, overrides: Overrides) -> Campaign:
    """Ask the code host for the campaign's targets again; the campaign with them (and the
    command line's overrides)."""
    from orchestrator_assets.spec.catalog import load_one
    from orchestrator_assets.spec.discovery import refresh
    from resources.build import build_forge

    found = refresh(campaign.spec, settings, build_forge(settings))
    console.print(
        f"discovered {found.total} repositories"
        + (f"; new: {', '.join(found.added)}" if found.added else "")
        + (f"; gone: {', '.join(found.removed)}" if found.removed else "")
    )
    return load_one(campaign.file, settings, overrides)


def _text(value: object) -> str:
    """A report cell as text: empty for missing values (None or NaN)."""
    import pandas as pd

    return "" if value is None or pd.isna(value) else str(value)


def _print_report(frame, output: str) -> None:
    from orchestrator_assets.reports.report import status_counts

    if output == "json":
        records = json.loads(frame.to_json(orient="records"))
        click.echo(json.dumps(records, indent=2))
        return
    table = Table(show_lines=False)
    for column in ("target", "status", "files", "PR", "cost $"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in frame.itertuples():
        style = STATUS_STYLE.get(row.status, "")
        pr = f"#{int(row.pr_number)}" if _text(row.pr_number) else ""
        table.add_row(
            row.target, f"[{style}]{row.status}[/]" if style else row.status,
            str(row.files_changed), pr, f"{row.cost_usd:.4f}", _text(row.reason)[:300],
        )  # fmt: skip
    console.print(table)
    for row in frame.itertuples():
        if _text(row.pr_url):
            console.print(f"  {row.target}: {row.pr_url}", soft_wrap=True)
    counts = ", ".join(f"{k}: {v}" for k, v in status_counts(frame).items())
    console.print(f"{len(frame)} targets ({counts}); total cost ${frame['cost_usd'].sum():.4f}")


@cli.command()
@click.argument("campaign")
@OUTPUT
def report(campaign: str, output: str) -> None:
    """Print a campaign's report: one row per target with status, PR and cost.

    CAMPAIGN is a campaign of the campaigns folder, or one run before with `run --file`."""
    from orchestrator_assets.reports.report import build_report
    from orchestrator_assets.spec.catalog import load_catalog

    instance = open_instance()
    loaded = load_catalog(Settings(), instance).get(campaign)
    _print_report(build_report(instance, loaded.spec), output)


@cli.command()
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
        _print_transcript(change)


def _print_transcript(change) -> None:
    summary = change.agent
    if summary is None:
        console.print("no agent ran for this change")
        return
    console.print(f"[bold]agent session[/] {summary.session_id} · "
                  f"{len(change.iterations) or 1} iteration(s) · "
                  f"${change.total_cost_usd:.4f} in all · {summary.model or ''}")  # fmt: skip
    iterations = change.iterations or []
    if not iterations:
        _print_events(summary.transcript)
    for it in iterations:
        console.print(
            f"[bold]── iteration {it.number} ({it.kind})[/] · {it.files_changed} file(s) · "
            f"${it.cost_usd:.4f}" + (f" · {it.outcome}" if it.outcome else "")
        )
        if it.kind != "initial" and it.prompt:
            console.print("prompt: " + it.prompt.strip().splitlines()[0][:300], markup=False)
        if it.files:
            console.print("files: " + ", ".join(it.files), markup=False)
        _print_events(it.transcript)
        if it.verifier_calls or it.stop_blocks:
            console.print(f"agent's verifier tool calls: {it.verifier_calls} · stop gate "
                          f"blocks: {it.stop_blocks}", markup=False)  # fmt: skip
        if it.verification:
            console.print(f"platform verifiers: {it.verification}", markup=False)
        if it.verdict:
            console.print(f"judge: {it.verdict}", markup=False)
    for verdict in change.verdicts:
        reasons = "; ".join(f"{r.get('kind')}: {r.get('detail')}" for r in verdict.reasons)
        console.print(
            f"[bold]judge[/] {verdict.verdict} on {verdict.head_sha[:8]} · {verdict.model} · "
            f"${verdict.cost_usd:.4f}"
            + (f" · {reasons}" if reasons else "")
            + (f" · {verdict.error}" if verdict.error else "")
        )
    if summary.final_message:
        console.print("[bold]final message[/]")
        console.print(summary.final_message, markup=False)


def _print_events(transcript: str | None) -> None:
    from pathlib import Path

    path = Path(transcript) if transcript else None
    if path is None or not path.exists():
        console.print("(transcript not stored on this machine)")
        return
    for line in path.read_text().splitlines():
        for text in _transcript_lines(json.loads(line)):
            console.print(text, markup=False)


def _transcript_lines(event: dict) -> list[str]:
    """Readable lines for one stored agent event."""
    kind = event.get("type")
    if kind == "system":
        return _system_lines(event)
    if kind == "result":
        return [f"[result {event.get('subtype')} · {event.get('num_turns')} turns · "
                f"${event.get('total_cost_usd', 0):.4f}]"]  # fmt: skip
    lines = []
    for block in (event.get("message") or {}).get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            lines.append(f"{kind}: {block.get('text', '').strip()}")
        elif block.get("type") == "tool_use":
            lines.append(f"→ {block.get('name')} {json.dumps(block.get('input'))[:300]}")
        elif block.get("type") == "tool_result":
            content = block.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            lines.append(f"← {text[:300]}")
    return lines


def _system_lines(event: dict) -> list[str]:
    """The session's start and the stop gate's decisions; the CLI's other notices are noise."""
    subtype = event.get("subtype")
    if subtype == "init":
        return [f"[session {event.get('session_id')} · model {event.get('model')}]"]
    if subtype != "hook_response" or event.get("hook_event") != "Stop":
        return []
    try:
        answer = json.loads(event.get("output") or "{}")
    except ValueError:  # not the gate's JSON: show what the hook said
        return [f"[stop gate: {str(event.get('output'))[:300]}]"]
    if isinstance(answer, dict) and answer.get("decision") == "block":
        reason = str(answer.get("reason") or "").strip()
        return [f"[stop gate: sent back — {reason.splitlines()[0][:300] if reason else ''}]"]
    return ["[stop gate: let the agent finish]"]


@cli.group()
def cache() -> None:
    """The environment cache: what setup produced, restored instead of running setup again."""


def _env_cache():
    from resources.env_cache import EnvCache

    settings = Settings()
    return EnvCache(settings.env_cache_dir, settings.env_cache_max_mb * 1024 * 1024)


@cache.command(name="info")
@OUTPUT
def cache_info(output: str) -> None:
    """List cached environments (least recently used first) and their total size."""
    env_cache = _env_cache()
    entries = env_cache.entries()
    if output == "json":
        click.echo(json.dumps([e.model_dump() for e in entries], indent=2))
        return
    table = Table()
    for column in ("key", "target", "size", "last used", "paths"):
        table.add_column(column)
    for e in entries:
        used = datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(e.key[:12], str(e.inputs.get("target", "")), _mb(e.size_bytes), used,
                      ", ".join(e.paths))  # fmt: skip
    console.print(table)
    total = sum(e.size_bytes for e in entries)
    console.print(f"{len(entries)} environment(s), {_mb(total)} of {_mb(env_cache.max_bytes)} "
                  f"in {env_cache.root}")  # fmt: skip


@cache.command(name="prune")
@click.option("--max-mb", type=int, help="Evict until the cache is at most this size (0: all).")
def cache_prune(max_mb: int | None) -> None:
    """Evict least-recently-used environments down to the limit (default: the configured one)."""
    env_cache = _env_cache()
    limit = env_cache.max_bytes if max_mb is None else max_mb * 1024 * 1024
    evicted = env_cache.prune(limit)
    console.print(
        f"evicted {len(evicted)} environment(s), {_mb(sum(e.size_bytes for e in evicted))}"
    )


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


@cli.command(name="list")
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


cli.add_command(prs)
cli.add_command(sandboxes)
cli.add_command(metrics)
for _command in (approve, reject, steer, diff, cancel, audit):
    cli.add_command(_command)


def main() -> None:
    """Entry point: user mistakes become one clear line; tracebacks only with --debug."""
    warnings.filterwarnings("ignore")
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        errors.print("aborted")
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except SpecError as exc:
        if debug:
            raise
        for problem in exc.problems:
            errors.print(f"[red]error:[/] {problem.render(exc.file)}", soft_wrap=True)
        raise SystemExit(2) from None
    except OrchestratorError as exc:
        if debug:
            raise
        errors.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
    except SystemExit:
        raise
    except Exception as exc:
        if debug:
            raise
        errors.print(
            f"[red]error:[/] {type(exc).__name__}: {exc}\n(run with --debug for the traceback)"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
