"""The rollout sensor: opens a campaign's next wave when the waves before it are settled.

Each tick reads the campaign's report (each target's status and PR checks), works out the
rollout's standing (`stages/rollout.py`) and requests a run for each target of an open wave that
is still held for its wave (its newest `pull_request` record says `waiting for wave N`). The run
key names the wave, so a target is requested once per wave. When the rollout halts (a wave's
failure rate passed `halt_failure_rate`) it notifies once and requests nothing further.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import dagster as dg
from dagster import DagsterInstance

from orchestrator_assets.assets import history
from orchestrator_assets.assets.rollout_history import standing_of
from orchestrator_assets.reports.report import build_report
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.stages import rollout
from resources.notify import Notify, no_notifier


def current_standing(instance: DagsterInstance, spec: CampaignSpec) -> rollout.Standing | None:
    """The rollout's standing from the event log (None: the campaign has no rollout)."""
    if spec.rollout is None:
        return None
    return standing_of(spec, build_report(instance, spec))


def waiting_for_wave(record_reason: str | None) -> bool:
    """Whether a held PR record was held by the rollout (not by the rate limit or the judge)."""
    prefix = rollout.WAITING.split("{", 1)[0]
    halted = rollout.HALTED.split("{", 1)[0]
    return bool(record_reason) and record_reason.startswith((prefix, halted))  # type: ignore[union-attr]


def build_rollout_sensor(
    spec: CampaignSpec,
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition,
    *,
    minimum_interval_seconds: int = 60,
    notifier_getter: Callable[[], Notify] = lambda: no_notifier,
) -> dg.SensorDefinition:
    """A sensor that requests runs for the targets of each wave as it opens."""

    @dg.sensor(
        name=f"{spec.id}_rollout",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Opens the next rollout wave of campaign {spec.name} once the waves before "
        "it are settled; halts the rollout when a wave fails too often.",
    )
    def rollout_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = _load(context.cursor)
        current = current_standing(context.instance, spec)
        if current is None:
            return dg.SensorResult(skip_reason="the campaign has no rollout")
        requests: list[dg.RunRequest] = []
        if current.halted is not None:
            if state.get("halted") != current.halted:
                note = f"*{spec.name}*: {rollout.HALTED.format(why=current.halted)}"
                context.log.warning(note)
                notifier_getter()("rollout_halted", note)
        else:
            opened = [w for w in current.waves if w.open]
            keys = [k for w in opened for k in w.targets]
            records = history.latest_pull_requests(context.instance, spec, keys)
            for wave in opened:
                for key in wave.targets:
                    record = records.get(key)
                    if record is None or record.outcome != "held":
                        continue
                    if not waiting_for_wave(record.reason):
                        continue
                    requests.append(
                        dg.RunRequest(
                            run_key=f"wave{wave.number}:{key}",
                            partition_key=key,
                            tags={"orchestrator/rollout_wave": str(wave.number)},
                        )
                    )
            if current.open_wave > state.get("open_wave", 0) and current.open_wave > 1:
                notifier_getter()(
                    "rollout_wave",
                    f"*{spec.name}*: rollout wave {current.open_wave} of {len(current.waves)} "
                    "opened",
                )
        cursor = json.dumps({"open_wave": current.open_wave, "halted": current.halted})
        summary = current.describe().splitlines()[0]
        if not requests:
            return dg.SensorResult(skip_reason=summary, cursor=cursor)
        context.log.info(f"{summary}: {len(requests)} target(s) requested")
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return rollout_sensor


def _load(cursor: str | None) -> dict:
    """What the cursor kept: the open wave and the halt reason notified last."""
    try:
        data = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
