"""`orchestrator validate` and `orchestrator run`: check campaign files, run a campaign from its
file or ad hoc from the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance, progress_printer
from orchestrator_assets.cli.report import print_report
from orchestrator_assets.spec.errors import OrchestratorError, SpecError
from orchestrator_assets.spec.settings import Settings

if TYPE_CHECKING:
    from orchestrator_assets.spec.catalog import Campaign, Overrides

console = make_console()
errors = make_console(stderr=True)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check campaign files and report every problem with file, field and reason."""
    from orchestrator_assets.spec.catalog import load_one
    from orchestrator_assets.spec.selection import describe_targets

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
            f"[green]✓[/] {path}: campaign {spec.name!r}, {describe_targets(spec)}, "
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


@click.command()
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
@click.option(
    "--preview",
    is_flag=True,
    help="Transform and verify, but push nothing and open no PR: each target's change is "
    "`previewed`; `orchestrator publish` then opens exactly those changes.",
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
    preview,
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
    if preview:  # this run only, like the [override] options (the run's tags record it)
        from dataclasses import replace

        campaign = replace(
            campaign, spec=campaign.spec.model_copy(update={"preview": True}),
            overrides={**campaign.overrides, "--preview": "true"},
        )  # fmt: skip
    instance = open_instance()

    emit = progress_printer(console)
    spec = campaign.spec
    counted = f"{len(spec.targets)} targets"
    if spec.selects_targets:  # none counted yet: the run's selection line says how many
        counted = "targets chosen as the run begins"
    console.print(
        f"[bold]campaign {spec.name}[/] ({counted}) · DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
    )
    from orchestrator_assets.reports import json_logs

    json_logs.set_context(campaign=campaign.spec.name)  # ORCHESTRATOR_LOG_FORMAT=json: JSON lines
    progress = json_logs.emit if json_logs.enabled() else emit
    outcome = run_campaign(campaign, instance, settings, list(targets) or None, progress, no_cache)
    if outcome.skipped_final:
        console.print(
            f"left alone (merged, closed or rejected): {', '.join(outcome.skipped_final)}"
        )
    print_report(outcome.report, output)
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

    found = refresh(campaign.spec, settings, build_forge(settings, campaign.spec))
    console.print(
        f"discovered {found.total} repositories"
        + (f"; new: {', '.join(found.added)}" if found.added else "")
        + (f"; gone: {', '.join(found.removed)}" if found.removed else "")
    )
    return load_one(campaign.file, settings, overrides)
