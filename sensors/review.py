"""The review loop in Dagster: a job that records a decision, and a sensor that acts on them.

The `<campaign>_review` job records one decision from its run config, so a reviewer can decide
from the UI's launchpad or with `dagster job launch`. The `<campaign>_review` sensor:

- turns the GitHub review of a draft pull request (for a campaign that reviews in draft PRs)
  into a decision: approved → approve; changes requested → steer (agentic) or reject;
- expires a review that was not given within `review.timeout` (the target is rejected with the
  reason `timeout`, and a notification goes out);
- requests a run of the campaign's targets job for each target with a new decision, which
  applies it (approve → pull request, reject → closed, steer → the change runs again).

Each run request's key is the decision's id, so a decision is applied once.
"""

import json
import time
from collections.abc import Callable
from typing import cast, get_args

import dagster as dg
from pydantic import Field

from orchestrator_assets.assets import history
from orchestrator_assets.assets.dagster_private import UnresolvedAssetJobDefinition
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.stages import review
from orchestrator_assets.stages.records import DecisionSource, ReviewDecision, decision_applies
from resources.forges.base import Forge
from resources.notify import Notify, no_notifier

REVIEW_TAG = "orchestrator/review"  # on a run that applies a decision: the decision's id
SYSTEM_ACTOR = "orchestrator"


class ReviewConfig(dg.Config):
    """A review decision, as given in the launchpad or a `dagster job launch` config file."""

    target: str = Field(description="the target's key (its slug), e.g. acme__alpha")
    decision: str = Field(description="approve, reject or steer")
    reason: str = Field(default="", description="why (kept in the event log)")
    files: list[str] = Field(default=[], description="approve: only these; steer: only these")
    prompt: str = Field(default="", description="steer: what the agent should do")
    actor: str = Field(default="launchpad", description="who decides")


def build_review_job(spec: CampaignSpec) -> dg.JobDefinition:
    """The job that records one review decision for one target of the campaign."""

    @dg.op(name=f"{spec.id}__review", tags={"campaign": spec.name})
    def record(context: dg.OpExecutionContext, config: ReviewConfig) -> None:
        if config.decision not in ("approve", "reject", "steer"):
            raise dg.Failure(
                f"decision: {config.decision!r} is not one of approve, reject, steer",
                allow_retries=False,
            )
        decision = ReviewDecision(
            decision=config.decision,  # type: ignore[arg-type]
            target=config.target,
            actor=config.actor or "launchpad",
            reason=config.reason or None,
            files=list(config.files),
            prompt=config.prompt or None,
            source="job",
        )
        try:
            decision = review.prepare_decision(context.instance, spec, decision)
        except OrchestratorError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
        context.log_event(review.decision_observation(spec, decision))
        context.log.info(f"recorded: {decision.describe()}")

    @dg.job(
        name=f"{spec.id}_review",
        tags={"campaign": spec.name},
        description=f"Record a review decision (approve, reject or steer) for one target of "
        f"campaign {spec.name}; the review sensor then applies it.",
    )
    def review_job() -> None:
        record()

    return review_job


