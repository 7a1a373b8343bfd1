"""The per-campaign asset factory: one asset group, its partitions, checks, jobs and automation."""

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from orchestrator_assets.assets import history, pr_rate
from orchestrator_assets.assets.fanout import fan_out
from orchestrator_assets.assets.metadata import (
    change_metadata,
    check_metadata,
    pull_request_metadata,
    report_metadata,
    verification_metadata,
)
from orchestrator_assets.assets.rollout_history import latest_ci_repairs
from orchestrator_assets.reports import json_logs, metrics
from orchestrator_assets.reports.report import (
    build_report,
    burndown,
    burndown_chart,
    burndown_markdown,
    finished_message,
    is_finished,
)
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.profiles import Profile
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.stages import review
from orchestrator_assets.stages.budget import Budget
from orchestrator_assets.stages.ci_repair import CI_REPAIR_TAG
from orchestrator_assets.stages.ci_repair import followup_for as ci_followup
from orchestrator_assets.stages.deliver import Gate
from orchestrator_assets.stages.prefetch import FRESH_S, MirrorPrefetch
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    TargetOutcome,
    VerificationRecord,
)
from orchestrator_assets.stages.rollout import max_prs_per_hour
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.target import advance_target
from orchestrator_assets.stages.workbench import PullRequestLimiter, Workbench
from resources.agents.judge import judge_change
from resources.build import build_forge
from resources.dagster_resources import (
    AgentResource,
    EnvCacheResource,
    ForgeResource,
    RepoCacheResource,
    SandboxResource,
    forge_git_env,
)
from resources.forges.base import counting_requests
from resources.notify import NotifierResource
from sensors.discovery import build_discovery_sensor
from sensors.post_merge import build_post_merge_sensor
from sensors.pr_status import build_pr_status_sensor
from sensors.report import build_report_sensor
from sensors.review import build_review_job, build_review_sensor
from sensors.rollout import build_rollout_sensor, current_standing
from sensors.schedules import build_schedule

# Per-partition checks and backfill policies are the documented way to run many targets per run;
# their beta/preview notices would otherwise print on every load of the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

NO_CACHE_TAG = "orchestrator/no_cache"  # a run with this tag set to "true" reuses nothing


def judge_for(spec: CampaignSpec):
    """The LLM judge for an agentic campaign with `judge:` (None otherwise)."""
    if spec.transformation.kind != "agentic" or spec.transformation.judge is None:
        return None

    def judge(request: str, diff: str, config):
        return judge_change(
            request, diff, model=config.model, criteria=config.criteria,
            max_diff_chars=config.max_diff_chars,
        )  # fmt: skip

    return judge


