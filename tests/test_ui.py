"""The Dagster UI shows a campaign's asset group, partitions, checks and report.

A real `dagster-webserver` serves the project's workspace.yaml against the platform's instance
after one campaign run; we ask its GraphQL API (what the UI itself queries) and render an asset
page in headless Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Platform, require

pytestmark = pytest.mark.usefixtures("bwrap")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WEBSERVER = str(Path(sys.executable).parent / "dagster-webserver")
TARGETS = ["acme__alpha", "acme__beta", "acme__gamma", "acme__delta", "acme__epsilon"]
STAGES = ["change", "verification", "pull_request", "report"]
STARTUP_TIMEOUT_S = 90
# Loopback only: never send these requests through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def webserver(platform: Platform) -> Iterator[str]:
    """A dagster-webserver for the project's workspace on the platform's instance; its base URL."""
    port = free_port()
    log_path = platform.root / "webserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                WEBSERVER,
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                f"{port}",
            ],
            env=platform.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server goes with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited ({proc.returncode}):\n{tail(log_path)}")
            try:
                with HTTP.open(f"{base}/server_info", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer in {STARTUP_TIMEOUT_S}s from {base}:\n{tail(log_path)}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    """The `data` of a GraphQL answer; any error (the server answers some with HTTP 400) fails."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with HTTP.open(request, timeout=60) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        pytest.fail(f"GraphQL HTTP {exc.code}: {exc.read().decode(errors='replace')}")
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


GROUP_QUERY = """
query Group($group: AssetGroupSelector!) {
  assetNodes(group: $group) {
    assetKey { path }
    groupName
    isPartitioned
    partitionKeysByDimension { name partitionKeys }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          blocking
          partitionKeysByDimension { partitionKeys }
          partitionStatuses {
            __typename
            ... on AssetCheckDefaultPartitionStatuses {
              succeededPartitions
              failedPartitions
            }
          }
        }
      }
    }
  }
}
"""

