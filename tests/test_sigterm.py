"""Graceful shutdown: `orchestrator run` stopped with SIGTERM in the middle of a campaign finishes
the targets it is on, removes its sandboxes and exits with one clear line; the next run continues
from what was recorded, with nothing lost or duplicated."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from orchestrator_assets.assets import history
from orchestrator_assets.assets.sweep import process_alive
from tests.conftest import CODEMOD, ORCHESTRATOR, TEST, Platform, app_repo, statuses
from tests.fake_github import FakeGitHub

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


TOKEN = "ghp_" + "5" * 36


def test_the_grace_bounds_a_target_stuck_in_git_or_forge_retries_and_what_was_done_is_kept(
    platform: Platform,
):
    """One target's git push hangs, another's PR is in GitHub's back-off loop (a 502 on every
    review request): SIGTERM with a 2 s grace ends the run in bounded time, kills the hung git
    and what it started, and keeps every record; the re-run redoes nothing that was done and
    finds the PR the cancelled target had opened."""
    github = FakeGitHub(TOKEN, platform.root / "github").start()
    try:
        _stuck_in_git_or_forge_retries(platform, github)
    finally:
        github.stop()


def _stuck_in_git_or_forge_retries(platform: Platform, github: FakeGitHub) -> None:
    github.add_org("acme")
    files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
    for name in ("alpha", "beta", "gamma"):
        github.add_repo(f"acme/{name}", files, topics=["python"], language="Python")
    # beta: its PR is opened, then asking its reviewer fails with a 502 every time (the forge
    # backs off 1, 2, 4 … 60 s between tries: minutes in all).
    github.inject("502", methods={"POST"}, path=r"/repos/acme/beta/pulls/\d+/requested_reviewers")
    # gamma: its push hangs (a git that never answers), in a process git started, as
    # git-remote-https is: killing git alone would leave it running.
    hang, pids = platform.root / "hang", platform.root / "hung-pids"
    hang.touch()
    wrapper = platform.root / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *push*acme/gamma*) if [ -e {hang} ]; then\n'
        f"  sleep 300 & echo $$ $! > {pids}; wait; exit 1; fi;; esac\n"
        f'exec {shutil.which("git")} "$@"\n'
    )
    wrapper.chmod(0o755)
    platform.use_github(github.base_url, TOKEN)
    path = platform.campaigns / "rename.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": "rename", "description": "Rename OLD to NEW.", "concurrency": 3,
        "discover": {"github": {"org": "acme", "topics": ["python"]}},
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
        "pull_request": {"reviewers": ["octocat"]},
    }))  # fmt: skip
    grace = 2
    run_env = {**platform.env, "ORCHESTRATOR_SHUTDOWN_GRACE_S": str(grace),
               "PATH": f"{wrapper.parent}:{platform.env['PATH']}"}  # fmt: skip
    proc = subprocess.Popen([ORCHESTRATOR, "run", "--file", str(path)], env=run_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        # mid-campaign: alpha is done, beta is in the back-off loop, gamma's push hangs
        while not (github.repos["acme/alpha"].pulls and github.fault_log and pids.exists()
                   and pids.read_text().strip()):  # fmt: skip
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the campaign did not get stuck as planned"
            time.sleep(0.2)
        time.sleep(1)  # alpha's records are written a moment after its PR
        proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        try:
            out, err = proc.communicate(timeout=grace + 90)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # A loose bound (machines are slow and shared); today's retries and git hang take minutes.
    assert took < grace + 30, f"took {took:.0f}s to stop after SIGTERM"
    assert proc.returncode == 143, out + err
    assert "stopped (SIGTERM)" in err
    hung = [int(p) for p in pids.read_text().split()]
    gone = time.monotonic() + 10
    while any(process_alive(p) for p in hung):
        assert time.monotonic() < gone, "the hung git push (or what it started) still runs"
        time.sleep(0.1)
    assert len(github.repos["acme/beta"].pulls) == 1  # beta's PR was opened before the signal

    # What was done is recorded: alpha's PR, beta's change and verification (pushed), and the
    # attempts that were cancelled, so that the next run knows where each target stands.
    with platform.instance() as instance:
        from orchestrator_assets.spec.catalog import load_one

        spec = load_one(path, platform.settings()).spec
        changes = history.latest_changes(instance, spec)
        prs = history.latest_pull_requests(instance, spec)
    assert prs["acme__alpha"].number == 1 and prs["acme__alpha"].outcome == "opened"
    assert changes["acme__beta"].head_sha == github.refs("acme/beta")["campaign/rename"]
    assert "cancelled" in (prs["acme__beta"].reason or "")
    # gamma's cancelled push is recorded as that stage's failure (the change stage or the PR
    # stage, wherever the push is), so the next run pushes again
    gamma = [r.reason or "" for r in (changes["acme__gamma"], prs.get("acme__gamma")) if r]
    assert any("cancelled" in reason for reason in gamma), (gamma, err)

    # The re-run, with GitHub and git well again, finishes the rest and redoes nothing.
    hang.unlink()
    github.faults.clear()
    outcome = platform.run(path)
    assert outcome.failed_runs == [] and not outcome.interrupted
    assert set(statuses(outcome.report).values()) == {"pr_open"}
    assert {n: len(r.pulls) for n, r in github.repos.items()} == {
        "acme/alpha": 1, "acme/beta": 1, "acme/gamma": 1
    }  # fmt: skip
    assert github.pr("acme/beta", 1).reviewers == ["octocat"]  # the same PR, found and updated
    with platform.instance() as instance:
        again = history.latest_changes(instance, spec)
    assert again["acme__alpha"].reused and again["acme__beta"].reused
