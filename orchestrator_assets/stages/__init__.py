"""The three stages of one target, free of Dagster: make the change, verify it, deliver the PR.

Each takes plain values and returns a record; the Dagster layer only wires them and stores the
records. Each is idempotent: given the record of its previous run it repeats nothing that is done.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator_assets.spec.campaign import (
    TEMPLATES,
    AgenticTransformation,
    CampaignSpec,
    DeterministicTransformation,
    JudgeConfig,
    Target,
)
from orchestrator_assets.stages.budget import Budget
from orchestrator_assets.stages.prompts import build_followup_prompt, build_prompt
from orchestrator_assets.stages.records import (
    AgentSummary,
    ChangeRecord,
    Iteration,
    JudgeVerdict,
    PullRequestRecord,
    ReviewDecision,
    SetupSummary,
    TargetOutcome,
    VerificationRecord,
    VerifierResult,
    decision_applies,
)
from orchestrator_assets.stages.status import ChangeOutcome
from resources.agents.base import Agent, AgentRequest, VerifierTool
from resources.agents.extractors import combine, extract
from resources.agents.judge import JudgeError, Verdict, veto_feedback
from resources.env_cache import DEFAULT_MANIFESTS, EnvCache, inside, manifest_digest, outermost
from resources.forges.base import Forge, ForgeError, PullRequestDraft
from resources.git import GitError, author_env, git_metadata_digest, run_git
from resources.repo_cache import RepoCache
from resources.sandboxes.base import ExecResult, Sandbox, SandboxProvider

Log = Callable[[str], None]
Notify = Callable[[str, str], None]  # (event kind, message)
Judge = Callable[[str, str, JudgeConfig], Verdict]  # (request, diff, config) -> verdict
DIFF_LIMIT = 20_000
ITERATION_DIFF_LIMIT = 8_000  # each iteration keeps its own diff, smaller


@dataclass
class FollowUp:
    """A further pass over a target's existing change: a reviewer's steer (the agent's session
    resumed with a new prompt), a partial approval (the change cut down to some files), or a
    repair after a failed verifier."""

    kind: str  # steer | partial | repair | judge (the kinds of `Iteration`)
    prompt: str | None = None
    files: list[str] = field(default_factory=list)
    decision_id: str | None = None


@dataclass
class Workbench:
    """The outside systems a stage works with."""

    forge: Forge
    cache: RepoCache
    sandboxes: SandboxProvider
    author: tuple[str, str] = ("Campaign Bot", "campaigns@localhost")
    network: bool = False
    default_timeout_s: int = 900
    agent: Agent | None = None
    agent_homes: Path | None = None  # per campaign and target: the agent's session store
    transcripts: Path | None = None  # per campaign and target: the agent's event streams
    budget: Budget = field(default_factory=lambda: Budget(None))
    profile_setup: list = field(default_factory=list)  # setup when the campaign names none
    setup_network: bool = True
    setup_timeout_s: int = 900
    profile_name: str = "default"
    env_cache: EnvCache | None = None
    cache_paths: list[str] = field(default_factory=lambda: [".venv"])
    manifests: list[str] = field(default_factory=lambda: list(DEFAULT_MANIFESTS))
    use_cache: bool = True  # False: redo changes and setup whose inputs did not change
    tags: dict[str, str] = field(default_factory=dict)  # campaign and run, on every sandbox
    environment: str = "local"  # the sandbox's image, part of a change's cache key
    output_lines: int = 200  # lines of each command's output streamed into the run log
    notify: Notify = field(default=lambda kind, message: None)  # optional notifier
    judge: Judge | None = None  # the LLM judge (agentic campaigns with `judge:`)

    def open_sandbox(self, stage: str, target: Target):
        """A sandbox for one stage of one target, tagged with campaign, target and run."""
        return self.sandboxes.open(f"{stage}-{target.key}", {**self.tags, "target": target.key})

    def streamer(self, target: Target, what: str, log: Log):
        """An output callback that passes a command's first lines into the run log."""
        left = [self.output_lines]

        def on_output(line: str) -> None:
            if left[0] > 0:
                left[0] -= 1
                log(f"{target.key} | {what}: {line}")
            elif left[0] == 0:
                left[0] -= 1
                log(f"{target.key} | {what}: … (further output in the output tail)")

        return on_output


def _quiet(_: str) -> None:
    return None


# change ----------------------------------------------------------------------------------------


