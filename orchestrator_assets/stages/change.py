"""The change stage: check a target out, run the transformation (a command or an agent) in a
sandbox, and keep the commit unpublished in the repository cache.

Idempotent: given the record of its previous run it repeats nothing that is done.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.steps import AgenticTransformation
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.records import (
    ChangeRecord,
    Iteration,
)
from orchestrator_assets.stages.setup import run_setup
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.transform import run_agent, run_command
from orchestrator_assets.stages.workbench import FollowUp, Log, Workbench, quiet
from orchestrator_assets.stages.workspaces import outside_changes
from resources.forges.base import ForgeError
from resources.git import GitError, author_env, git_metadata_digest, run_git

DIFF_LIMIT = 20_000


ITERATION_DIFF_LIMIT = 8_000  # each iteration keeps its own diff, smaller


def make_change(
    spec: CampaignSpec,
    target: Target,
    prior: ChangeRecord | None,
    bench: Workbench,
    log: Log = quiet,
    followup: FollowUp | None = None,
) -> ChangeRecord:
    """Apply the campaign's transformation to one target and keep its commit, unpublished, in
    the repository cache (it reaches the forge only once it passed its gates: `publish`).

    With a `followup` the target's existing change (`prior`) is worked on again instead: the
    new pass is one more numbered iteration, and if it fails the existing change is kept.
    """
    started = time.monotonic()
    base = ChangeRecord(
        outcome=ChangeOutcome.FAILED,
        repo=target.repo,
        branch=spec.branch_for(target),
        fingerprint=spec.transformation_fingerprint(
            spec.setup_for(target, bench.profile_setup), bench.environment
        ),
    )
    try:
        record = _make_change(spec, target, prior, bench, base, log, followup)
    except (ForgeError, GitError) as exc:
        record = base.model_copy(update={"reason": str(exc)})
    record.duration_s = round(time.monotonic() - started, 3)
    if record.reused:
        return record
    return _with_iteration(spec, target, prior, record, followup, log)


def _with_iteration(
    spec: CampaignSpec,
    target: Target,
    prior: ChangeRecord | None,
    record: ChangeRecord,
    followup: FollowUp | None,
    log: Log,
) -> ChangeRecord:
    """The record with this pass added to its iterations. A follow-up that failed keeps the
    existing change (and its verification) and only records the failed attempt."""
    earlier: list[Iteration] = []
    if followup is not None and prior is not None:
        earlier = list(prior.iterations) or [_first_iteration(spec, prior)]
    made = Iteration(
        number=len(earlier) + 1,
        kind=followup.kind if followup else "initial",  # type: ignore[arg-type]
        prompt=followup.prompt if followup else _initial_prompt(spec),
        files=followup.files if followup else [],
        decision_id=followup.decision_id if followup else None,
        session_id=record.agent.session_id if record.agent else None,
        head_sha=record.head_sha,
        diff=record.diff[:ITERATION_DIFF_LIMIT],
        files_changed=len(record.files),
        cost_usd=record.cost_usd,
        outcome=record.outcome.value if record.reason is None else record.reason,
        transcript=record.agent.transcript if record.agent else None,
        verifier_calls=len(record.agent.verifier_calls) if record.agent else 0,
        stop_blocks=record.agent.stop_blocks if record.agent else 0,
    )
    if followup is not None and prior is not None and record.outcome != ChangeOutcome.CHANGED:
        why = record.reason or f"it left {record.outcome.value}"
        log(f"{target.key}: iteration {made.number} ({followup.kind}) did not make a change "
            f"({why}); the change of iteration {len(earlier)} stands")  # fmt: skip
        return prior.model_copy(
            update={
                "iterations": [*earlier, made],
                "reason": f"iteration {made.number} ({followup.kind}) failed: {why}",
                "cost_usd": record.cost_usd,
                "total_cost_usd": record.total_cost_usd,
                "reused": False,
                "duration_s": record.duration_s,
            }
        )
    verdicts = prior.verdicts if followup is not None and prior is not None else []
    return record.model_copy(update={"iterations": [*earlier, made], "verdicts": verdicts})


def _initial_prompt(spec: CampaignSpec) -> str | None:
    transformation = spec.transformation
    return transformation.prompt if isinstance(transformation, AgenticTransformation) else None


def _first_iteration(spec: CampaignSpec, change: ChangeRecord) -> Iteration:
    """The first pass of a change recorded before iterations were kept."""
    return Iteration(
        number=1, prompt=_initial_prompt(spec), head_sha=change.head_sha,
        session_id=change.agent.session_id if change.agent else None,
        diff=change.diff[:ITERATION_DIFF_LIMIT], files_changed=len(change.files),
        cost_usd=change.total_cost_usd, outcome=change.outcome.value,
    )  # fmt: skip


def _make_change(
    spec: CampaignSpec,
    target: Target,
    prior: ChangeRecord | None,
    bench: Workbench,
    base: ChangeRecord,
    log: Log,
    followup: FollowUp | None = None,
) -> ChangeRecord:
    # The branches are read from the mirror's fetch, which the checkout needs anyway: two API
    # reads fewer per target than asking the forge (`Forge.resolve`).
    repo = bench.cache.resolve(
        bench.forge.locate(target.repo), target.base, spec.branch_for(target), bench.mirror_fresh_s
    )
    base = base.model_copy(
        update={
            "base_branch": repo.base_branch,
            "base_sha": repo.base_sha,
            "clone_url": repo.clone_url,
            "forge_branch_sha": repo.branch_sha,
        }
    )
    if followup is not None and (
        prior is None or prior.outcome != ChangeOutcome.CHANGED or not prior.head_sha
    ):
        return base.model_copy(update={"reason": f"no change to {followup.kind}"})
    if followup is not None and not followup.onto_base:
        # The follow-up works on the change as it is, made against the same base.
        assert prior is not None
        base = base.model_copy(
            update={"base_sha": prior.base_sha, "base_branch": prior.base_branch}
        )
        repo = repo.model_copy(update={"base_sha": prior.base_sha})
    elif followup is None and bench.use_cache and _still_current(prior, base, repo.branch_sha,
                                                                 bench):  # fmt: skip
        assert prior is not None
        log(f"{target.key}: change is up to date ({prior.outcome}), nothing to redo")
        # What the forge's branch is now, so that a change published since is not pushed again.
        return prior.model_copy(
            update={"reused": True, "cost_usd": 0.0, "forge_branch_sha": repo.branch_sha}
        )
    base.total_cost_usd = prior.total_cost_usd if prior else 0.0
    transformation = spec.transformation
    agentic = isinstance(transformation, AgenticTransformation)
    if agentic and (followup is None or followup.kind != "partial"):
        if bench.agent is None:
            return base.model_copy(
                update={"reason": "the Claude Code CLI is not installed (run `make agent-cli`)"}
            )
        if not bench.budget.may_start():
            why = f"budget: {bench.budget.describe()}"
            log(f"{target.key}: not attempted, the campaign's budget is spent ({why})")
            if followup is None and prior is not None and prior.outcome != ChangeOutcome.SKIPPED:
                # What the target has stays its record (a failure is not turned into a skip);
                # the next run with budget left tries it again.
                note = f"not retried: {why}"
                reason = f"{prior.reason}; {note}" if prior.reason else None
                return prior.model_copy(update={"reused": True, "cost_usd": 0.0, "reason": reason})
            return base.model_copy(
                update={
                    "outcome": ChangeOutcome.SKIPPED,
                    "reason": why,
                }
            )
    with bench.open_sandbox("change", target) as sandbox:
        ws = sandbox.workspace
        base.isolation = getattr(sandbox, "isolation", None)
        resumes = followup is not None and prior is not None and not followup.onto_base
        start = prior.head_sha if resumes else repo.base_sha  # type: ignore[union-attr]
        mirror = bench.cache.checkout(repo.clone_url, ws, start, spec.branch_for(target))  # type: ignore[arg-type]
        sandbox.readable_paths.append(mirror)
        if resumes:
            _rebase_onto(ws, repo.base_sha, followup)  # type: ignore[arg-type]
        # The workspace's .git (config, hooks, info/) is where a sandbox could plant code for the
        # platform's own git to run: it must come back byte-identical from every sandbox.
        git_before = git_metadata_digest(ws)
        failed_setup, setup = run_setup(spec, target, sandbox, bench, log)
        base.setup = setup
        if git_metadata_digest(ws) != git_before:
            return base.model_copy(update={"reason": "setup modified the workspace's .git"})
        if failed_setup is not None:
            return base.model_copy(
                update={
                    "outcome": ChangeOutcome.SETUP_FAILED,
                    "reason": f"setup failed: {failed_setup.describe_failure()}",
                    "output_tail": failed_setup.output_tail,
                }
            )
        _exclude_untracked(ws)
        git_before = git_metadata_digest(ws)  # with the platform's own info/exclude
        if followup is not None and followup.kind == "partial":
            failure, output = None, f"kept {len(followup.files)} approved file(s)"
        elif agentic:
            base, failure = run_agent(
                spec, target, repo.base_branch, sandbox, bench, base, log, prior, followup
            )
            output = base.agent.final_message if base.agent else ""
        else:
            result = run_command(
                transformation, sandbox, bench, bench.streamer(target, "run", log), target
            )
            failure = None if result.ok else f"transformation failed: {result.describe_failure()}"
            output = result.output_tail
        if git_metadata_digest(ws) != git_before:
            return base.model_copy(
                update={"reason": "the transformation modified the workspace's .git"}
            )
        if failure:
            return base.model_copy(update={"reason": failure, "output_tail": output})
        run_git(["add", "--all"], ws)
        outside = outside_changes(ws, target)  # a workspace's change stays in its directory
        if outside:
            shown = ", ".join(outside[:10]) + (" …" if len(outside) > 10 else "")
            return base.model_copy(
                update={
                    "reason": f"the transformation changed {len(outside)} file(s) outside the "
                    f"workspace {target.path}/ (refused): {shown}",
                    "output_tail": output,
                }
            )
        if not run_git(["status", "--porcelain"], ws).strip():
            log(f"{target.key}: no change")
            return base.model_copy(
                update={
                    "outcome": ChangeOutcome.NO_CHANGE,
                    "output_tail": output,
                    "stale_branch_sha": repo.branch_sha,
                }
            )
        head = _commit(ws, spec, repo.base_sha, repo.branch_sha, bench)
        if head != repo.branch_sha:
            bench.cache.keep(repo.clone_url, ws, head, spec.branch_for(target))
        files, insertions, deletions = _diff_stat(ws, repo.base_sha, head)
        diff = run_git(["diff", "--no-color", "--no-ext-diff", repo.base_sha, head], ws)
        log(f"{target.key}: changed {len(files)} file(s), +{insertions} -{deletions}")
        return base.model_copy(
            update={
                "outcome": ChangeOutcome.CHANGED,
                "head_sha": head,
                "files": files,
                "insertions": insertions,
                "deletions": deletions,
                "diff": diff[:DIFF_LIMIT],
                "diff_truncated": len(diff) > DIFF_LIMIT,
                "output_tail": output,
            }
        )


def _rebase_onto(ws: Path, base_sha: str, followup: FollowUp) -> None:
    """Make the checked-out change (HEAD) a working tree over `base_sha`, so that the new pass
    is committed as the one commit of the campaign branch on its base. A partial approval keeps
    only the approved files' changes."""
    if followup.kind == "partial":
        patch = run_git(["diff", "--binary", "--no-color", base_sha, "HEAD", "--", *followup.files],
                        ws)  # fmt: skip
        run_git(["reset", "--quiet", "--hard", base_sha], ws)
        if patch.strip():
            patch_file = ws / ".git" / "approved.patch"
            patch_file.write_text(patch)
            run_git(["apply", "--index", "--binary", str(patch_file)], ws)
            patch_file.unlink()
        return
    run_git(["reset", "--quiet", "--soft", base_sha], ws)


