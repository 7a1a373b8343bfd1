"""Running a campaign through Dagster from the CLI: one in-process run per range of targets."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
from dagster import DagsterEventType, DagsterInstance

from orchestrator_assets.assets.dagster_private import SerializableErrorInfo
from orchestrator_assets.assets.factory import NO_CACHE_TAG, build_campaign_definitions
from orchestrator_assets.assets.fanout import SHUTDOWN, stop_on_sigterm
from orchestrator_assets.assets.partitions import contiguous_ranges, range_tags, sync_partitions
from orchestrator_assets.cli.review import HOST_TAG, PID_TAG
from orchestrator_assets.reports import json_logs
from orchestrator_assets.reports.report import build_report
from orchestrator_assets.spec.catalog import FILE_TAG, OVERRIDES_TAG, Campaign
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.stages.review import unapplied_rejections
from orchestrator_assets.stages.status import TargetStatus
from resources.agents.claude_code import find_cli
from resources.build import build_resources
from resources.redact import redact_files
from resources.sandboxes.local import SandboxUnavailable

log = logging.getLogger(__name__)

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
Emit = Callable[[str, str], None]  # (stage, message)
# A blocking asset check that failed makes Dagster fail the step (in a one-target run). That is
# the target's verifier failing, which its records and the report already say, not a run error.
CHECK_FAILED = "DagsterAssetCheckFailedError"


def is_check_failure(error: SerializableErrorInfo | None) -> bool:
    """True when a step failed only because a blocking asset check failed (a target's verifier
    failed), not because the platform or a stage raised."""
    return error is not None and error.cls_name == CHECK_FAILED


@dataclass
class RunOutcome:
    """What `run_campaign` did: the Dagster runs it made and the report afterwards."""

    run_ids: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    skipped_final: list[str] = field(default_factory=list)
    report: pd.DataFrame | None = None
    interrupted: bool = False  # SIGTERM: stopped after recording the targets in flight


class ProgressWatcher:
    """Passes a run's user log lines and failures to `emit` as this process stores them.

    The run executes in this process, so its events are heard where Dagster stores them
    (`DagsterInstance.add_event_listener`) instead of read back from the event log: polling
    deserialized every event of the run again, materializations included (issue 17)."""

    def __init__(self, instance: DagsterInstance, run_id: str, emit: Emit):
        self.instance, self.run_id, self.emit = instance, run_id, emit
        self._lock = threading.Lock()  # steps log from several threads; lines stay whole
        self._listening = False

    def __enter__(self) -> ProgressWatcher:
        self._listening = True
        self.instance.add_event_listener(self.run_id, self._hear)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:  # Dagster keeps its listeners: this one falls silent
            self._listening = False

    def _hear(self, entry: dg.EventLogEntry) -> None:
        # Called inside Dagster's logging of the step: a failure to show a line must not
        # become the step's failure.
        try:
            with self._lock:
                if self._listening:
                    self._show(entry)
        except Exception:
            log.debug("cannot show a progress line", exc_info=True)

    def _show(self, entry: dg.EventLogEntry) -> None:
        stage = (entry.step_key or "").split("__")[-1] or "run"  # `<campaign>__targets`
        event = entry.dagster_event
        if event is None:
            if entry.level >= logging.INFO:
                for line in entry.user_message.splitlines():
                    self.emit(stage, line)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            if is_check_failure(error):  # the verifier's failure was logged as it happened
                return
            self.emit(stage, f"step failed: {error.message.strip() if error else 'unknown'}")


def campaign_definitions(campaign: Campaign, settings: Settings) -> dg.Definitions:
    """The campaign's definitions bound to the platform's resources."""
    return dg.Definitions.merge(
        build_campaign_definitions(campaign.spec, campaign.profile),
        dg.Definitions(resources=build_resources(settings), loggers=json_logs.LOGGERS),
    )


def _require_sandbox(campaign: Campaign, settings: Settings) -> None:
    """Stop before any run when the campaign's local sandbox cannot isolate its commands (the
    asset refuses it too; this says so once, naming the file and profile)."""
    profile = campaign.profile
    if profile.provider != "local":
        return  # a container or pod is its own sandbox; its engine is checked when it starts
    sandbox = build_resources(settings)["sandbox"]
    try:
        sandbox.get(profile.provider, profile.image, profile.limits())  # type: ignore[attr-defined]
    except SandboxUnavailable as exc:
        name = campaign.spec.profile or "default"
        raise OrchestratorError(f"{campaign.file}: profile {name!r}: {exc}") from None


def run_campaign(
    campaign: Campaign,
    instance: DagsterInstance,
    settings: Settings,
    targets: Sequence[str] | None = None,
    emit: Emit = lambda stage, message: None,
    no_cache: bool = False,
) -> RunOutcome:
    """Advance the campaign's targets as far as they can go, and rebuild its report.

    Targets already merged, closed or rejected are left alone; everything else runs through
    change, verification and pull request, each stage repeating nothing that is done.
    """
    spec = campaign.spec
    if spec.transformation.kind == "agentic" and find_cli() is None:
        raise OrchestratorError(
            f"{campaign.file}: transformation.kind: agentic campaigns need the Claude Code CLI; "
            "install it with `make agent-cli` (or set CLAUDE_BIN)"
        )
    _require_sandbox(campaign, settings)
    campaign = _reselect(campaign, settings, emit)  # targeting by content, workspaces
    spec = campaign.spec
    keys = [t.key for t in spec.targets]
    unknown = [k for k in targets or [] if k not in keys]
    if unknown:
        raise OrchestratorError(
            f"{campaign.file}: unknown target(s) {', '.join(unknown)}; known: {', '.join(keys)}"
        )
    plan = sync_partitions(instance, spec)
    if plan.add:
        emit("discovery", f"added {len(plan.add)} target(s): {', '.join(plan.add[:10])}")
    if plan.removed:
        emit("discovery", f"marked {len(plan.removed)} removed target(s) as skipped")
    before = build_report(instance, spec)
    unapplied = unapplied_rejections(instance, spec)
    final = {
        row.target
        for row in before.itertuples()
        if TargetStatus(row.status).is_final
        and row.target in keys
        and row.target not in unapplied  # rejected, but its draft PR is still to be closed
        # A campaign that reopens closed PRs works on its closed targets again.
        and not (spec.pull_request.reopen and row.status == TargetStatus.CLOSED)
    }
    outcome = RunOutcome(skipped_final=sorted(final & set(targets or keys)))
    todo = [k for k in (targets or keys) if k not in final]
    defs = campaign_definitions(campaign, settings)
    job = defs.resolve_job_def(f"{spec.id}_targets")
    ordered = instance.get_dynamic_partitions(spec.partitions_name)
    with stop_on_sigterm():
        _run_ranges(job, instance, settings, campaign, contiguous_ranges(ordered, todo), emit,
                    no_cache, outcome)  # fmt: skip
    report_job = defs.resolve_job_def(f"{spec.id}_report")
    report_job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
    outcome.report = build_report(instance, spec)
    return outcome


def _reselect(campaign: Campaign, settings: Settings, emit: Emit) -> Campaign:
    """The campaign with the targets its `select:`/`workspaces:` choose now (stages/selection.py);
    unselected repositories get no partition and no run."""
    import dataclasses

    from orchestrator_assets.stages.selection import reselect

    spec, found = reselect(campaign.spec, settings)
    if found is not None:
        emit("selection", found.summary())
        for key, why in list(found.not_selected.items())[:20]:
            emit("selection", f"not selected: {key} ({why})")
        campaign = dataclasses.replace(campaign, spec=spec)
    return campaign


def _run_ranges(
    job: dg.JobDefinition,
    instance: DagsterInstance,
    settings: Settings,
    campaign: Campaign,
    ranges: Iterable[tuple[str, str]],
    emit: Emit,
    no_cache: bool,
    outcome: RunOutcome,
) -> None:
    """One in-process run per range of targets; on SIGTERM, no new run is begun."""
    spec = campaign.spec
    # The UI shows a run's tags: what the command line changed in the file is visible there.
    overrides = {OVERRIDES_TAG: json.dumps(campaign.overrides)} if campaign.overrides else {}
    for start, end in ranges:
        if SHUTDOWN.is_set():
            outcome.interrupted = True
            return
        run_id = str(uuid.uuid4())  # what Dagster's own run ids are
        single = start == end
        json_logs.set_context(campaign=spec.name, run_id=run_id)
        emit("run", f"{run_id[:8]} over {start if single else f'{start} … {end}'}")
        with ProgressWatcher(instance, run_id, emit):
            where = {"target": start} if single else {"targets": f"{start}...{end}"}
            result = job.execute_in_process(
                instance=instance,
                run_id=run_id,
                partition_key=start if single else None,
                tags={
                    "campaign": spec.name,
                    FILE_TAG: str(campaign.file.resolve()),
                    **overrides,
                    **where,
                    # `orchestrator cancel` stops a run executed in this process through them.
                    PID_TAG: str(os.getpid()),
                    HOST_TAG: socket.gethostname(),
                    **({} if single else range_tags(start, end)),
                    **({NO_CACHE_TAG: "true"} if no_cache else {}),
                },
                run_config=QUIET,
                raise_on_error=False,
            )
        # The agent CLI keeps its own session files in its home (for --resume): no secret stays.
        redact_files(settings.data_dir / "agent-homes")
        json_logs.set_context(run_id=None)
        outcome.run_ids.append(run_id)
        if not result.success and not _only_checks_failed(result):
            outcome.failed_runs.append(run_id)
        outcome.interrupted = SHUTDOWN.is_set()


def _only_checks_failed(result: dg.ExecuteInProcessResult) -> bool:
    """True when a run failed only because blocking checks failed: every target got its result
    (the failed verifier is its status), so the run did its work."""
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    return bool(failures) and all(is_check_failure(e.step_failure_data.error) for e in failures)
