"""The one place the project imports Dagster's private modules (`dagster._…`).

Everything else uses `dagster`'s public names. Each name below has no public equivalent in
Dagster 1.13 (checked against `dagster/__init__.py`); on an upgrade, this module is the list to
re-check, and a name that became public moves out of it.

Production code:

- `AssetCheckEvaluationTargetMaterializationData` (history.latest_materializations, used by
  assets/factory.py): the `target_materialization_data` argument of the public
  `dg.AssetCheckEvaluation`, which points an evaluation logged from a multi-target step at the
  materialization it checks (so the UI shows it as the target's current result). Dagster
  exports the evaluation but not this argument's type, and it can only be built by class.
- `PartitionKeyFilter` (history.latest_check_evaluations): the newest evaluation of each check
  for one partition. The public `DagsterInstance.get_latest_asset_check_evaluation_record`
  takes no partition, and no public call filters check evaluations by partition.
- `SerializableErrorInfo` (assets/runner.py, `is_check_failure`): the type of a step failure's
  `error` in the event log; used in a type annotation only. Defined in `dagster_shared.error`
  (Dagster's support package, not part of `dagster`'s public API).
- `interrupts` (assets/fanout.py, `graceful_shutdown`): while a campaign runs in this process,
  `setup_interrupt_handlers` is replaced by a no-op so that `execute_in_process` does not point
  SIGTERM at Dagster's own handler (which would abort the step and drop the targets in flight).
  The public `dg.raise_execution_interrupts` only re-raises held interrupts; nothing public
  decides which signals Dagster takes over.
- `UnresolvedAssetJobDefinition` (sensors/review.py, report.py, schedules.py): the type
  `dg.define_asset_job` returns, named in the sensors' and the schedule's signatures; Dagster
  exports the function but not its return type (`dg.UnresolvedAssetJobDefinition` does not
  exist: those annotations only worked because they were never evaluated).

Tests only (kept here too, so the list is complete):

- `set_defs_state_storage` (tests/conftest.py): clears the context variable Dagster leaves set
  between tests (a stale value points at a closed instance).
- `BulkActionStatus` (tests/test_ui.py): the status of a backfill launched from the UI.
- `dagster_instance_config`, `process_config`, `resolve_to_config_type`,
  `class_from_code_pointer` (tests/test_images_deploy.py, tests/test_deploy_k8s.py): validate the
  deploy folders' dagster.yaml files the way the instance loads them, class by class.
- `PartitionKeyFilter` (tests/test_campaign_e2e.py, tests/test_multi_target.py): as above.
"""

from __future__ import annotations

from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._serdes.config_class import class_from_code_pointer
from dagster._utils import interrupts
from dagster_shared.error import SerializableErrorInfo

__all__ = [
    "AssetCheckEvaluationTargetMaterializationData",
    "BulkActionStatus",
    "PartitionKeyFilter",
    "SerializableErrorInfo",
    "UnresolvedAssetJobDefinition",
    "class_from_code_pointer",
    "dagster_instance_config",
    "interrupts",
    "process_config",
    "resolve_to_config_type",
    "set_defs_state_storage",
]