def build_campaign_definitions(spec: CampaignSpec, profile: Profile) -> dg.Definitions:
    """Everything Dagster needs for one campaign: assets, checks, jobs, sensors, schedule."""
    partitions = dg.DynamicPartitionsDefinition(name=spec.partitions_name)
    keys = {stage: history.asset_key(spec, stage) for stage in ("change", "verification")}
    keys["pull_request"] = history.asset_key(spec, "pull_request")
    change_key, verification_key, pr_key = (
        keys["change"],
        keys["verification"],
        keys["pull_request"],
    )
    tags = {"campaign": spec.name}

    # The three per-target assets are computed by one step, so that each target goes through
    # change, verification and pull request as soon as it can, and its events are written while
    # other targets' git and tool work goes on (instead of all at the end of three steps).
    # Outputs are skippable: each target's materializations are logged as it finishes.
    specs = [
        dg.AssetSpec(
            change_key,
            partitions_def=partitions,
            group_name=spec.id,
            skippable=True,
            kinds={"git"},
            description=f"The change of campaign {spec.name} on each target: the "
            "transformation's commit, kept unpublished until its pull request stage pushes it.",
        ),
        dg.AssetSpec(
            verification_key,
            partitions_def=partitions,
            group_name=spec.id,
            skippable=True,
            deps=[change_key],
            description="Every verifier of the campaign, run in a fresh sandbox at the change's "
            "head commit; one blocking check per verifier.",
        ),
        dg.AssetSpec(
            pr_key,
            partitions_def=partitions,
            group_name=spec.id,
            skippable=True,
            deps=[verification_key],
            description="The pull request of each target whose change passed every verifier.",
        ),
    ]
    check_specs = [
        dg.AssetCheckSpec(
            v.check_name,
            asset=verification_key,
            blocking=True,
            partitions_def=partitions,
            description=f"Verifier `{v.command_line()}` passes at the change's head commit.",
        )
        for v in spec.all_verifiers()
    ]

    @dg.multi_asset(
        name=f"{spec.id}__targets",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="sandbox",
    )
    def targets(
        context: dg.AssetExecutionContext,
        sandbox: SandboxResource,
        forge: ForgeResource,
        repo_cache: RepoCacheResource,
        agent: AgentResource,
        env_cache: EnvCacheResource,
        notifier: NotifierResource,
    ) -> Iterator[dg.AssetCheckResult]:
        stages = {k.path[-1] for k in context.selected_asset_keys}
        run_keys = list(context.partition_keys)
        gone = [k for k in run_keys if spec.target(k) is None]
        if gone:
            context.log.warning(f"not targets of {spec.name} any more, skipped: {', '.join(gone)}")
        todo = [k for k in run_keys if spec.target(k) is not None]
        instance = context.instance
        changes = history.latest_changes(instance, spec, todo)
        verifications = history.latest_verifications(instance, spec, todo)
        decisions = review.latest_decisions(instance, spec, todo)
        prior_prs = history.latest_pull_requests(instance, spec, todo)
        # a run the PR status sensor requested to repair a PR whose checks failed or conflicts
        ci_requests = (
            latest_ci_repairs(instance, spec, todo)
            if context.run.tags.get(CI_REPAIR_TAG) and "change" in stages
            else {}
        )
        gates: dict[str, Gate] = {}
        if "pull_request" in stages and "verification" not in stages:
            gates = {
                k: Gate(evaluations=history.latest_check_evaluations(instance, spec, k))
                for k in todo
            }
        budget_notes: list[str] = []  # appended from worker threads, logged on this one
        # The spend so far needs every target's record: read it only when there is a budget.
        spent = (
            sum(r.total_cost_usd for r in history.latest_changes(instance, spec).values())
            if spec.budget_usd is not None
            else 0.0
        )
        forge_client = forge.for_campaign(spec)  # a router over the campaign's named forges
        notify = notifier.get()
        # Sandbox time to ready and the code host's API counters are measured here, in the run
        # itself, so runs launched by the CLI, the daemon or a run pod all record them.
        stats = metrics.RunStats(forge_kind=getattr(forge_client, "kind", forge.kind))
        forge_before = metrics.forge_counters(forge_client)
        sandboxes = sandbox.get(profile.provider, profile.image, profile.limits())
        pr_limiter = None
        per_hour = max_prs_per_hour(spec)  # pull_request.max_per_hour or rollout.max_prs_per_hour
        if per_hour is not None and "pull_request" in stages:
            # what the campaign opened in the last hour counts too: a re-run cannot exceed it
            since = time.time() - 3600
            pr_limiter = PullRequestLimiter(
                per_hour,
                pr_rate.pull_requests_opened_since(instance, spec, since),
            )
        # rollout waves: which targets may publish, as the event log stands before this run
        waves = current_standing(instance, spec) if "pull_request" in stages else None
        slots = profile.host_command_slots()
        wb = Workbench(
            forge=forge_client,
            cache=repo_cache.get(forge_git_env(forge_client)),
            sandboxes=metrics.TimedProvider(sandboxes, profile.provider, stats),
            author=(forge.author_name, forge.author_email),
            network=profile.commands_network,
            default_timeout_s=profile.timeout_s,
            agent=agent.get() if spec.transformation.kind == "agentic" else None,
            agent_homes=Path(agent.homes) if agent.homes else None,
            transcripts=Path(agent.transcripts) if agent.transcripts else None,
            budget=Budget(spec.budget_usd, spent, budget_notes.append),
            profile_setup=profile.setup,
            setup_network=profile.setup_network == "full",
            setup_timeout_s=profile.setup_timeout_s,
            profile_name=spec.profile or "default",
            env_cache=env_cache.get(),
            cache_paths=profile.cache_paths,
            manifests=profile.manifests,
            use_cache=context.run.tags.get(NO_CACHE_TAG) != "true",
            tags={"campaign": spec.name, "run_id": context.run_id},
            environment=profile.environment_key(),
            notify=notify,
            judge=judge_for(spec),
            pr_limiter=pr_limiter,
            rollout=waves,
            mirror_fresh_s=FRESH_S,  # what the run's prefetch (below) fetched counts as fresh
            command_slots=threading.BoundedSemaphore(slots) if slots else None,
        )
        single = context.has_partition_key
        verified: dict[str, VerificationRecord] = {}
        requests: dict[str, int] = {}  # forge API requests per target (worker threads write)

        # The mirrors of the targets next in line are fetched while the workers run earlier
        # ones; a change then reads its branches from a mirror fetched moments before.
        def remote_clone_url(key: str) -> str | None:
            repo = spec.target(key).repo  # type: ignore[union-attr]
            if forge_client.kind_for(repo) == "local":  # type: ignore[attr-defined]
                return None  # no network to wait for: not worth a `locate` per target
            return forge_client.locate(repo).clone_url

        prefetch = MirrorPrefetch(
            todo if "change" in stages else [], remote_clone_url, wb.cache, ahead=spec.concurrency
        )

        def work(key: str, log) -> TargetOutcome:
            prefetch.begin()
            # A worker works on one target at a time: its thread's requests are the target's.
            with counting_requests(forge_client) as tally:
                outcome = advance_target(
                    spec, spec.target(key), stages, changes.get(key), verifications.get(key),  # type: ignore[arg-type]
                    gates.get(key), wb, log, decisions.get(key), prior_prs.get(key),
                    ci_followup(spec, ci_requests.get(key), changes.get(key)),
                )  # fmt: skip
            if tally is not None:
                requests[key] = tally.requests
                log(f"{key}: {tally.requests} forge API request(s), {tally.writes} write(s), "
                    f"{tally.not_modified} answered 304")  # fmt: skip
            return outcome

        def failed(key: str, exc: BaseException) -> TargetOutcome:
            reason = f"unexpected error: {exc}"
            return TargetOutcome(
                change=ChangeRecord(
                    outcome=ChangeOutcome.FAILED, reason=reason, repo=spec.target(key).repo,  # type: ignore[union-attr]
                    branch=spec.branch_for(spec.target(key)),  # type: ignore[arg-type]
                    fingerprint=spec.transformation_fingerprint(),
                ) if "change" in stages else None,
                pull_request=PullRequestRecord(outcome="failed", reason=reason)
                if "pull_request" in stages and "change" not in stages else None,
            )  # fmt: skip

        try:
            with prefetch:
                for key, outcome in fan_out(
                    todo,
                    work,
                    failed,
                    max_workers=spec.concurrency,
                    log=context.log.info,
                    cancel=sandboxes.close_all,
                ):
                    # Its failure lines and materialization events are the target's in JSON logs.
                    with json_logs.bind(target=key):
                        record_target(context, key, outcome, single)
                    while budget_notes:
                        note = f"campaign {spec.name}: {budget_notes.pop(0)}"
                        context.log.warning(note)
                        notify("budget", note)
                    if outcome.verification is not None:
                        verified[key] = outcome.verification
        finally:  # also when the run is interrupted: what it measured so far is kept
            stats.forge = metrics.forge_delta(forge_before, metrics.forge_counters(forge_client))
            if requests:
                counts = list(requests.values())
                stats.forge["targets_counted"] = len(counts)
                stats.forge["requests_per_target_max"] = max(counts)
                stats.forge["requests_per_target_mean"] = round(sum(counts) / len(counts), 3)
            metrics.record_run_stats(instance, context.run_id, stats, spec.name)
        yield from check_results(context, verified, single)

    def record_target(context, key: str, outcome: TargetOutcome, single: bool) -> None:
        """Log one target's materializations (and check evaluations) as soon as it is done."""
        if outcome.change is not None:
            if outcome.change.outcome == ChangeOutcome.FAILED:
                context.log.error(f"{key}: change failed: {outcome.change.reason}")
            context.log_event(
                dg.AssetMaterialization(
                    change_key, partition=key, metadata=change_metadata(outcome.change)
                )
            )
        record = outcome.verification
        if record is not None:
            context.log_event(
                dg.AssetMaterialization(
                    verification_key, partition=key, metadata=verification_metadata(record)
                )
            )
            if not single and record.head_sha:
                # Each evaluation points at the materialization it checks, so the UI shows it
                # as the target's current check result.
                target = history.latest_materializations(
                    context.instance, verification_key, [key]
                ).get(key)
                for verifier in spec.verifiers_for(spec.target(key)):  # type: ignore[arg-type]
                    passed, meta = check_metadata(record, verifier.name)
                    context.log_event(
                        dg.AssetCheckEvaluation(
                            asset_key=verification_key,
                            check_name=verifier.check_name,
                            passed=passed,
                            partition=key,
                            metadata=meta,
                            target_materialization_data=target,
                        )
                    )
        if outcome.pull_request is not None:
            if outcome.pull_request.outcome == "failed":
                context.log.error(f"{key}: pull request failed: {outcome.pull_request.reason}")
            context.log_event(
                dg.AssetMaterialization(
                    pr_key, partition=key, metadata=pull_request_metadata(outcome.pull_request)
                )
            )

    def check_results(
        context, verified: dict[str, VerificationRecord], single: bool
    ) -> Iterator[dg.AssetCheckResult]:
        """The result every selected check must yield once per step."""
        for check_key in context.selected_asset_check_keys:
            name = next(v.name for v in spec.all_verifiers() if v.check_name == check_key.name)

            def applies(key: str, name: str = name) -> bool:
                target = spec.target(key)
                return target is not None and name in {v.name for v in spec.verifiers_for(target)}

            if single:
                # A one-target run: Dagster records this result against the target's partition.
                # Nothing verified (no change, change failed): no result, so the check reads as
                # skipped for the target, as in a range run.
                record = verified.get(context.partition_key)
                if record is None or record.head_sha is None or not applies(context.partition_key):
                    continue
                passed, meta = check_metadata(record, name)
                yield dg.AssetCheckResult(
                    asset_key=verification_key, check_name=check_key.name, passed=passed,
                    metadata=meta,
                )  # fmt: skip
                continue
            # A range run: Dagster records this one against no partition, and a blocking
            # failure would hold back every target of the run. Each target's own evaluation was
            # logged as it finished; this is a summary that only warns.
            ran = [k for k, r in verified.items() if r.head_sha and applies(k)]
            bad = [k for k in ran if not check_metadata(verified[k], name)[0]]
            yield dg.AssetCheckResult(
                asset_key=verification_key,
                check_name=check_key.name,
                passed=not bad,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"summary of {len(ran)} target(s); each target has its own result",
                metadata={
                    "targets_checked": len(ran),
                    "targets_failed": len(bad),
                    "failed_targets": ", ".join(bad[:50]),
                },
            )

    @dg.asset(
        key=history.asset_key(spec, "report"),
        group_name=spec.id,
        deps=[pr_key],
        kinds={"pandas"},
        description=f"One row per target of campaign {spec.name}: status, shas, verifier "
        "results, pull request, cost and duration.",
    )
    def report(context: dg.AssetExecutionContext, notifier: NotifierResource) -> dg.Output:
        frame = build_report(context.instance, spec)
        finished = is_finished(frame)
        before = context.instance.get_latest_materialization_event(
            history.asset_key(spec, "report")
        )
        was = before.asset_materialization.metadata.get("finished") if before else None
        if finished and not (was is not None and was.value):
            notifier.get()("campaign_finished", finished_message(spec.name, frame))
        trend = burndown(context.instance, spec)
        chart = burndown_chart(
            trend, Settings().data_dir / "reports" / f"{spec.id}_burndown.png", spec.name
        )
        return dg.Output(
            frame,
            metadata={
                **report_metadata(frame),
                "finished": finished,
                "burndown": dg.MetadataValue.md(burndown_markdown(trend)),
                "burndown_chart": dg.MetadataValue.path(str(chart)),
                **(
                    {"rollout": dg.MetadataValue.md(frame.attrs["rollout"])}
                    if frame.attrs.get("rollout")
                    else {}
                ),
            },
        )

    targets_job = dg.define_asset_job(
        f"{spec.id}_targets",
        selection=dg.AssetSelection.assets(change_key, verification_key, pr_key),
        tags=tags,
        executor_def=dg.in_process_executor,
        description=f"Advance every selected target of campaign {spec.name} (change, "
        "verification, pull request).",
    )
    report_job = dg.define_asset_job(
        f"{spec.id}_report",
        selection=dg.AssetSelection.assets(report),
        tags=tags,
        executor_def=dg.in_process_executor,
    )
    schedules = [build_schedule(spec, targets_job)] if spec.schedule else []
    review_job = build_review_job(spec)
    return dg.Definitions(
        assets=[targets, report],
        jobs=[targets_job, report_job, review_job],
        sensors=[
            build_discovery_sensor(spec),
            build_report_sensor(spec, report_job),
            build_pr_status_sensor(
                spec,
                lambda: build_forge(Settings(), spec),
                notifier_getter=NotifierResource().get,
                job=targets_job,  # CI-driven repair runs (`ci_repairs`)
            ),
            # rollout waves and the post-merge watch: only for campaigns that ask for them
            *(
                [build_rollout_sensor(spec, targets_job, notifier_getter=NotifierResource().get)]
                if spec.rollout
                else []
            ),
            *(
                [
                    build_post_merge_sensor(
                        spec,
                        lambda: build_forge(Settings(), spec),
                        notifier_getter=NotifierResource().get,
                    )
                ]
                if spec.post_merge
                else []
            ),
            build_review_sensor(
                spec,
                targets_job,
                lambda: build_forge(Settings(), spec),
                notifier_getter=NotifierResource().get,
                minimum_interval_seconds=Settings().review_poll_interval_s,
            ),
        ],
        schedules=schedules,
    )
