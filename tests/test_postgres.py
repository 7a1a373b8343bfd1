"""PostgreSQL storage: the end-to-end campaign tests again, with the instance in a real PostgreSQL
server (tests/postgres.py), switched on as a user does (ORCHESTRATOR_STORAGE=postgres)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import MANAGED_HEADER, Settings, ensure_dagster_home
from tests import test_campaign_e2e as e2e
from tests.conftest import Platform, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

ROOT = Path(__file__).resolve().parents[1]


def test_postgres_switch_writes_storage_by_env_reference(pg_platform: Platform):
    home = Path(pg_platform.env["DAGSTER_HOME"])
    text = (home / "dagster.yaml").read_text()
    assert text.startswith(MANAGED_HEADER)
    config = yaml.safe_load(text)
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres."), key
        assert config[key]["config"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    # the password and host are read from the environment, never written into the file
    assert pg_platform.env["DAGSTER_PG_PASSWORD"] not in text
    # the same queue and pools as the SQLite instance
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["concurrency"] == local["concurrency"]
    with pg_platform.instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"


def test_postgres_switch_without_its_variables_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRATOR_STORAGE", "postgres")
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(OrchestratorError, match=r"DAGSTER_PG_HOST, .*DAGSTER_PG_PASSWORD"):
        ensure_dagster_home(Settings())
    # a dagster.yaml of the user's own that keeps SQLite is not silently used for "postgres"
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB"):  # fmt: skip
        monkeypatch.setenv(name, "x")
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with pytest.raises(OrchestratorError, match=r"home/dagster.yaml: ORCHESTRATOR_STORAGE"):
        ensure_dagster_home(Settings())


def test_campaign_on_postgres_opens_prs_only_for_verified_changes(pg_platform: Platform):
    e2e.test_campaign_opens_prs_only_for_verified_changes(pg_platform)


def test_rerun_on_postgres_repeats_nothing_and_opens_no_duplicate_pr(pg_platform: Platform):
    e2e.test_rerun_repeats_nothing_and_opens_no_duplicate_pr(pg_platform)


def test_report_and_checks_on_postgres(pg_platform: Platform):
    e2e.test_report_frame_is_stored_by_the_io_manager(pg_platform)
    # the CLI, a separate process, reads the same PostgreSQL instance
    out = pg_platform.cli("report", "rename", "--output", "json").stdout
    assert '"acme__epsilon"' in out and "verification_failed" in out
    with pg_platform.instance() as instance:
        runs = instance.get_runs()
    assert runs and all(r.tags.get("campaign") == "rename" for r in runs)
    frame = pg_platform.run(pg_platform.campaigns / "rename.yaml").report
    assert statuses(frame)["acme__alpha"] == "pr_open"