def make_change(
    spec: CampaignSpec,
    target: Target,
    prior: ChangeRecord | None,
    bench: Workbench,
    log: Log = _quiet,
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
        branch=spec.branch_name,
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
    return _with_iteration(spec, prior, record, followup, log)


def _with_iteration(
    spec: CampaignSpec,
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
        log(f"{record.repo}: iteration {made.number} ({followup.kind}) did not make a change "
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
    repo = bench.forge.resolve(target.repo, target.base, spec.branch_name)
    base = base.model_copy(
        update={
            "base_branch": repo.base_branch,
            "base_sha": repo.base_sha,
            "clone_url": repo.clone_url,
            "forge_branch_sha": repo.branch_sha,
        }
    )
    if followup is not None:
        if prior is None or prior.outcome != ChangeOutcome.CHANGED or not prior.head_sha:
            return base.model_copy(update={"reason": f"no change to {followup.kind}"})
        # The follow-up works on the change as it is, made against the same base.
        base = base.model_copy(
            update={"base_sha": prior.base_sha, "base_branch": prior.base_branch}
        )
        repo = repo.model_copy(update={"base_sha": prior.base_sha})
    elif bench.use_cache and _still_current(prior, base, repo.branch_sha, bench):
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
        start = prior.head_sha if followup is not None and prior is not None else repo.base_sha
        mirror = bench.cache.checkout(repo.clone_url, ws, start, spec.branch_name)  # type: ignore[arg-type]
        sandbox.readable_paths.append(mirror)
        if followup is not None:
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
            base, failure = _run_agent(
                spec, target, repo.base_branch, sandbox, bench, base, log, prior, followup
            )
            output = base.agent.final_message if base.agent else ""
        else:
            result = _run_command(
                transformation, sandbox, bench, bench.streamer(target, "run", log)
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
            bench.cache.keep(repo.clone_url, ws, head, spec.branch_name)
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


def run_setup(
    spec: CampaignSpec, target: Target, sandbox: Sandbox, bench: Workbench, log: Log
) -> tuple[ExecResult | None, SetupSummary | None]:
    """Prepare the workspace: restore the cached environment, or run the target's setup
    commands (and cache what they produced). Returns the command that failed, if one did."""
    commands = spec.setup_for(target, bench.profile_setup)
    if not commands:
        return None, None
    started = time.monotonic()
    ws = sandbox.workspace
    cache_paths = spec.cache_paths if spec.cache_paths is not None else bench.cache_paths
    # A target's own cache_paths are cached besides the campaign's (or the profile's).
    cache_paths = [*cache_paths, *(p for p in target.cache_paths if p not in cache_paths)]
    inputs = {
        "target": target.key,
        "setup": commands,
        "profile": bench.profile_name,
        "manifests": manifest_digest(ws, bench.manifests),
        "paths": cache_paths,
        # Entries hold what setup wrote outside the tracked files too; this keeps entries
        # made before that (only `paths`: a hit without e.g. a generated `_version.py`) unused.
        "outputs": "untracked",
    }
    if bench.environment != "local":  # keeps the local sandbox's keys as they were
        inputs["environment"] = bench.environment
    key = EnvCache.key(inputs)
    if bench.env_cache is not None and cache_paths and bench.use_cache:
        hit = bench.env_cache.restore(key, ws)
        if hit is not None:
            took = round(time.monotonic() - started, 3)
            log(f"{target.key}: environment restored from the cache ({hit.size_bytes} bytes)")
            summary = SetupSummary(cache="hit", key=key, commands=len(commands), duration_s=took,
                                   size_bytes=hit.size_bytes)  # fmt: skip
            return None, summary
    caching = bench.env_cache is not None and bool(cache_paths)
    before = _setup_outputs(ws) if caching else _SetupOutputs(set(), set())
    for argv in commands:
        result = sandbox.exec(
            argv,
            timeout_s=bench.setup_timeout_s,
            network=bench.setup_network,
            on_output=bench.streamer(target, "setup", log),
        )
        if not result.ok:
            log(f"{target.key}: setup FAILED: {result.describe_failure()}")
            return result, None
    stored = None
    if bench.env_cache is not None and caching:
        after = _setup_outputs(ws)
        # A hit must leave the workspace as setup would: keep whatever setup wrote outside the
        # tracked files (a generated `_version.py`, an `*.egg-info`), not only `cache_paths`.
        written = outermost(sorted(after.untracked - before.untracked))
        covered = outermost(cache_paths)
        extra = [p for p in written if not inside(p, covered)]
        if extra:
            log(f"{target.key}: setup wrote {_names(extra)} besides cache_paths; cached with "
                "the environment")  # fmt: skip
        changed = sorted(after.modified - before.modified)
        if changed:
            log(f"{target.key}: WARNING: setup changed tracked file(s) {_names(changed)}; a "
                "cache hit does not redo that unless `cache_paths` names them")  # fmt: skip
        stored = bench.env_cache.store(key, ws, [*cache_paths, *written], inputs)
    took = round(time.monotonic() - started, 3)
    log(f"{target.key}: setup done ({len(commands)} command(s), {took:.1f}s)")
    return None, SetupSummary(
        cache="miss" if stored is not None else "off",
        key=key, commands=len(commands), duration_s=took,
        size_bytes=stored.size_bytes if stored else 0,
    )  # fmt: skip


@dataclass
class _SetupOutputs:
    """What a workspace holds besides its committed tree."""

    untracked: set[str]  # untracked or ignored paths (a wholly untracked folder as one path)
    modified: set[str]  # tracked files changed in the working tree


def _setup_outputs(ws: Path) -> _SetupOutputs:
    """The workspace's untracked/ignored paths and modified tracked files (NUL-separated
    listings: a path may hold any character)."""
    others = run_git(["ls-files", "-z", "--others", "--directory"], ws)
    modified = run_git(["diff", "--name-only", "-z"], ws)
    return _SetupOutputs(
        untracked={p.rstrip("/") for p in others.split("\0") if p.strip("/")},
        modified={p for p in modified.split("\0") if p},
    )


def _names(paths: list[str], limit: int = 10) -> str:
    """Paths for a log line, at most `limit` of them."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


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


def _run_command(
    transformation: DeterministicTransformation,
    sandbox: Sandbox,
    bench: Workbench,
    on_output: Callable[[str], None],
) -> ExecResult:
    timeout_s = transformation.timeout_s or bench.default_timeout_s
    if transformation.image:
        return sandbox.run_image(
            transformation.image,
            transformation.image_args(),
            entrypoint=transformation.entrypoint(),
            env=transformation.env,
            timeout_s=timeout_s,
            network=bench.network,
            on_output=on_output,
        )
    return sandbox.exec(
        transformation.argv(),
        env=transformation.env,
        timeout_s=timeout_s,
        network=bench.network,
        on_output=on_output,
    )


def _run_agent(
    spec: CampaignSpec,
    target: Target,
    base_branch: str,
    sandbox: Sandbox,
    bench: Workbench,
    base: ChangeRecord,
    log: Log,
    prior: ChangeRecord | None = None,
    followup: FollowUp | None = None,
) -> tuple[ChangeRecord, str | None]:
    """Run the agent in the sandbox; the record gains its cost and summary, and why it failed.

    A follow-up resumes the session that made `prior`, so the agent keeps the conversation.
    """
    assert bench.agent is not None and isinstance(spec.transformation, AgenticTransformation)
    settings = spec.transformation
    share = spec.budget_usd / len(spec.targets) if spec.budget_usd else None
    limits = [x for x in (settings.max_budget_usd, share) if x]
    home_root = bench.agent_homes or sandbox.workspace.parent / "agent-home"
    resume = followup is not None and prior is not None and prior.agent is not None
    number = (prior.iteration or 1) + 1 if resume and prior is not None else 1
    request = AgentRequest(
        prompt=build_followup_prompt(spec, target, followup)  # type: ignore[arg-type]
        if resume
        else build_prompt(spec, target, base_branch),
        session_id=prior.agent.session_id if resume else str(uuid.uuid4()),  # type: ignore[union-attr]
        resume=resume,
        model=settings.model,
        max_turns=settings.max_turns,
        max_budget_usd=min(limits) if limits else None,
        allowed_tools=settings.allowed_tools,
        timeout_s=settings.timeout_s or bench.default_timeout_s,
        home=home_root / spec.id / target.key,
        full_network=bench.network,
        verifiers=[
            VerifierTool(name=v.name, argv=v.argv(), timeout_s=v.timeout_s, extractor=v.extractor)
            for v in spec.verifiers_for(target)
        ],
        verifier_tools=settings.verifier_tools,
        max_stop_blocks=settings.max_stop_blocks,
        feedback_chars=settings.feedback_chars,
        disallowed_tools=settings.disallowed_tools,
    )
    result = bench.agent.run(sandbox, request, lambda line: log(f"{target.key}: {line}"))
    bench.budget.add(result.cost_usd)
    transcript = None
    if bench.transcripts is not None:
        name = result.session_id + (f".{number}" if number > 1 else "")
        path = bench.transcripts / spec.id / target.key / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e) + "\n" for e in result.transcript))
        transcript = str(path)
    summary = AgentSummary(
        session_id=result.session_id,
        model=settings.model or next(iter(result.model_usage), None),
        num_turns=result.num_turns,
        duration_s=result.duration_s,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cache_read_tokens=result.cache_read_tokens,
        cache_write_tokens=result.cache_write_tokens,
        model_usage={k: v.model_dump() for k, v in result.model_usage.items()},
        final_message=result.final_message,
        transcript=transcript,
        verifier_calls=[
            {"name": c.name, "passed": c.passed, "exit_code": c.exit_code, "chars": c.chars}
            for c in result.verifier_calls
        ],
        gate_decisions=[
            {"decision": d.decision, "why": d.why, "failing": d.failing}
            for d in result.gate_decisions
        ],
    )
    if summary.verifier_calls or summary.gate_decisions:
        log(f"{target.key}: agent ran {len(summary.verifier_calls)} verifier tool call(s); "
            f"the stop gate sent it back {summary.stop_blocks} time(s)")  # fmt: skip
    log(f"{target.key}: agent {'done' if result.ok else 'FAILED'} in {result.num_turns} turn(s), "
        f"${result.cost_usd:.4f}")  # fmt: skip
    record = base.model_copy(
        update={
            "agent": summary,
            "cost_usd": result.cost_usd,
            "total_cost_usd": base.total_cost_usd + result.cost_usd,
        }
    )
    return record, None if result.ok else result.error


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


# verification ----------------------------------------------------------------------------------


def verify_change(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord | None,
    prior: VerificationRecord | None,
    bench: Workbench,
    log: Log = _quiet,
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


# pull request ----------------------------------------------------------------------------------


@dataclass
class Gate:
    """What decides whether a target may get a PR: its checks and its review."""

    evaluations: dict[str, tuple[bool, str | None]]  # verifier -> (passed, head sha checked)
    approved: bool = False
    rejected: str | None = None  # why a reviewer rejected the change
    awaiting_since: float | None = None  # when the change began to wait for its review


def deliver_pull_request(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord | None,
    verification: VerificationRecord | None,
    gate: Gate,
    bench: Workbench,
    log: Log = _quiet,
) -> PullRequestRecord:
    """Open or update the target's pull request when its change passed every verifier."""
    started = time.monotonic()

    def done(**fields) -> PullRequestRecord:
        return PullRequestRecord(duration_s=round(time.monotonic() - started, 3), **fields)

    if change is not None and change.outcome == ChangeOutcome.NO_CHANGE and change.stale_branch_sha:
        return _close_stale(spec, target, change, bench, log, done)
    if change is None or change.outcome != ChangeOutcome.CHANGED or not change.head_sha:
        return done(outcome="no_change", reason="nothing to propose")
    head = change.head_sha
    failing = [
        v.name
        for v in spec.verifiers_for(target)
        if gate.evaluations.get(v.check_name, (False, None)) != (True, head)
    ]
    if failing or verification is None or verification.head_sha != head:
        reason = f"verifiers not passed for {head[:8]}: {', '.join(failing) or 'verification'}"
        return done(outcome="blocked", reason=reason, head_sha=head)
    verdict = change.verdict
    if verdict is not None and verdict.verdict == "veto":
        why = "; ".join(f"{r.get('kind')}: {r.get('detail')}" for r in verdict.reasons)
        return done(outcome="blocked", reason=f"judge vetoed: {why}", head_sha=head)
    held = _judge_holds(spec, change)
    if held is not None:
        reason = f"held: the judge gave no verdict ({held}); the next run asks again"
        return done(outcome="held", reason=reason, head_sha=head)
    if gate.rejected is not None:
        return _reject(spec, target, head, gate.rejected, bench, log, done)
    awaiting = spec.review.policy == "required" and not gate.approved
    if awaiting and not spec.pull_request.draft:
        since = gate.awaiting_since or time.time()
        if gate.awaiting_since is None:
            _notify_awaiting(spec, target, change, bench)
        return done(outcome="awaiting_review", reason="waiting for a review decision",
                    head_sha=head, awaiting_since=since)  # fmt: skip
    try:
        draft = PullRequestDraft(
            head=spec.branch_name,
            base=target.pr_base or change.base_branch or "main",
            title=render_title(spec, target, change).strip(),
            body=render_body(spec, target, change, verification),
            labels=spec.pull_request.labels,
            draft=spec.pull_request.draft,
            reviewers=spec.pull_request.reviewers,
        )
        existing = bench.forge.find_pull_request(target.repo, spec.branch_name)
        if existing is not None and existing.state == "closed" and spec.pull_request.reopen:
            existing = bench.forge.reopen_pull_request(target.repo, existing.number)
            log(f"{target.key}: pull request #{existing.number} reopened (pull_request.reopen)")
        if existing is not None and existing.state != "open":
            log(f"{target.key}: pull request #{existing.number} is {existing.state}; not reopened")
            return done(
                outcome="not_reopened",
                number=existing.number,
                url=existing.url,
                state=existing.state,
                head_sha=head,
            )
        pushed = publish(spec, target, change, bench, log)
        if awaiting:  # the draft PR is where the review happens
            draft = draft.model_copy(update={"draft": True})
        elif spec.review.policy == "required" and spec.pull_request.draft:
            draft = draft.model_copy(update={"draft": False})  # approved: published
        if existing is None:
            pr = bench.forge.create_pull_request(target.repo, draft)
            outcome = "opened"
        else:
            if not existing.draft:  # published by a human or `prs publish`: never re-drafted
                draft = draft.model_copy(update={"draft": False})
            pr = bench.forge.update_pull_request(target.repo, existing.number, draft)
            outcome = "updated" if pr.updated_at != existing.updated_at else "unchanged"
    except ForgeError as exc:
        return done(outcome="failed", reason=str(exc), head_sha=head)
    log(f"{target.key}: pull request #{pr.number} {outcome}: {pr.url}")
    if awaiting:
        if gate.awaiting_since is None:
            _notify_awaiting(spec, target, change, bench, pr.url)
        return done(
            outcome="awaiting_review", reason=f"draft pull request #{pr.number} awaits a review",
            number=pr.number, url=pr.url, state=pr.state, head_sha=head, pushed_sha=pushed,
            awaiting_since=gate.awaiting_since or time.time(),
        )  # fmt: skip
    return done(outcome=outcome, number=pr.number, url=pr.url, state=pr.state, head_sha=head,
                pushed_sha=pushed)  # fmt: skip


def publish(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, log: Log = _quiet
) -> str | None:
    """Push the change's head, which passed its gates, from the repository cache to the campaign
    branch; returns it, or None when the forge's branch already holds it."""
    head = change.head_sha
    assert head is not None
    if head == change.forge_branch_sha:
        return None
    clone_url = (
        change.clone_url
        or bench.forge.resolve(target.repo, change.base_branch, spec.branch_name).clone_url
    )
    if not bench.cache.has(clone_url, head):
        raise ForgeError(
            f"{target.repo}: the change {head[:12]} is not in this machine's repository cache "
            f"({bench.cache.path_for(clone_url)}), so it cannot be published; run its change "
            "again (`orchestrator run --no-cache`)"
        )
    bench.forge.push_branch(
        target.repo, bench.cache.path_for(clone_url), spec.branch_name, head,
        change.forge_branch_sha,
    )  # fmt: skip
    log(f"{target.key}: published {head[:12]} to {spec.branch_name}")
    return head


def _reject(spec, target: Target, head: str, reason: str, bench: Workbench, log: Log, done):
    """A reviewer rejected the change: the target ends, and a draft PR of it is closed."""
    number = url = state = None
    try:
        existing = bench.forge.find_pull_request(target.repo, spec.branch_name)
        if existing is not None and existing.state == "open":
            comment = f"Closed: the change of campaign `{spec.name}` was rejected: {reason}"
            pr = bench.forge.close_pull_request(target.repo, existing.number, comment)
            number, url, state = pr.number, pr.url, pr.state
            log(f"{target.key}: pull request #{pr.number} closed: rejected")
    except ForgeError as exc:
        return done(outcome="failed", reason=f"cannot close the rejected PR: {exc}", head_sha=head)
    log(f"{target.key}: rejected: {reason}")
    return done(outcome="rejected", reason=reason, head_sha=head, number=number, url=url,
                state=state)  # fmt: skip


def _notify_awaiting(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, url=None
) -> None:
    """Tell the reviewers a change waits for them, with the start of its diff."""
    snippet = "\n".join(change.diff.splitlines()[:20])
    where = f" ({url})" if url else ""
    bench.notify(
        "awaiting_review",
        f"*{spec.name}*: `{target.key}` awaits review{where}: {len(change.files)} file(s), "
        f"+{change.insertions} -{change.deletions}. Decide with `orchestrator approve|reject|"
        f"steer {spec.name} {target.key}`.\n```\n{snippet}\n```",
    )


def _close_stale(spec, target, change: ChangeRecord, bench: Workbench, log: Log, done):
    """The change is gone (the base already has it, or the campaign no longer changes this
    repository): an open PR of the campaign branch is closed with a comment saying why."""
    try:
        existing = bench.forge.find_pull_request(target.repo, spec.branch_name)
        if existing is None or existing.state != "open":
            return done(outcome="no_change", reason="nothing to propose")
        base = (change.base_sha or "")[:8]
        comment = (
            f"Closed by campaign `{spec.name}`: on `{change.base_branch}` at {base} the "
            "transformation no longer changes anything, so this pull request is not needed."
        )
        pr = bench.forge.close_pull_request(target.repo, existing.number, comment)
    except ForgeError as exc:
        return done(outcome="failed", reason=f"cannot close the stale pull request: {exc}")
    log(f"{target.key}: pull request #{pr.number} closed: the change is gone")
    return done(
        outcome="closed_stale", number=pr.number, url=pr.url, state=pr.state,
        reason="the change is no longer needed",
    )  # fmt: skip


def _context(spec: CampaignSpec, target: Target, change: ChangeRecord, verification=None) -> dict:
    rows = ["| verifier | result | duration |", "| --- | --- | --- |"]
    for r in verification.results if verification else []:
        rows.append(f"| {r.name} | {'passed' if r.passed else 'failed'} | {r.duration_s:.1f}s |")
    files = "\n".join(f"- `{f}`" for f in change.files[:50])
    more = f"\n- … and {len(change.files) - 50} more" if len(change.files) > 50 else ""
    summary = (
        f"Changes {len(change.files)} file(s) (+{change.insertions} -{change.deletions}) "
        f"on `{change.base_branch}`:\n\n{files}{more}"
    )
    return {
        "campaign": spec,
        "target": target,
        "change": change,
        "summary": summary,
        "verifier_table": "\n".join(rows) if verification and verification.results else "none",
        "cost_usd": change.cost_usd,
    }


def render_title(spec: CampaignSpec, target: Target, change: ChangeRecord) -> str:
    """The PR title for a target."""
    return TEMPLATES.from_string(spec.pull_request.title).render(**_context(spec, target, change))


def render_body(
    spec: CampaignSpec, target: Target, change: ChangeRecord, verification: VerificationRecord
) -> str:
    """The PR body for a target: the template with summary, verifier table and cost."""
    ctx = _context(spec, target, change, verification)
    return TEMPLATES.from_string(spec.pull_request.body).render(**ctx)


# one target through the stages ------------------------------------------------------------------


def gate_from(
    spec: CampaignSpec, target: Target, verification: VerificationRecord, prior: Gate
) -> Gate:
    """The PR gate as the verifier checks of `verification` evaluate it (review as before)."""
    results = {r.name: r.passed for r in verification.results}
    return Gate(
        evaluations={
            v.check_name: (results.get(v.name, False), verification.head_sha)
            for v in spec.verifiers_for(target)
        },
        approved=prior.approved,
        rejected=prior.rejected,
        awaiting_since=prior.awaiting_since,
    )


def followup_for(decision: ReviewDecision | None, change: ChangeRecord | None) -> FollowUp | None:
    """The further pass a review decision asks for: a steer, or an approval of some files."""
    if not decision_applies(decision, change) or change is None or decision is None:
        return None
    if any(i.decision_id == decision.id for i in change.iterations):
        return None  # carried out already
    if decision.decision == "steer":
        return FollowUp("steer", decision.prompt, list(decision.files), decision.id)
    if (
        decision.decision == "approve"
        and decision.files
        and set(decision.files) < set(change.files)
    ):
        return FollowUp("partial", None, list(decision.files), decision.id)
    return None


def review_gate(
    decision: ReviewDecision | None,
    change: ChangeRecord | None,
    prior_pr: PullRequestRecord | None,
) -> Gate:
    """The review half of the PR gate for the target's current change."""
    gate = Gate(evaluations={})
    if change is None or not change.head_sha:
        return gate
    if decision_applies(decision, change) and decision is not None:
        gate.approved = decision.decision == "approve"
        if decision.decision == "reject":
            gate.rejected = f"{decision.reason or 'no reason given'} ({decision.actor})"
    if (
        prior_pr is not None
        and prior_pr.outcome == "awaiting_review"
        and prior_pr.head_sha == change.head_sha
    ):
        gate.awaiting_since = prior_pr.awaiting_since
    return gate


def advance_target(
    spec: CampaignSpec,
    target: Target,
    stages: set[str],
    prior_change: ChangeRecord | None,
    prior_verification: VerificationRecord | None,
    prior_gate: Gate | None,
    bench: Workbench,
    log: Log = _quiet,
    decision: ReviewDecision | None = None,
    prior_pr: PullRequestRecord | None = None,
) -> TargetOutcome:
    """Take one target through the selected stages, each as soon as the one before is done.

    A stage that is not selected uses the target's previous record (and, for the PR, the gate
    its recorded check evaluations give). The target's newest review `decision` is applied: a
    steer or a partial approval makes one more pass over the change first. An agentic change
    whose verification fails (or whose diff the judge vetoes) is sent back to its agent, up to
    the campaign's `repair_attempts`.
    """
    outcome = TargetOutcome()
    change = prior_change
    if "change" in stages:
        followup = followup_for(decision, prior_change)
        if followup is not None:
            log(f"{target.key}: applying the review decision: {decision.describe()}")  # type: ignore[union-attr]
        change = outcome.change = make_change(spec, target, prior_change, bench, log, followup)
    verification = prior_verification
    review = review_gate(decision, change, prior_pr)
    gate = prior_gate or Gate(evaluations={})
    gate = Gate(gate.evaluations, review.approved, review.rejected, review.awaiting_since)
    if "verification" in stages:
        verification = verify_change(spec, target, change, prior_verification, bench, log)
        if "change" in stages and change is not None:
            change, verification = _quality_loop(spec, target, change, verification, bench, log)
            outcome.change = change
        outcome.verification = verification
        gate = gate_from(spec, target, verification, gate)
    if "pull_request" in stages:
        outcome.pull_request = deliver_pull_request(
            spec, target, change, verification, gate, bench, log
        )
    return outcome


def _quality_loop(
    spec: CampaignSpec,
    target: Target,
    change: ChangeRecord,
    verification: VerificationRecord,
    bench: Workbench,
    log: Log,
) -> tuple[ChangeRecord, VerificationRecord]:
    """Repair attempts and the judge for an agentic change, within one run of the target.

    The platform's verification stays the final gate: a failure resumes the agent's session
    with the trimmed failure; once it passes the judge (when configured) compares the diff with
    the request, and a veto resumes the agent with its reasons (or ends the target). Each of
    these counts against `repair_attempts`.
    """
    settings = spec.transformation
    if not isinstance(settings, AgenticTransformation) or change.agent is None:
        return change, verification
    left = settings.repair_attempts - _repairs_since_change(change)
    while True:
        _note_verification(change, verification)
        if not verification.passed:
            failed = [r for r in verification.results if not r.passed]
            if not failed or verification.setup_failed or left <= 0:
                return change, verification
            left -= 1
            feedback = _failure_feedback(spec, target, verification, settings.feedback_chars)
            log(f"{target.key}: verification failed; repair attempt "
                f"{settings.repair_attempts - left}/{settings.repair_attempts}")  # fmt: skip
            followup = FollowUp("repair", feedback)
        else:
            if settings.judge is None or bench.judge is None:
                return change, verification
            if change.verdict is not None and _judge_holds(spec, change) is None:
                return change, verification
            change = _judge(spec, target, change, bench, log)
            verdict = change.verdict
            assert verdict is not None
            change.iterations[-1].verdict = verdict.verdict
            if verdict.verdict != "veto" or settings.judge.on_veto == "fail" or left <= 0:
                return change, verification
            left -= 1
            log(f"{target.key}: the judge vetoed; repair attempt "
                f"{settings.repair_attempts - left}/{settings.repair_attempts}")  # fmt: skip
            followup = FollowUp("judge", veto_feedback(verdict.reasons))
        before = change.head_sha
        change = make_change(spec, target, change, bench, log, followup)
        if change.head_sha == before:  # the attempt failed or changed nothing: stop here
            return change, verification
        verification = verify_change(spec, target, change, None, bench, log)


def _repairs_since_change(change: ChangeRecord) -> int:
    """Repair passes already made since the last fresh change or human steer."""
    count = 0
    for it in reversed(change.iterations):
        if it.kind not in ("repair", "judge"):
            break
        count += 1
    return count


def _note_verification(change: ChangeRecord, verification: VerificationRecord) -> None:
    """Keep the platform's verifier results on the iteration that made this head."""
    if change.iterations and verification.head_sha == change.head_sha:
        change.iterations[-1].verification = ", ".join(
            f"{r.name}:{'pass' if r.passed else 'fail'}" for r in verification.results
        ) or (verification.error or "")


def _failure_feedback(
    spec: CampaignSpec, target: Target, verification: VerificationRecord, max_chars: int
) -> str:
    """What failed, trimmed for the agent: failing tests, first errors with file and line."""
    verifiers = {v.name: v for v in spec.verifiers_for(target)}
    texts = []
    for r in verification.results:
        v = verifiers.get(r.name)
        texts.append(
            extract(
                r.output_tail, r.exit_code, kind=v.extractor if v else "auto",
                argv=v.argv() if v else [], name=r.name, max_chars=max_chars,
                timed_out=r.timed_out, duration_s=r.duration_s, cwd="/workspace",
            )
        )  # fmt: skip
    return (
        "The platform ran the verifiers on your change in a fresh sandbox:\n\n"
        + combine(texts, max_chars)
        + "\n\nFix the failure (do not disable, skip or weaken tests)."
    )


def _judge_holds(spec: CampaignSpec, change: ChangeRecord) -> str | None:
    """Why the judge gave no verdict on the change's head, when the campaign holds the PR until
    it does (`judge.on_error: hold`); None when nothing holds it."""
    settings = spec.transformation
    verdict = change.verdict
    if (
        isinstance(settings, AgenticTransformation)
        and settings.judge is not None
        and verdict is not None
        and verdict.verdict == "error"
        and (settings.judge.on_error == "hold" or verdict.over_budget)
    ):
        return verdict.error or "no answer"
    return None


def _judge(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, log: Log
) -> ChangeRecord:
    """Ask the judge about the change's diff; its verdict and cost join the change record."""
    settings = spec.transformation
    assert isinstance(settings, AgenticTransformation) and settings.judge is not None
    assert bench.judge is not None and change.head_sha is not None
    if not bench.budget.may_start():  # the judge spends too: it asks the budget like an agent
        why = f"budget: {bench.budget.describe()}"
        log(f"{target.key}: the judge is not asked, the campaign's budget is spent ({why})")
        record = JudgeVerdict(
            head_sha=change.head_sha, verdict="error", error=why, over_budget=True
        )
        return change.model_copy(update={"verdicts": [*change.verdicts, record]})
    try:
        verdict = bench.judge(settings.prompt, change.diff, settings.judge)
    except JudgeError as exc:
        log(f"{target.key}: the judge gave no verdict: {exc}")
        record = JudgeVerdict(head_sha=change.head_sha, verdict="error", error=str(exc)[:500])
        return change.model_copy(update={"verdicts": [*change.verdicts, record]})
    record = JudgeVerdict(
        head_sha=change.head_sha, verdict=verdict.verdict,
        reasons=[r.model_dump() for r in verdict.reasons], summary=verdict.summary,
        model=verdict.model, input_tokens=verdict.input_tokens,
        output_tokens=verdict.output_tokens, cost_usd=verdict.cost_usd,
    )  # fmt: skip
    bench.budget.add(verdict.cost_usd)
    why = "; ".join(f"{r.kind}: {r.detail}" for r in verdict.reasons)
    log(f"{target.key}: judge {verdict.verdict}" + (f" ({why})" if why else "")
        + f", ${verdict.cost_usd:.4f}")  # fmt: skip
    return change.model_copy(
        update={
            "verdicts": [*change.verdicts, record],
            "cost_usd": change.cost_usd + verdict.cost_usd,
            "total_cost_usd": change.total_cost_usd + verdict.cost_usd,
            "reused": False,
        }
    )
