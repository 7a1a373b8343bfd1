"""Metrics and structured logs: the exporter process scraped over HTTP during and after a campaign
the CLI runs in another process, the Grafana dashboard checked against what it exports, and the
JSON log lines of the CLI and of the Dagster logger."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_assets.reports.json_logs import LOGGERS, JsonFormatter
from tests.conftest import CODEMOD, ORCHESTRATOR, Platform, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "campaign-platform.json"
SLOW_CODEMOD = f'sh -c \'sleep 1; exec "$0" "$@"\' {CODEMOD}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    """sample name -> [(labels, value)] from the endpoint's Prometheus text format."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of a sample's values over the series matching `labels`."""
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


@pytest.fixture
def exporter(platform: Platform):
    """`orchestrator metrics serve` on a free port, reading the platform's instance."""
    port = free_port()
    proc = subprocess.Popen(
        [ORCHESTRATOR, "metrics", "serve", "--port", str(port), "--interval", "0.5"],
        env=platform.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"exporter did not start: {proc.communicate()}") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "metrics exporter stopped" in out


def test_exporter_counts_a_campaign_run_by_another_process(platform: Platform, exporter: int):
    path = platform.write_campaign(
        transformation={"kind": "deterministic", "command": SLOW_CODEMOD}, concurrency=1
    )
    run = subprocess.Popen([ORCHESTRATOR, "run", "--file", str(path)], env=platform.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    seen_started = False
    while run.poll() is None:  # during the campaign: its run shows as started
        samples = scrape(exporter)
        seen_started |= value(samples, "campaign_runs", campaign="rename", status="started") >= 1
        time.sleep(0.3)
    out, err = run.communicate()
    assert run.returncode == 0, out + err
    assert seen_started

    # The exporter refreshes on its own clock: wait (bounded) until it has read the whole run.
    stage = "campaign_stage_duration_seconds_count"
    deadline = time.monotonic() + 60
    samples = scrape(exporter)
    while time.monotonic() < deadline and (
        value(samples, stage, campaign="rename", stage="pull_request") < 2
        or value(samples, stage, campaign="rename", stage="verification") < 3
    ):
        time.sleep(0.5)
        samples = scrape(exporter)
    report = statuses(platform.run(path).report)  # (a re-run: nothing new, same statuses)
    for status in set(report.values()):
        expected = sum(1 for s in report.values() if s == status)
        assert value(samples, "campaign_targets", campaign="rename", status=status) == expected
    assert value(samples, "campaign_targets", campaign="rename", status="merged") == 0
    assert value(samples, "campaign_runs", campaign="rename", status="success") >= 2
    # every stage of the work done was timed: 5 changes; 3 verifications (alpha, beta, epsilon);
    # 2 pull requests; provision = every sandbox opened (5 change + 3 verify)
    assert value(samples, stage, campaign="rename", stage="transformation") == 5
    assert value(samples, stage, campaign="rename", stage="verification") == 3
    assert value(samples, stage, campaign="rename", stage="pull_request") == 2
    assert value(samples, stage, campaign="rename", stage="provision") >= 8
    # the slow codemod's second per target shows in the transformation time
    assert value(samples, "campaign_stage_duration_seconds_sum", stage="transformation") >= 5
    assert value(samples, "campaign_sandbox_ready_seconds_count", provider="local") >= 8
    assert value(samples, "campaign_forge_api_calls_total", campaign="rename", forge="local") == 0
    assert value(samples, "campaign_metrics_refresh_errors_total") == 0

    # the dashboard queries only what the endpoint exports
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"]["query"])
    used = {name for e in exprs for name in re.findall(r"\bcampaign_[a-z_]+\b", e)}
    assert len(used) >= 10
    assert used <= set(samples), f"not exported: {sorted(used - set(samples))}"


def test_a_run_launched_outside_the_cli_measures_its_sandboxes_too(platform: Platform):
    """What a run pod or the daemon runs records sandbox time to ready as the CLI's runs do: here
    a target materialized with Dagster's own CLI (the implicit asset job, no campaign tag)."""
    import sys

    from orchestrator_assets.reports.metrics import STATS_TAG, EventLogCollector
    from orchestrator_assets.spec.catalog import load_one

    path = platform.write_campaign()
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        instance.add_dynamic_partitions(f"{spec.id}_targets", ["acme__alpha"])
    select = ",".join(f"{spec.id}/{stage}" for stage in ("change", "verification", "pull_request"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
         "-m", "orchestrator_assets.definitions", "--select", select, "--partition", "acme__alpha"],
        env={**platform.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with platform.instance() as instance:
        (run,) = instance.get_runs()
        assert run.tags["campaign"] == "rename"
        stats = json.loads(run.tags[STATS_TAG])
        collector = EventLogCollector(settings=platform.settings())
        collector.refresh(instance)
    # one sandbox for the change, one for the verification
    assert [p for p, _ in stats["sandbox_ready"]] == ["local", "local"]
    assert all(seconds > 0 for _, seconds in stats["sandbox_ready"])
    registry = collector.metrics.registry
    ready = registry.get_sample_value("campaign_sandbox_ready_seconds_count", {"provider": "local"})
    assert ready == 2
    runs = registry.get_sample_value("campaign_runs", {"campaign": "rename", "status": "success"})
    assert runs == 1


def test_dashboard_covers_every_metric_family():
    from orchestrator_assets.reports.metrics import Metrics

    dashboard = DASHBOARD.read_text()
    families = {f.name for f in Metrics().registry.collect()}
    missing = [f for f in families if f not in dashboard]
    assert not missing, f"metric families without a panel: {missing}"
    assert json.loads(dashboard)["uid"] == "campaign-platform"


def test_cli_logs_json_lines_with_campaign_target_and_run(platform: Platform):
    path = platform.write_campaign()
    env = {**platform.env, "ORCHESTRATOR_LOG_FORMAT": "json", "SECRET_TOKEN": "tok-0123456789"}
    proc = subprocess.run([ORCHESTRATOR, "run", "--file", str(path), "--output", "json"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout[proc.stdout.index("[") :])  # stdout keeps the report
    assert {r["target"] for r in report} >= {"acme__alpha", "acme__delta"}
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) > 10
    run_lines = [e for e in lines if e.get("stage") != "discovery"]
    for entry in lines:
        assert entry["campaign"] == "rename" and entry["level"] and entry["ts"]
    assert all(e["run_id"] for e in run_lines)
    by_target = {e["target"] for e in lines if e["target"]}
    assert {"acme__alpha", "acme__delta", "acme__gamma"} <= by_target
    assert any(e["target"] == "acme__delta" and e["level"] == "error" for e in lines)


def test_dagster_json_logger_lines_carry_run_tags(capsys: pytest.CaptureFixture):
    @dg.asset
    def thing(context) -> None:  # (no annotation: annotations are strings in this module)
        context.log.info("acme__alpha: changed 1 file(s)\nacme__beta: no change")

    defs = dg.Definitions(assets=[thing], loggers=LOGGERS)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, tags={"campaign": "rename"},
            run_config={"loggers": {"json": {"config": {"log_level": "INFO"}}}},
        )  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    mine = [e for e in lines if e.get("target") in ("acme__alpha", "acme__beta")]
    assert [e["target"] for e in mine] == ["acme__alpha", "acme__beta"]
    assert all(e["run_id"] == result.run_id and e["campaign"] == "rename" for e in mine)
    assert all(e.get("step") == "thing" for e in mine)


def test_json_formatter_redacts_secrets(monkeypatch: pytest.MonkeyPatch):
    import logging

    monkeypatch.setenv("GITHUB_TOKEN", "ghp_canary_value_123")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pushed with ghp_canary_value_123",
                               None, None)  # fmt: skip
    line = JsonFormatter().format(record)
    assert "ghp_canary_value_123" not in line and json.loads(line)["message"] == "pushed with ***"