def _exclude_untracked(ws: Path) -> None:
    """Keep what setup created (a virtualenv, build output) out of the change."""
    created = [
        line[3:].strip('"')
        for line in run_git(["status", "--porcelain", "--untracked-files=normal"], ws).splitlines()
        if line.startswith("?? ")
    ]
    if created:
        exclude = ws / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as handle:
            handle.write("".join(f"/{path}\n" for path in created))


def _still_current(
    prior: ChangeRecord | None, now: ChangeRecord, branch_sha: str | None, bench: Workbench
) -> bool:
    """True when the previous change was made from the same inputs and is still there: on the
    forge, or kept unpublished in the repository cache while the forge's branch has not moved."""
    if prior is None or prior.outcome in (ChangeOutcome.FAILED, ChangeOutcome.SKIPPED):
        return False
    same_inputs = prior.base_sha == now.base_sha and prior.fingerprint == now.fingerprint
    if prior.outcome == ChangeOutcome.NO_CHANGE:
        return same_inputs
    if not same_inputs or prior.head_sha is None:
        return False
    if prior.head_sha == branch_sha:
        return True
    return (
        prior.forge_branch_sha == branch_sha
        and now.clone_url is not None
        and bench.cache.has(now.clone_url, prior.head_sha)
    )


def _commit(
    ws: Path, spec: CampaignSpec, base_sha: str, branch_sha: str | None, bench: Workbench
) -> str:
    """Commit the workspace; reuse the campaign branch's commit when it holds the same tree."""
    tree = run_git(["write-tree"], ws).strip()
    if branch_sha:
        try:
            info = run_git(["log", "-1", "--format=%T %P", branch_sha], ws).split()
        except GitError:
            info = []
        if info == [tree, base_sha]:
            run_git(["reset", "--quiet", "--soft", branch_sha], ws)
            return branch_sha
    summary = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
    message = f"{spec.name}: {summary or 'automated change'}\n\nCampaign: {spec.name}\n"
    run_git(["commit", "--quiet", "--no-verify", "-m", message], ws, env=author_env(*bench.author))
    return run_git(["rev-parse", "HEAD"], ws).strip()


def _diff_stat(ws: Path, base: str, head: str) -> tuple[list[str], int, int]:
    files, insertions, deletions = [], 0, 0
    for line in run_git(["diff", "--numstat", "--no-renames", base, head], ws).splitlines():
        added, removed, name = line.split("\t", 2)
        files.append(name)
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return files, insertions, deletions
