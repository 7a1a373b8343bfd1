"""Many targets in one step: each target's failure is its own, cancellation stops the rest, and
the shutdown grace is a bound: after it, git processes are killed and forge back-offs cut short,
and what the cancelled targets return is still recorded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestrator_assets.assets import fanout
from orchestrator_assets.assets.fanout import fan_out
from orchestrator_assets.assets.sweep import process_alive
from resources.cancel import CANCELLED_MESSAGE
from resources.forges.base import ForgeError
from resources.forges.github import GitHubForge
from resources.git import GitError, run_git
from tests.fake_github import FakeGitHub


def test_one_target_raising_does_not_stop_the_others():
    def work(key: str, log):
        log(f"{key}: working")
        if key == "b":
            raise RuntimeError("boom")
        return f"ok {key}"

    lines: list[str] = []
    results = dict(
        fan_out(["a", "b", "c"], work, lambda k, exc: f"failed {k}: {exc}", max_workers=2,
                log=lines.append)
    )  # fmt: skip
    assert results == {"a": "ok a", "b": "failed b: boom", "c": "ok c"}
    logged = "\n".join(lines).splitlines()  # lines arrive batched, several per log message
    assert {"a: working", "c: working"} <= set(logged)
    assert any(line.startswith("b: unexpected error: boom") for line in logged)


def test_interrupting_the_step_cancels_running_work_and_starts_no_more():
    release = threading.Event()
    started: list[str] = []
    cancelled = threading.Event()

    def work(key: str, log):
        started.append(key)
        if key != "a":
            release.wait(10)  # a long sandbox command
        return key

    def cancel():  # what the asset passes: kill the sandboxes' commands
        cancelled.set()
        release.set()

    results = fan_out(["a", "b", "c", "d"], work, lambda k, e: None, max_workers=1,
                      log=lambda _: None, cancel=cancel)  # fmt: skip
    assert next(results) == ("a", "a")
    results.close()  # the run is cancelled: Dagster interrupts the step at this point
    assert cancelled.is_set()
    assert "c" not in started and "d" not in started


@pytest.fixture
def shutdown(monkeypatch: pytest.MonkeyPatch):
    """SIGTERM as the runner sees it, with a short grace; cleared afterwards for other tests."""
    monkeypatch.setattr(fanout, "SHUTDOWN_GRACE_S", 0.5)
    yield fanout.SHUTDOWN
    fanout.SHUTDOWN.clear()


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.05)


def _stop_once_done_finished(work, shutdown: threading.Event, before_stop=lambda: None):
    """Fan out a target that finishes ("done") and one that hangs ("stuck"); ask for shutdown
    once "done" is recorded. Returns every target's result and how long it all took."""
    started = time.monotonic()
    results = {}
    for key, result in fan_out(["done", "stuck"], work, lambda k, e: f"error {e}",
                               max_workers=2, log=lambda _: None):  # fmt: skip
        results[key] = result
        if key == "done":
            before_stop()
            shutdown.set()
    return results, time.monotonic() - started


def test_after_the_grace_a_git_command_is_killed_with_its_children_and_its_target_recorded(
    tmp_path: Path, shutdown: threading.Event
):
    # A git command that hangs, as a push to a stalled server does: git runs a shell that
    # becomes `sleep` (a child of git, like git-remote-https); killing only git would leave it.
    pidfile = tmp_path / "pid"
    hang = f"!echo $$ > {pidfile}; exec sleep 60"

    def work(key: str, log) -> str:
        if key == "done":
            return "pushed"
        try:
            run_git(["-c", f"alias.hang={hang}", "hang"], tmp_path)
        except GitError as exc:
            return f"recorded: {exc.stderr}"  # what stages do: the failure becomes the record
        return "finished"

    results, took = _stop_once_done_finished(
        work, shutdown, lambda: _wait_for(pidfile, "the hanging git command")
    )
    assert took < 30, f"fan_out took {took:.0f}s: the grace is no bound"  # the git hang is 60 s
    assert results == {"done": "pushed", "stuck": f"recorded: {CANCELLED_MESSAGE}"}
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while process_alive(child):  # SIGKILL is delivered at once; its reaping may lag a moment
        assert time.monotonic() < deadline, "git's child process outlived the cancel"
        time.sleep(0.05)


def test_after_the_grace_a_forge_back_off_is_cut_short_and_its_target_recorded(
    tmp_path: Path, shutdown: threading.Event
):
    token = "ghp_" + "0" * 36
    with FakeGitHub(token, tmp_path / "github") as github:
        github.add_org("acme")
        github.add_repo("acme/alpha", {"app.py": "x = 1\n"})
        github.inject("502", methods={"GET"}, path="/repos/acme/alpha/pulls")
        # GitHub keeps failing: the forge backs off 20 s, 40 s, … (60 s at most) between tries.
        forge = GitHubForge(token, github.base_url, backoff_s=20, max_wait_s=60)
        tried = threading.Event()

        def work(key: str, log) -> str:
            if key == "done":
                tried.wait(30)
                return "opened"
            try:
                forge.find_pull_request("acme/alpha", "campaign/x")
            except ForgeError as exc:
                return f"recorded: {exc}"
            return "found"

        def watch():
            while not github.fault_log:
                time.sleep(0.05)
            tried.set()

        threading.Thread(target=watch, daemon=True).start()
        results, took = _stop_once_done_finished(work, shutdown)
    assert took < 30, f"fan_out took {took:.0f}s: the grace is no bound"
    assert results["done"] == "opened"
    assert results["stuck"] == f"recorded: GitHub: {CANCELLED_MESSAGE}"
    assert len(github.fault_log) == 1  # no further try after the cancel


def test_a_worker_that_ignores_the_cancel_is_abandoned_not_waited_for(
    shutdown: threading.Event, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(fanout, "CANCEL_WAIT_S", 0.5)
    release = threading.Event()
    cancelled = threading.Event()

    def work(key: str, log) -> str:
        if key == "stuck":
            shutdown.set()
            release.wait(60)  # nothing the platform can interrupt (a read that never returns)
        return key

    lines: list[str] = []
    started = time.monotonic()
    results = dict(fan_out(["stuck"], work, lambda k, e: "error", max_workers=1,
                           log=lines.append, cancel=cancelled.set))  # fmt: skip
    took = time.monotonic() - started
    release.set()
    assert took < 30 and results == {}
    assert cancelled.is_set()  # the sandboxes' commands were killed
    assert any("left unrecorded: stuck" in line for line in lines)
