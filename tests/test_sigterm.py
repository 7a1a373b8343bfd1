"""Graceful shutdown: `orchestrator run` stopped with SIGTERM in the middle of a campaign finishes
the targets it is on, removes its sandboxes and exits with one clear line; the next run continues
from what was recorded, with nothing lost or duplicated."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CODEMOD, ORCHESTRATOR, Platform, app_repo, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

NAMES = [f"svc{i}" for i in range(6)]
SLOW_CODEMOD = f'sh -c \'sleep 4; exec "$0" "$@"\' {CODEMOD}'


def pulls(platform: Platform) -> dict[str, list[dict]]:
    return {
        name: [json.loads(p.read_text())
               for p in sorted((platform.fleet / "acme" / f"{name}.git" / "pulls").glob("*.json"))]
        for name in NAMES
    }  # fmt: skip


def test_sigterm_stops_cleanly_and_the_rerun_finishes_without_duplicates(platform: Platform):
    repos = platform.make_fleet([app_repo(n, "GREETING = 'OLD'\n") for n in NAMES])
    path = platform.write_campaign(
        targets=[str(r) for r in repos], concurrency=2,
        transformation={"kind": "deterministic", "command": SLOW_CODEMOD},
    )  # fmt: skip
    proc = subprocess.Popen([ORCHESTRATOR, "run", "--file", str(path)], env=platform.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(pulls(platform).values()):  # mid-campaign: the first PR is open
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no PR within 2 minutes"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, out + err
    assert took < 20, f"took {took:.1f}s to stop"  # the targets in flight: a few seconds each
    assert "Traceback" not in out + err
    assert "stopped (SIGTERM)" in err and "run the campaign again to continue" in err
    done_before = {n for n, prs in pulls(platform).items() if prs}
    assert 0 < len(done_before) < len(NAMES), "SIGTERM came too late to stop anything"

    # no sandbox left behind: no workspace on disk, nothing the sweep would find
    workspaces = Path(platform.env["ORCHESTRATOR_DATA_DIR"]) / "workspaces"
    assert not workspaces.exists() or not any(workspaces.iterdir())
    listed = platform.cli("sandboxes", "list", "--output", "json").stdout
    assert json.loads(listed[listed.index("[") :]) == []

    # the re-run finishes the rest; every target ends with exactly one PR
    with platform.instance() as instance:
        before = instance.get_runs()
    assert all(r.is_finished for r in before)
    outcome = platform.run(path)
    assert outcome.failed_runs == [] and not outcome.interrupted
    assert set(statuses(outcome.report).values()) == {"pr_open"}
    assert all(len(prs) == 1 for prs in pulls(platform).values()), pulls(platform)
    # targets finished before the signal were not redone
    rows = outcome.report.set_index("target")
    for name in done_before:
        pr = pulls(platform)[name][0]
        assert pr["head_sha"] == rows.loc[f"acme__{name}", "head_sha"]
