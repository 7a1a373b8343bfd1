"""`orchestrator publish`: push and open exactly the changes a preview run verified.

A run with `--preview` (or a campaign with `preview: true`) leaves each verified change
unpublished in the repository cache, its pull request record `previewed`. `publish` checks that
each previewed change is still what it was (same base commit, same campaign, campaign branch
not moved), records an approval pinned to the previewed head commit (the review path), and
runs only the campaign's pull request stage for those targets: the commit is pushed and the PR
opened; nothing is transformed or verified again. Running it again publishes nothing twice.
"""

from __future__ import annotations

import json
import os
import socket
import uuid

import click

from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance, progress_printer
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import Settings

console = make_console()
errors = make_console(stderr=True)

STYLE = {"publish": "green", "published": "dim", "not_previewed": "yellow", "moved": "red"}


@click.command()
@click.argument("campaign")
@click.option("--target", "targets", multiple=True, help="Only these targets (slugs); repeatable.")
@click.option("--dry-run", is_flag=True, help="Only say what would be published; change nothing.")
@OUTPUT
def publish(campaign: str, targets: tuple[str, ...], dry_run: bool, output: str) -> None:
    """Publish a campaign's previewed changes: push each one and open its pull request.

    Exactly the previewed head commits are published, without running the transformation or
    the verifiers again. A target whose change moved since its preview (its base branch moved,
    the campaign changed, the campaign branch moved) is not published: run the campaign again
    to preview the new change. Publishing again publishes nothing twice. With --dry-run it
    only says what it would publish (files and line counts per target).

    Exit status: 0 when every chosen previewed target was published (or already was), 1 when
    some could not be, 2 for a mistake in the command.
    """
    from orchestrator_assets.assets import history
    from orchestrator_assets.assets.partitions import contiguous_ranges, range_tags
    from orchestrator_assets.assets.runner import QUIET, ProgressWatcher, campaign_definitions
    from orchestrator_assets.cli.prs import current_actor, forge_for
    from orchestrator_assets.cli.report import print_report
    from orchestrator_assets.cli.review import HOST_TAG, PID_TAG
    from orchestrator_assets.reports.report import build_report
    from orchestrator_assets.spec.catalog import FILE_TAG, load_catalog
    from orchestrator_assets.stages.publish import PUBLISHED, plan_publish, publish_decision
    from orchestrator_assets.stages.review import latest_decisions, record_decision
    from resources.forges.base import ForgeError

    settings = Settings()
    instance = open_instance()
    loaded = load_catalog(settings, instance).get(campaign)
    spec, profile = loaded.spec, loaded.profile
    for key in targets:
        spec.require_target(key)
    chosen = [t for t in spec.targets if not targets or t.key in targets]
    keys = [t.key for t in chosen]
    changes = history.latest_changes(instance, spec, keys)
    prs = history.latest_pull_requests(instance, spec, keys)
    verifications = history.latest_verifications(instance, spec, keys)
    decisions = latest_decisions(instance, spec, keys)
    forge = forge_for(loaded)
    plans = []
    for target in chosen:
        change, pr = changes.get(target.key), prs.get(target.key)
        now = None
        if pr is not None and pr.outcome == "previewed" and change is not None:
            try:
                now = forge.resolve(target.repo, target.base, spec.branch_for(target))
            except ForgeError as exc:
                raise OrchestratorError(f"{target.key}: cannot ask the forge: {exc}") from None
        fingerprint = spec.transformation_fingerprint(
            spec.setup_for(target, profile.setup), profile.environment_key()
        )
        plans.append(
            plan_publish(spec, target, change, pr, now, fingerprint, verifications.get(target.key))
        )
    todo = [p for p in plans if p.verdict == "publish" and not dry_run]
    actor = current_actor()
    for plan in todo:
        made = publish_decision(
            plan.target, plan.head_sha or "", actor, decisions.get(plan.target),
            changes[plan.target],
        )  # fmt: skip
        if made is not None:
            record_decision(instance, spec, made)
    failed_runs = []
    if todo:
        defs = campaign_definitions(loaded, settings)
        job = defs.resolve_job_def(f"{spec.id}_targets")
        pr_key = history.asset_key(spec, "pull_request")
        ordered = instance.get_dynamic_partitions(spec.partitions_name)

        emit = progress_printer(console)
        for start, end in contiguous_ranges(ordered, [p.target for p in todo]):
            run_id, single = str(uuid.uuid4()), start == end
            emit("run", f"{run_id[:8]} publishes {start if single else f'{start} … {end}'}")
            with ProgressWatcher(instance, run_id, emit):
                result = job.execute_in_process(
                    instance=instance,
                    run_id=run_id,
                    partition_key=start if single else None,
                    asset_selection=[pr_key],  # the pull request stage alone
                    tags={
                        "campaign": spec.name,
                        FILE_TAG: str(loaded.file.resolve()),
                        "orchestrator/publish": "true",
                        PID_TAG: str(os.getpid()),
                        HOST_TAG: socket.gethostname(),
                        **({"target": start} if single else range_tags(start, end)),
                    },
                    run_config=QUIET,
                    raise_on_error=False,
                )
            if not result.success:
                failed_runs.append(run_id)
        report_job = defs.resolve_job_def(f"{spec.id}_report")
        report_job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
    after = history.latest_pull_requests(instance, spec, [p.target for p in todo])
    results, bad = [], 0
    for plan in plans:
        line, url = plan.reason, None
        if plan.verdict == "publish" and dry_run:
            change = changes[plan.target]
            line = (
                f"would publish {(plan.head_sha or '')[:8]}: {len(change.files)} file(s) "
                f"(+{change.insertions} -{change.deletions}): {', '.join(change.files[:10])}"
            )
        elif plan.verdict == "publish":
            record = after.get(plan.target)
            if record is not None and record.outcome in PUBLISHED:
                url = record.url
                line = f"published {(plan.head_sha or '')[:8]}: #{record.number} {record.url}"
            else:
                bad += 1
                why = record.reason if record is not None else "no pull request record"
                line = f"not published: {record.outcome if record else 'failed'}: {why}"
        elif plan.verdict == "moved":
            bad += 1
        results.append({"target": plan.target, "verdict": plan.verdict, "message": line,
                        "head_sha": plan.head_sha, "pr_url": url})  # fmt: skip
    frame = build_report(instance, spec)
    if output == "json":
        rows = json.loads(frame.to_json(orient="records"))
        click.echo(json.dumps({"targets": results, "report": rows}, indent=2))
    else:
        for result in results:
            style = STYLE.get(result["verdict"], "")
            console.print(f"[{style}]{result['target']}[/]: {result['message']}", soft_wrap=True)
        print_report(frame, output)
    if not any(p.verdict in ("publish", "published", "moved") for p in plans):
        errors.print(
            f"nothing to publish: no target of {spec.name} is previewed (run it with "
            f"`orchestrator run --campaign {spec.name} --preview`)"
        )
    if failed_runs:
        errors.print(f"[red]{len(failed_runs)} run(s) failed: {', '.join(failed_runs)}[/]")
    if bad or failed_runs:
        raise SystemExit(1)