def build_review_sensor(
    spec: CampaignSpec,
    targets_job: "dg.JobDefinition | UnresolvedAssetJobDefinition",
    forge_getter: Callable[[], Forge],
    *,
    notifier_getter: Callable[[], Notify] = lambda: no_notifier,
    minimum_interval_seconds: int = 30,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """The sensor that turns review decisions, draft-PR reviews and timeouts into runs."""
    timeout_s = review.parse_duration(spec.review.timeout) if spec.review.timeout else None
    drafts = spec.review.policy == "required" and spec.pull_request.draft

    @dg.sensor(
        name=f"{spec.id}_review",
        job=targets_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Applies the review decisions of campaign {spec.name} (from the CLI, the "
        "review job, GitHub reviews of draft PRs, and review timeouts).",
    )
    def review_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        after = _after(context.cursor)
        if spec.review.policy == "required":
            waiting = review.awaiting_targets(instance, spec)
            if drafts and waiting:
                _decide_from_drafts(context, spec, waiting, forge_getter)
            if timeout_s is not None:
                _expire(context, spec, waiting, timeout_s, clock(), notifier_getter())
        decisions, newest = review.decisions_since(instance, spec, after)
        latest = review.latest_decisions(instance, spec, sorted({d.target for d in decisions}))
        changes = history.latest_changes(instance, spec, sorted({d.target for d in decisions}))
        requests = []
        for decision in decisions:
            current = latest.get(decision.target)
            if current is None or current.id != decision.id:
                continue  # a newer decision replaced it
            if spec.target(decision.target) is None:
                continue
            if decision.source == "publish":  # `orchestrator publish` runs the PR stage itself
                continue
            if not decision_applies(decision, changes.get(decision.target)):
                context.log.info(f"not applied (the change moved on): {decision.describe()}")
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"review-{decision.id}",
                    partition_key=decision.target,
                    tags={
                        "campaign": spec.name,
                        "target": decision.target,
                        REVIEW_TAG: decision.id,
                    },
                )
            )
            context.log.info(f"applying: {decision.describe()}")
        cursor = json.dumps({"after": newest})
        if not requests:
            return dg.SensorResult(skip_reason="no new review decision", cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return review_sensor


def _after(cursor: str | None) -> int:
    try:
        return int(json.loads(cursor or "{}").get("after", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


def _decide_from_drafts(
    context: dg.SensorEvaluationContext,
    spec: CampaignSpec,
    waiting: dict[str, review.Awaiting],
    forge_getter: Callable[[], Forge],
) -> None:
    """Record a decision for each draft PR whose review on its code host approved or asked for
    changes."""
    forge = forge_getter()
    for key, awaiting in waiting.items():
        pr = awaiting.pull_request
        target = spec.target(key)
        if target is None or pr.number is None:
            continue
        try:
            status = forge.pull_request_status(target.repo, pr.number)
        except Exception as exc:  # one PR's failure must not stop the others
            context.log.warning(f"{key}: reading draft pull request #{pr.number} failed: {exc}")
            continue
        if status.head_sha and status.head_sha != pr.head_sha:
            continue  # the review is of an older push
        by = sorted(login for login, state in status.reviews.items() if state == status.review)
        source = review_source(forge, target.repo)
        actor = ", ".join(by) or source
        if status.review == "approved":
            decision = ReviewDecision(
                decision="approve",
                target=key,
                actor=actor,
                reason=f"approved on {status.url}",
                source=source,
            )
        elif status.review == "changes_requested":
            notes = "\n".join(status.review_notes) or f"see the review on {status.url}"
            agentic = spec.transformation.kind == "agentic"
            decision = ReviewDecision(
                decision="steer" if agentic and awaiting.change.agent else "reject",
                target=key,
                actor=actor,
                reason=f"changes requested on {status.url}",
                prompt=f"Reviewers requested changes on the pull request:\n{notes}"
                if agentic
                else None,
                source=source,
            )
        else:
            continue
        decision = decision.model_copy(update={"head_sha": pr.head_sha})
        review.record_decision(context.instance, spec, decision)
        context.log.info(f"from the code host: {decision.describe()}")


def review_source(forge: Forge, url: str) -> DecisionSource:
    """The decision source for a review read from the code host `url` lives on: its kind
    (`local`, `github`, `gitlab`, `bitbucket`), `github` when the forge cannot say."""
    kind_for = getattr(forge, "kind_for", None)  # a campaign's router: the url's own forge
    kind = kind_for(url) if callable(kind_for) else type(forge).__name__.removesuffix("Forge")
    source = "bitbucket" if kind.lower().startswith("bitbucket") else kind.lower()
    return cast(DecisionSource, source if source in get_args(DecisionSource) else "github")


def _expire(
    context: dg.SensorEvaluationContext,
    spec: CampaignSpec,
    waiting: dict[str, review.Awaiting],
    timeout_s: float,
    now: float,
    notify: Callable[[str, str], bool],
) -> None:
    """Reject each change that waited longer than the campaign's review timeout."""
    for key, awaiting in sorted(waiting.items()):
        if not awaiting.since or now - awaiting.since < timeout_s:
            continue
        decision = ReviewDecision(
            decision="reject",
            target=key,
            actor=SYSTEM_ACTOR,
            reason=f"timeout: no review within {spec.review.timeout}",
            head_sha=awaiting.change.head_sha,
            source="timeout",
        )
        review.record_decision(context.instance, spec, decision)
        context.log.info(f"review timed out: {decision.describe()}")
        notify(
            "review_timeout",
            f"*{spec.name}*: the review of `{key}` timed out after {spec.review.timeout}; "
            "the target is rejected.",
        )
