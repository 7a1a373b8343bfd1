"""The per-campaign asset factory: one asset group, its partitions, checks, jobs and automation."""

import warnings
from collections.abc import Iterator

import dagster as dg

from orchestrator_assets import history
from orchestrator_assets.fanout import fan_out
from orchestrator_assets.metadata import (
    change_metadata,
    check_metadata,
    pull_request_metadata,
    report_metadata,
    verification_metadata,
)
from orchestrator_assets.profiles import Profile
from orchestrator_assets.records import (
    ChangeRecord,
    PullRequestRecord,
    VerificationRecord,
)
from orchestrator_assets.report import build_report
from orchestrator_assets.spec import CampaignSpec
from orchestrator_assets.stages import (
    Gate,
    Workbench,
    deliver_pull_request,
    make_change,
    verify_change,
)
from orchestrator_assets.status import ChangeOutcome
from resources.dagster_resources import ForgeResource, RepoCacheResource, SandboxResource
from sensors.discovery import build_discovery_sensor
from sensors.report import build_report_sensor
from sensors.schedules import build_schedule

# Per-partition checks and backfill policies are the documented way to run many targets per run;
# their beta/preview notices would otherwise print on every load of the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_campaign_definitions(spec: CampaignSpec, profile: Profile) -> dg.Definitions:
    """Everything Dagster needs for one campaign: assets, checks, jobs, sensors, schedule."""
    partitions = dg.DynamicPartitionsDefinition(name=spec.partitions_name)
    policy = dg.BackfillPolicy.single_run()
    change_key = history.asset_key(spec, "change")
    verification_key = history.asset_key(spec, "verification")
    pr_key = history.asset_key(spec, "pull_request")
    tags = {"campaign": spec.name}

    def bench(sandbox: SandboxResource, forge: ForgeResource, cache: RepoCacheResource):
        return Workbench(
            forge=forge.get(),
            cache=cache.get(),
            sandboxes=sandbox.get(),
            author=(forge.author_name, forge.author_email),
            network=profile.network == "full",
            default_timeout_s=profile.timeout_s,
        )

    def targets_of(context: dg.AssetExecutionContext) -> list[str]:
        keys = list(context.partition_keys)
        gone = [k for k in keys if spec.target(k) is None]
        if gone:
            context.log.warning(f"not targets of {spec.name} any more, skipped: {', '.join(gone)}")
        return [k for k in keys if spec.target(k) is not None]

    def each_target(context, keys, wb: Workbench, work, failed):
        """(key, record) per target as each finishes; `concurrency` targets at a time."""
        return fan_out(
            keys,
            lambda k, log: work(spec.target(k), log),
            failed,
            max_workers=spec.concurrency,
            log=context.log.info,
            cancel=wb.sandboxes.close_all,
        )

    @dg.asset(
        key=change_key,
        partitions_def=partitions,
        backfill_policy=policy,
        group_name=spec.id,
        pool="sandbox",
        kinds={"git"},
        description=f"The change of campaign {spec.name} on each target: the transformation's "
        "commit on the campaign branch, pushed to the forge.",
    )
    def change(
        context: dg.AssetExecutionContext,
        sandbox: SandboxResource,
        forge: ForgeResource,
        repo_cache: RepoCacheResource,
    ) -> None:
        keys = targets_of(context)
        wb = bench(sandbox, forge, repo_cache)
        priors = history.latest_changes(context.instance, spec, keys)

        def failed(key: str, exc: BaseException) -> ChangeRecord:
            return ChangeRecord(
                outcome=ChangeOutcome.FAILED,
                reason=f"unexpected error: {exc}",
                repo=spec.target(key).repo,  # type: ignore[union-attr]
                branch=spec.branch_name,
                fingerprint=spec.transformation_fingerprint(),
            )

        for key, record in each_target(
            context,
            keys,
            wb,
            lambda t, log: make_change(spec, t, priors.get(t.key), wb, log),
            failed,
        ):
            if record.outcome == ChangeOutcome.FAILED:
                context.log.error(f"{key}: change failed: {record.reason}")
            context.add_asset_metadata(change_metadata(record), partition_key=key)

    check_specs = [
        dg.AssetCheckSpec(
            v.check_name,
            asset=verification_key,
            blocking=True,
            partitions_def=partitions,
            description=f"Verifier `{' '.join(v.argv())}` passes at the change's head commit.",
        )
        for v in spec.verifiers
    ]

    @dg.asset(
        key=verification_key,
        partitions_def=partitions,
        backfill_policy=policy,
        group_name=spec.id,
        deps=[change],
        check_specs=check_specs,
        pool="sandbox",
        description="Every verifier of the campaign, run in a fresh sandbox at the change's head.",
    )
    def verification(
        context: dg.AssetExecutionContext,
        sandbox: SandboxResource,
        forge: ForgeResource,
        repo_cache: RepoCacheResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        keys = targets_of(context)
        wb = bench(sandbox, forge, repo_cache)
        changes = history.latest_changes(context.instance, spec, keys)
        priors = history.latest_verifications(context.instance, spec, keys)
        single = context.has_partition_key
        outcomes: dict[str, VerificationRecord] = {}

        def failed(key: str, exc: BaseException) -> VerificationRecord:
            change_record = changes.get(key)
            head = change_record.head_sha if change_record else None
            return VerificationRecord(head_sha=head, error=f"unexpected error: {exc}")

        for key, record in each_target(
            context,
            keys,
            wb,
            lambda t, log: verify_change(spec, t, changes.get(t.key), priors.get(t.key), wb, log),
            failed,
        ):
            outcomes[key] = record
            context.add_asset_metadata(verification_metadata(record), partition_key=key)
        yield dg.MaterializeResult()
        if not single:
            # Each target's evaluation points at the materialization it checks (stored by the
            # yield above), so the UI shows it as the target's current check result.
            ran = [k for k, r in outcomes.items() if r.head_sha]
            checked = history.latest_materializations(context.instance, verification_key, ran)
            for key in ran:
                for verifier in spec.verifiers:
                    passed, meta = check_metadata(outcomes[key], verifier.name)
                    context.log_event(
                        dg.AssetCheckEvaluation(
                            asset_key=verification_key,
                            check_name=verifier.check_name,
                            passed=passed,
                            partition=key,
                            metadata=meta,
                            target_materialization_data=checked.get(key),
                        )
                    )
        for verifier in spec.verifiers:
            if single:
                # A one-target run: Dagster records this result against the target's partition,
                # and a failure blocks pull_request in this run.
                record = outcomes.get(context.partition_key) or VerificationRecord(
                    skipped_reason="not a target"
                )
                passed, meta = check_metadata(record, verifier.name)
                yield dg.AssetCheckResult(
                    check_name=verifier.check_name, passed=passed, metadata=meta
                )
                continue
            # A range run: Dagster records this one against no partition, and a blocking
            # failure would hold back every target of the run. Each target's own evaluation was
            # logged above; this is a summary that only warns.
            ran = [k for k, r in outcomes.items() if r.head_sha]
            bad = [k for k in ran if not check_metadata(outcomes[k], verifier.name)[0]]
            yield dg.AssetCheckResult(
                check_name=verifier.check_name,
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
        key=pr_key,
        partitions_def=partitions,
        backfill_policy=policy,
        group_name=spec.id,
        deps=[verification],
        pool="forge_write",
        description="The pull request of each target whose change passed every verifier.",
    )
    def pull_request(
        context: dg.AssetExecutionContext,
        sandbox: SandboxResource,
        forge: ForgeResource,
        repo_cache: RepoCacheResource,
    ) -> None:
        keys = targets_of(context)
        wb = bench(sandbox, forge, repo_cache)
        changes = history.latest_changes(context.instance, spec, keys)
        verifications = history.latest_verifications(context.instance, spec, keys)

        gates = {
            k: Gate(evaluations=history.latest_check_evaluations(context.instance, spec, k))
            for k in keys
        }

        def failed(key: str, exc: BaseException) -> PullRequestRecord:
            return PullRequestRecord(outcome="failed", reason=f"unexpected error: {exc}")

        for key, record in each_target(
            context,
            keys,
            wb,
            lambda t, log: deliver_pull_request(
                spec, t, changes.get(t.key), verifications.get(t.key), gates[t.key], wb, log
            ),
            failed,
        ):
            if record.outcome == "failed":
                context.log.error(f"{key}: pull request failed: {record.reason}")
            context.add_asset_metadata(pull_request_metadata(record), partition_key=key)

    @dg.asset(
        key=history.asset_key(spec, "report"),
        group_name=spec.id,
        deps=[pull_request],
        kinds={"pandas"},
        description=f"One row per target of campaign {spec.name}: status, shas, verifier "
        "results, pull request, cost and duration.",
    )
    def report(context: dg.AssetExecutionContext) -> dg.Output:
        frame = build_report(context.instance, spec)
        return dg.Output(frame, metadata=report_metadata(frame))

    target_selection = dg.AssetSelection.assets(change, verification, pull_request)
    targets_job = dg.define_asset_job(
        f"{spec.id}_targets",
        selection=target_selection,
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
    return dg.Definitions(
        assets=[change, verification, pull_request, report],
        jobs=[targets_job, report_job],
        sensors=[build_discovery_sensor(spec), build_report_sensor(spec, report_job)],
        schedules=schedules,
    )
