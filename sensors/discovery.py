"""The discovery sensor: keeps a campaign's partitions equal to its targets."""

from __future__ import annotations

import json

import dagster as dg

from orchestrator_assets.assets import history
from orchestrator_assets.assets.partitions import plan_sync, removal_events
from orchestrator_assets.spec.campaign import CampaignSpec


def build_discovery_sensor(spec: CampaignSpec) -> dg.SensorDefinition:
    """A sensor that adds partitions for new targets and marks removed ones (history kept)."""

    @dg.sensor(
        name=f"{spec.id}_discovery",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps the partitions of campaign {spec.name} equal to its targets.",
    )
    def discovery(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        current = _current(spec, context)
        existing = context.instance.get_dynamic_partitions(spec.partitions_name)
        if context.cursor:
            marked = set(json.loads(context.cursor).get("removed", []))
        else:
            marked = history.removed_targets(context.instance, spec) if existing else set()
        plan = plan_sync(existing, [t.key for t in current.targets], marked)
        now_marked = (marked | set(plan.removed)) - set(plan.restored)
        cursor = json.dumps({"removed": sorted(now_marked)})
        if plan.empty:
            context.update_cursor(cursor)
            return dg.SkipReason(f"{len(existing)} partitions match the campaign's targets")
        requests = (
            [dg.AddDynamicPartitionsRequest(spec.partitions_name, plan.add)] if plan.add else []
        )
        context.log.info(
            f"added {len(plan.add)}, marked removed {len(plan.removed)}, "
            f"restored {len(plan.restored)}"
        )
        return dg.SensorResult(
            dynamic_partitions_requests=requests,
            asset_events=removal_events(spec, plan),
            cursor=cursor,
        )

    return discovery


def _current(spec: CampaignSpec, context: dg.SensorEvaluationContext) -> CampaignSpec:
    """The campaign with the targets its code host lists now (asked again when stale), kept to
    those its `select:`/`workspaces:` choose on their base commits now (evaluated again when
    stale: a repository whose base branch moved is looked at again, the others come from the
    answers cached by base commit)."""
    from orchestrator_assets.spec.discovery import STALE_AFTER_S, age_s, refresh, with_discovered
    from orchestrator_assets.spec.settings import Settings
    from orchestrator_assets.stages import selection
    from resources.build import build_forge

    if spec.discover is None and spec.select is None and spec.workspaces is None:
        return spec
    settings = Settings()
    if spec.discover is not None and age_s(settings, spec) > STALE_AFTER_S:
        try:
            found = refresh(spec, settings, build_forge(settings, spec))
            context.log.info(
                f"discovered {found.total} repositories (+{len(found.added)}, "
                f"-{len(found.removed)})"
            )
        except Exception as exc:  # the code host is down: keep the targets known so far
            context.log.warning(f"discovery of {spec.name} failed, keeping its last targets: {exc}")
    current = with_discovered(spec, settings)
    if current._candidates is not None and (
        selection.age_s(settings, current) > selection.RESELECT_AFTER_S
    ):
        try:
            current, chosen = selection.reselect(
                current, settings, budget_s=selection.SENSOR_BUDGET_S
            )
            if chosen is not None:
                context.log.info(f"selection of {spec.name}: {chosen.summary()}")
        except Exception as exc:  # keep the last answers rather than lose the targets
            context.log.warning(f"selection of {spec.name} failed, keeping its last answers: {exc}")
    return current
