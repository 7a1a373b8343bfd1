"""The verify stage: run the campaign's verifiers on the kept change, each in a fresh sandbox."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import Verifier
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.records import (
    ChangeRecord,
    VerificationRecord,
    VerifierResult,
)
from orchestrator_assets.stages.setup import run_setup
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.workbench import Log, Workbench, quiet
from orchestrator_assets.stages.workspaces import directory, in_directory
from resources.agents.reports import read_report
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
                or bench.forge.resolve(
                    target.repo, change.base_branch, spec.branch_for(target)
                ).clone_url
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
                began = time.time()
                with bench.command_slot():
                    run = sandbox.exec(
                        in_directory(verifier.argv(), target),  # a workspace's from its directory
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
                    report=own_report(verifier, directory(sandbox.workspace, target), began),
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


REPORT_KEPT_CHARS = 200_000  # a failing suite's report, enough for its findings, not a whole log


def own_report(verifier: Verifier, workspace: Path, since: float) -> str | None:
    """The report file the verifier declares, as this run wrote it; None when there is none, it
    is older than the run, or it is not a plain file inside the workspace (the repository's code
    wrote it: a symlink must not make the platform read a host file into the agent's feedback)."""
    if not verifier.report:
        return None
    path = workspace / verifier.report
    if path.is_symlink() or not path.resolve().is_relative_to(workspace.resolve()):
        return None
    text = read_report(verifier.report, cwd=workspace, since=since)
    return text[:REPORT_KEPT_CHARS] if text else None