REPORT_QUERY = """
query Report($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetMaterializations(limit: 1, partitions: $partitions) {
        runId
        metadataEntries {
          __typename
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""


def test_graphql_shows_group_partitions_checks_and_report(platform: Platform):
    outcome = platform.run(platform.write_campaign())
    assert outcome.failed_runs == []

    with webserver(platform) as base:
        group = {
            "groupName": "rename",
            "repositoryName": "__repository__",
            "repositoryLocationName": "campaigns",
        }
        nodes = graphql(base, GROUP_QUERY, {"group": group})["assetNodes"]
        report = graphql(base, REPORT_QUERY, {"key": {"path": ["rename", "report"]}})
        change = graphql(
            base,
            REPORT_QUERY,
            {"key": {"path": ["rename", "change"]}, "partitions": ["acme__alpha"]},
        )

    by_stage = {tuple(n["assetKey"]["path"]): n for n in nodes}
    assert sorted(by_stage) == sorted(("rename", s) for s in STAGES)
    assert {n["groupName"] for n in nodes} == {"rename"}

    # the three per-target stages are partitioned by the campaign's targets; the report is not
    for stage in ("change", "verification", "pull_request"):
        node = by_stage["rename", stage]
        assert node["isPartitioned"], stage
        (dimension,) = node["partitionKeysByDimension"]
        assert set(TARGETS) <= set(dimension["partitionKeys"]), (stage, dimension)
    assert not by_stage["rename", "report"]["isPartitioned"]

    # one blocking, per-target asset check per verifier, on `verification` only
    checks = {path[-1]: node["assetChecksOrError"]["checks"] for path, node in by_stage.items()}
    assert [c["name"] for c in checks["verification"]] == ["test"]
    (check,) = checks["verification"]
    assert check["blocking"]
    assert set(TARGETS) <= set(check["partitionKeysByDimension"][0]["partitionKeys"])
    assert checks["change"] == checks["pull_request"] == checks["report"] == []
    # each target's verifier result is its current check status (what the Checks tab shows)
    statuses = check["partitionStatuses"]
    assert set(statuses["succeededPartitions"]) == {"acme__alpha", "acme__beta"}
    assert set(statuses["failedPartitions"]) == {"acme__epsilon"}

    # the report's latest materialization carries the table as markdown
    node = report["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    (materialization,) = node["assetMaterializations"]
    entries = {e["label"]: e for e in materialization["metadataEntries"]}
    md = entries["report"]
    assert md["__typename"] == "MarkdownMetadataEntry"
    rows = {
        cells[0]: cells[1]
        for line in md["mdStr"].splitlines()
        if (cells := [c.strip() for c in line.strip().strip("|").split("|")])[0] in TARGETS
    }
    assert rows == {
        "acme__alpha": "pr_open",
        "acme__beta": "pr_open",
        "acme__gamma": "no_change",
        "acme__delta": "change_failed",
        "acme__epsilon": "verification_failed",
    }
    assert entries["targets"]["intValue"] == 5
    assert entries["status_pr_open"]["intValue"] == 2

    # a target's change shows its diff as markdown (a fenced diff: red and green lines)
    (materialization,) = change["assetNodeOrError"]["assetMaterializations"]
    diff = {e["label"]: e for e in materialization["metadataEntries"]}["diff"]
    assert diff["__typename"] == "MarkdownMetadataEntry"
    assert diff["mdStr"].startswith("```diff\n")
    assert "\n-GREETING = 'OLD'\n+GREETING = 'NEW'\n" in diff["mdStr"]


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]
BLANK_PNG_BYTES = 20_000  # a blank 1400x1000 page is ~6 kB; the rendered asset page ~120 kB


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_browser_renders_the_verification_partitions(platform: Platform):
    require(shutil.which("chromium") is not None, "chromium is not installed")
    outcome = platform.run(platform.write_campaign())
    head_sha = outcome.report.set_index("target").loc["acme__alpha", "head_sha"]
    assert head_sha

    out = platform.root / "ui"
    out.mkdir()
    png = out / "verification-partitions.png"
    with webserver(platform) as base:
        # What the UI's "Skip" on the first-visit community dialog does; it would cover the page.
        assert graphql(base, "mutation { setNuxSeen }")["setNuxSeen"] is True
        url = f"{base}/assets/rename/verification?view=partitions&partition=acme__alpha"
        chromium = shutil.which("chromium") or "chromium"
        profile = f"--user-data-dir={out / 'profile'}"
        proc = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, profile, f"--screenshot={png}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "page.html").write_text(proc.stdout)
    text = page_text(proc.stdout)
    where = f"rendered DOM in {out / 'page.html'}"

    # the asset page, its tabs and the partition list with every target
    for word in ("rename", "verification", "Partitions", "Checks", "Materialized (5)"):
        assert word in text, f"{word!r} not in {where}"
    for target in TARGETS:
        assert target in text, f"{target!r} not in {where}"
    # the selected partition's latest materialization: the verification record of acme__alpha
    assert f"head_sha {head_sha}" in text, where
    assert "python -m pytest -q -p no:cacheprovider" in text, where

    assert png.is_file(), proc.stderr[-3000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1400  # IHDR width
    assert png.stat().st_size > BLANK_PNG_BYTES, f"{png} looks blank"


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
DAEMON = str(Path(sys.executable).parent / "dagster-daemon")
BACKFILL_TIMEOUT_S = 300


def test_backfill_launched_from_the_ui_does_the_same_work(platform: Platform):
    """The UI's "materialize all partitions" → the daemon → the same statuses and PRs as a run."""
    from dagster import DagsterRunStatus, RunsFilter

    from orchestrator_assets.assets.dagster_private import BulkActionStatus
    from orchestrator_assets.assets.partitions import sync_partitions
    from orchestrator_assets.reports.report import build_report
    from orchestrator_assets.spec.catalog import load_one
    from tests.conftest import statuses

    path = platform.write_campaign()
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        sync_partitions(instance, spec)  # what the discovery sensor does on its first tick
    selection = [
        {"path": ["rename", stage]} for stage in ("change", "verification", "pull_request")
    ]
    with webserver(platform) as base:
        answer = graphql(
            base,
            LAUNCH_BACKFILL,
            {"params": {"assetSelection": selection, "partitionNames": TARGETS}},
        )["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    backfill_id = answer["backfillId"]

    log_path = platform.root / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [DAEMON, "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
            env=platform.env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        with platform.instance() as instance:
            while True:
                backfill = instance.get_backfill(backfill_id)
                if backfill.status != BulkActionStatus.REQUESTED:
                    break
                if daemon.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"backfill did not finish:\n{tail(log_path)}")
                time.sleep(1)
            runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            while any(not r.is_finished for r in runs) and time.monotonic() < deadline:
                time.sleep(1)
                runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            report = build_report(instance, spec)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, tail(log_path)
    # single-run backfill policy: all targets in one run, which succeeded
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS]
    assert statuses(report) == {
        "acme__alpha": "pr_open",
        "acme__beta": "pr_open",
        "acme__gamma": "no_change",
        "acme__delta": "change_failed",
        "acme__epsilon": "verification_failed",
    }
    assert (platform.fleet / "acme" / "alpha.git" / "pulls" / "1.json").exists()
