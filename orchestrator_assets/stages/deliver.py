"""The deliver stage: the PR gate, pushing a verified change and opening or updating its PR, with
the PR's title and body from the campaign's templates.

A campaign with `pull_request.max_per_hour` opens at most that many pull requests in any hour,
counting those its records say it opened in the last hour (`Workbench.pr_limiter`). A target
whose pull request would open later than the limiter's patience (5 minutes) is not pushed: it is
held (`pending`, "PR rate limit: next slot at …") and a later run delivers it; updates of
existing pull requests are not limited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.delivery import template
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.automerge import enable_auto_merge
from orchestrator_assets.stages.combine import (
    combines,
    open_pull_request,
    publish_combined,
    update_pull_request,
    withdraw,
)
from orchestrator_assets.stages.owners import review_requests
from orchestrator_assets.stages.publish import preview_holds, previewed_reason
from orchestrator_assets.stages.quality import judge_holds
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    VerificationRecord,
)
from orchestrator_assets.stages.rollout import rollout_hold
from orchestrator_assets.stages.status import ChangeOutcome
from orchestrator_assets.stages.workbench import Log, Workbench, quiet
from resources.forges.base import ForgeError, PullRequestDraft

# what an awaiting_review record says: a draft opened by the run (counted by max_per_hour) or not
AWAITING_DRAFT = "draft pull request #{number} awaits a review"
OPENED_DRAFT = "draft pull request #{number} opened; awaits a review"
RATE_HELD = "PR rate limit: next slot at {at} (pull_request.max_per_hour: {limit})"


def opened_a_pull_request(record: PullRequestRecord) -> bool:
    """Whether the run that wrote `record` opened a pull request (ready, or a draft for review)."""
    if record.outcome == "opened":
        return True
    opened_draft = OPENED_DRAFT.split("}", 1)[1]  # the text after the number
    return record.outcome == "awaiting_review" and (record.reason or "").endswith(opened_draft)


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
    log: Log = quiet,
) -> PullRequestRecord:
    """Open or update the target's pull request when its change passed every verifier."""
    started = time.monotonic()

    def done(**fields) -> PullRequestRecord:
        return PullRequestRecord(duration_s=round(time.monotonic() - started, 3), **fields)

    gone = change is not None and change.outcome == ChangeOutcome.NO_CHANGE
    # A workspace whose change went away leaves its repository's combined PR.
    if gone and (change.stale_branch_sha or combines(spec, target)):  # type: ignore[union-attr]
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
    held = judge_holds(spec, change)
    if held is not None:
        reason = f"held: the judge gave no verdict ({held}); the next run asks again"
        return done(outcome="held", reason=reason, head_sha=head)
    if gate.rejected is not None:
        return _reject(spec, target, head, gate.rejected, bench, log, done)
    if preview_holds(spec, gate.approved, change):  # preview: nothing pushed; `publish` does
        log(f"{target.key}: previewed {head[:12]}, not published")
        return done(outcome="previewed", reason=previewed_reason(change), head_sha=head)
    awaiting = spec.review.policy == "required" and not gate.approved
    if awaiting and not spec.pull_request.draft:
        since = gate.awaiting_since or time.time()
        if gate.awaiting_since is None:
            _notify_awaiting(spec, target, change, bench)
        return done(outcome="awaiting_review", reason="waiting for a review decision",
                    head_sha=head, awaiting_since=since)  # fmt: skip
    try:
        draft = PullRequestDraft(
            head=spec.pr_branch(target),
            base=target.pr_base or change.base_branch or "main",
            title=render_title(spec, target, change).strip(),
            body=render_body(spec, target, change, verification),
            labels=spec.pull_request.labels,
            draft=spec.pull_request.draft,
            **review_requests(spec, target.key, change, bench, log).draft_fields(),
        )
        existing = bench.forge.find_pull_request(target.repo, spec.pr_branch(target))
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
        waiting = rollout_hold(bench.rollout, target.key) if existing is None else None
        if waiting is not None:  # rollout waves: a later wave publishes nothing yet
            log(f"{target.key}: held: {waiting}")
            return done(outcome="held", reason=waiting, head_sha=head)
        limiter = bench.pr_limiter if existing is None else None
        if limiter is not None:  # before the push: a pushed branch already starts CI
            next_slot = limiter.acquire()
            if next_slot is not None:
                at = datetime.fromtimestamp(next_slot, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                reason = RATE_HELD.format(at=at, limit=limiter.per_hour)
                log(f"{target.key}: held: {reason}")
                return done(outcome="held", reason=reason, head_sha=head)
        try:
            pushed = publish(spec, target, change, bench, log)
        except ForgeError:
            if limiter is not None:
                limiter.give_back()
            raise
        if awaiting:  # the draft PR is where the review happens
            draft = draft.model_copy(update={"draft": True})
        elif spec.review.policy == "required" and spec.pull_request.draft:
            draft = draft.model_copy(update={"draft": False})  # approved: published
        if existing is None:
            try:
                pr = open_pull_request(spec, target, draft, change, bench)  # or a sibling's
            except ForgeError:
                if limiter is not None:
                    limiter.give_back()
                raise
            outcome = "opened"
            if not draft.draft:  # `merge:` — the forge merges it once it may (if it can)
                enable_auto_merge(spec, target.key, target.repo, pr.number, bench.forge, log)
        else:
            if not existing.draft:  # published by a human or `prs publish`: never re-drafted
                draft = draft.model_copy(update={"draft": False})
            pr = update_pull_request(spec, target, existing.number, draft, change, bench)
            outcome = "updated" if pr.updated_at != existing.updated_at else "unchanged"
    except ForgeError as exc:
        return done(outcome="failed", reason=str(exc), head_sha=head)
    log(f"{target.key}: pull request #{pr.number} {outcome}: {pr.url}")
    if awaiting:
        if gate.awaiting_since is None:
            _notify_awaiting(spec, target, change, bench, pr.url)
        said = OPENED_DRAFT if outcome == "opened" else AWAITING_DRAFT
        return done(
            outcome="awaiting_review", reason=said.format(number=pr.number),
            number=pr.number, url=pr.url, state=pr.state, head_sha=head, pushed_sha=pushed,
            awaiting_since=gate.awaiting_since or time.time(),
        )  # fmt: skip
    return done(outcome=outcome, number=pr.number, url=pr.url, state=pr.state, head_sha=head,
                pushed_sha=pushed)  # fmt: skip


def publish(
    spec: CampaignSpec, target: Target, change: ChangeRecord, bench: Workbench, log: Log = quiet
) -> str | None:
    """Push the change's head, which passed its gates, from the repository cache to the campaign
    branch; returns it, or None when the forge's branch already holds it."""
    head = change.head_sha
    assert head is not None
    if combines(spec, target):  # workspaces: one branch per repository, combining theirs
        return publish_combined(spec, target, change, bench, log)
    if head == change.forge_branch_sha:
        return None
    clone_url = (
        change.clone_url
        or bench.forge.resolve(target.repo, change.base_branch, spec.branch_for(target)).clone_url
    )
    if not bench.cache.has(clone_url, head):
        raise ForgeError(
            f"{target.repo}: the change {head[:12]} is not in this machine's repository cache "
            f"({bench.cache.path_for(clone_url)}), so it cannot be published; run its change "
            "again (`orchestrator run --no-cache`)"
        )
    bench.forge.push_branch(
        target.repo, bench.cache.path_for(clone_url), spec.branch_for(target), head,
        change.forge_branch_sha,
    )  # fmt: skip
    log(f"{target.key}: published {head[:12]} to {spec.branch_for(target)}")
    return head


def _reject(spec, target: Target, head: str, reason: str, bench: Workbench, log: Log, done):
    """A reviewer rejected the change: the target ends, and a draft PR of it is closed."""
    number = url = state = None
    try:
        existing = bench.forge.find_pull_request(target.repo, spec.pr_branch(target))
        if combines(spec, target) and withdraw(spec, target, bench, log):
            existing = None  # the other workspaces' changes keep their pull request open
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
        existing = bench.forge.find_pull_request(target.repo, spec.pr_branch(target))
        if existing is None or existing.state != "open":
            return done(outcome="no_change", reason="nothing to propose")
        if combines(spec, target) and withdraw(spec, target, bench, log):
            return done(outcome="no_change", reason="nothing to propose")  # others remain in it
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
    return template(spec.pull_request.title).render(**_context(spec, target, change))


def render_body(
    spec: CampaignSpec, target: Target, change: ChangeRecord, verification: VerificationRecord
) -> str:
    """The PR body for a target: the template with summary, verifier table and cost."""
    ctx = _context(spec, target, change, verification)
    return template(spec.pull_request.body).render(**ctx)
