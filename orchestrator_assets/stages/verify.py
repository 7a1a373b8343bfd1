"""The verify stage: run the campaign's verifiers on the kept change, each in a fresh sandbox."""

from __future__ import annotations

import time

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.records import (
    ChangeRecord,
    VerificationRecord,
    VerifierResult,
)
from orchestrator_assets.stages.setup import run_setup
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.workbench import Log, Workbench, quiet
from resources.forges.base import ForgeError
from resources.git import GitError


def verify_change(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord | None,
    prior: VerificationRecord | None,
    bench: Workbench,
    log: Log = quiet,
) -> VerificationRecord:
    """Run every verifier in a fresh sandbox at the change's head commit."""
    started = time.monotonic()
    if change is None or change.outcome != ChangeOutcome.CHANGED or not change.head_sha:
        why = "no change" if change and change.outcome == ChangeOutcome.NO_CHANGE else None
        return VerificationRecord(skipped_reason=why or "the change failed or has not run")
    verifiers = spec.verifiers_for(target)
    wanted = [(v.name, v.command_line()) for v in verifiers]
    if (
        bench.use_cache
        and prior is not None
        and prior.passed
        and prior.head_sha == change.head_sha
        and [(r.name, r.command) for r in prior.results] == wanted
    ):
        log(f"{target.key}: verification of {change.head_sha[:8]} already passed")
        # The copy is this run's record: its duration is this run's, not the earlier run's.
        took = round(time.monotonic() - started, 3)
        return prior.model_copy(update={"reused": True, "duration_s": took})
    results: list[VerifierResult] = []
    try:
        with bench.open_sandbox("verify", target) as sandbox:
            clone_url = (
                change.clone_url
                or bench.forge.resolve(target.repo, change.base_branch, spec.branch_name).clone_url
            )  # records written before clone_url was kept
            mirror = bench.cache.checkout(clone_url, sandbox.workspace, change.head_sha)
            sandbox.readable_paths.append(mirror)
            failed_setup, setup = run_setup(spec, target, sandbox, bench, log)
            if failed_setup is not None:
                return VerificationRecord(
                    head_sha=change.head_sha,
                    error=f"setup failed: {failed_setup.describe_failure()}",
                    setup_failed=True,
                    setup_output=failed_setup.output_tail,
                    duration_s=round(time.monotonic() - started, 3),
                )
            for verifier in verifiers:
                run = sandbox.exec(
                    verifier.argv(),
                    timeout_s=verifier.timeout_s,
                    network=bench.network,
                    on_output=bench.streamer(target, verifier.name, log),
                )
                result = VerifierResult(
                    name=verifier.name,
                    passed=run.ok,
                    exit_code=run.exit_code,
                    duration_s=run.duration_s,
                    output_tail=run.output_tail,
                    timed_out=run.timed_out,
                    command=verifier.command_line(),
                )
                results.append(result)
                mark = "passed" if run.ok else f"FAILED ({run.describe_failure()})"
                log(f"{target.key}: verifier {verifier.name} {mark}")
    except (ForgeError, GitError) as exc:
        return VerificationRecord(
            head_sha=change.head_sha,
            results=results,
            error=f"cannot prepare the verification sandbox: {exc}",
            duration_s=round(time.monotonic() - started, 3),
        )
    return VerificationRecord(
        head_sha=change.head_sha,
        results=results,
        setup=setup,
        duration_s=round(time.monotonic() - started, 3),
    )
