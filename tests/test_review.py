"""The human review loop: decisions from the CLI, the review job and draft-PR reviews; partial
approval; review timeouts; the review sensor; diffs, logs and Slack notifications."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from orchestrator_assets.assets import history
from orchestrator_assets.assets.factory import build_campaign_definitions
from orchestrator_assets.assets.runner import campaign_definitions
from orchestrator_assets.demo_fleet import RepoSpec
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.stages import review
from resources.build import build_forge
from resources.notify import NotifierResource
from sensors.review import build_review_sensor
from tests.conftest import ORCHESTRATOR, Platform, app_repo, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

FLEET = [
    app_repo("alpha", "GREETING = 'OLD'\n"),
    app_repo("beta", "GREETING = 'OLD'\n"),
    app_repo("gamma", "GREETING = 'NEW'\n"),  # nothing to change: never awaits review
]
# Renames OLD to NEW in app.py and in notes.txt (when there is one): a change of two files.
TWO_FILES = (
    "python -c \"import pathlib; [p.write_text(p.read_text().replace('OLD', 'NEW')) "
    "for p in map(pathlib.Path, ['app.py', 'notes.txt']) if p.exists()]\""
)


class SlackReceiver:
    """A local HTTP server standing in for a Slack incoming webhook: keeps what is posted."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self, kind: str) -> list[str]:
        return [p["text"] for p in self.posts if p["metadata"]["event_type"] == f"campaign_{kind}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, platform: Platform):
    receiver = SlackReceiver()
    monkeypatch.setenv("ORCHESTRATOR_SLACK_WEBHOOK_URL", receiver.url)
    platform.env["ORCHESTRATOR_SLACK_WEBHOOK_URL"] = receiver.url
    yield receiver
    receiver.close()


def reviewed(platform: Platform, name: str = "reviewed", fleet=FLEET, **fields) -> Path:
    targets = [str(p) for p in platform.make_fleet(fleet)]
    return platform.write_campaign(
        name, targets=targets, review={"policy": "required", "timeout": "24h"}, **fields
    )


def pulls(platform: Platform, repo: str) -> list[dict]:
    folder = platform.fleet / "acme" / f"{repo}.git" / "pulls"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def branch_files(platform: Platform, repo: str, branch: str = "campaign/reviewed") -> list[str]:
    """The files the campaign branch changes against its base (what its PR shows)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", f"main...{branch}"],
        cwd=platform.fleet / "acme" / f"{repo}.git", capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def unresolved_targets_job(path: Path, platform: Platform):
    """The campaign's targets job as the sensor gets it (not bound to resources)."""
    campaign = load_one(path, platform.settings())
    defs = build_campaign_definitions(campaign.spec, campaign.profile)
    return next(j for j in defs.jobs if j.name == f"{campaign.spec.id}_targets")


def decisions(platform: Platform, spec) -> list[dict]:
    """Every recorded decision's metadata, oldest first."""
    with platform.instance() as instance:
        found, _ = review.decisions_since(instance, spec, 0)
    return [d.model_dump() for d in found]


def test_required_review_waits_then_cli_decisions_apply_on_the_next_run(platform, slack):
    path = reviewed(platform)
    first = platform.run(path)
    assert statuses(first.report) == {
        "acme__alpha": "awaiting_review", "acme__beta": "awaiting_review",
        "acme__gamma": "no_change",
    }  # fmt: skip
    assert pulls(platform, "alpha") == [] and pulls(platform, "beta") == []
    waiting = slack.texts("awaiting_review")
    assert len(waiting) == 2 and any(
        "acme__alpha" in t and "+GREETING = 'NEW'" in t for t in waiting
    )

    env = {"ORCHESTRATOR_ACTOR": "alice"}
    platform.env.update(env)
    out = platform.cli("approve", "reviewed", "acme__alpha", "--reason", "looks right").stdout
    assert "acme__alpha approved by alice via cli: looks right" in out
    out = platform.cli("reject", "reviewed", "acme__beta", "--reason", "team freeze").stdout
    assert "rejected by alice" in out
    spec = load_one(path, platform.settings()).spec
    recorded = decisions(platform, spec)
    assert [(d["target"], d["decision"], d["actor"], d["reason"]) for d in recorded] == [
        ("acme__alpha", "approve", "alice", "looks right"),
        ("acme__beta", "reject", "alice", "team freeze"),
    ]
    assert all(d["head_sha"] and d["at"] > 0 for d in recorded)
    # A rejection is final at once; the approval waits for the next run.
    report = platform.cli("report", "reviewed", "--output", "json").stdout
    rows = {r["target"]: r for r in json.loads(report)}
    assert rows["acme__beta"]["status"] == "rejected"
    assert rows["acme__beta"]["reason"] == "team freeze"
    assert rows["acme__alpha"]["decision"] == "approve by alice"

    # Without a daemon, running the campaign again applies the decisions.
    second = platform.run(path)
    got = statuses(second.report)
    assert got["acme__alpha"] == "pr_open" and got["acme__beta"] == "rejected"
    assert len(pulls(platform, "alpha")) == 1 and pulls(platform, "beta") == []
    # A third run changes nothing: no second PR; the rejected target is left alone.
    third = platform.run(path)
    assert statuses(third.report) == got
    assert "acme__beta" in third.skipped_final
    assert len(pulls(platform, "alpha")) == 1
    # The campaign finished once (counts and cost), not on every run.
    finished = slack.texts("campaign_finished")
    assert len(finished) == 1 and "pr_open: 1" in finished[0] and "rejected: 1" in finished[0]


def test_bad_decisions_get_clear_errors(platform):
    path = reviewed(platform)
    platform.run(path, ["acme__alpha", "acme__gamma"])
    proc = platform.cli("steer", "reviewed", "acme__alpha", "--prompt", "more", check=False)
    assert proc.returncode == 2
    assert "steer needs an agentic campaign (the transformation is deterministic)" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = platform.cli("approve", "reviewed", "acme__gamma", check=False)
    assert proc.returncode == 2 and "there is no change to review yet" in proc.stderr
    proc = platform.cli("approve", "reviewed", "acme__nope", check=False)
    assert "has no target 'acme__nope'" in proc.stderr
    proc = platform.cli("approve", "reviewed", "acme__alpha", "--files", "nope.py", check=False)
    assert "--files names file(s) the change does not touch: nope.py" in proc.stderr
    assert "it changes: app.py" in proc.stderr
    spec = load_one(path, platform.settings()).spec
    assert decisions(platform, spec) == []  # nothing was recorded for a refused decision


def test_partial_approval_opens_a_pr_with_exactly_the_approved_files(platform):
    files = {
        "app.py": "GREETING = 'OLD'\n",
        "notes.txt": "OLD notes\n",
        "tests/test_app.py": "def test_ok():\n    assert True\n",
    }
    fleet = [RepoSpec("alpha", files)]
    path = reviewed(platform, fleet=fleet, transformation={"kind": "deterministic",
                                                           "command": TWO_FILES})  # fmt: skip
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        made = history.latest_changes(instance, spec)["acme__alpha"]
    assert made.files == ["app.py", "notes.txt"]
    # waiting for its review, the change is not on the forge: only an approved one is published
    assert not subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "refs/heads/campaign/reviewed"],
        cwd=platform.fleet / "acme" / "alpha.git", capture_output=True,
    ).stdout  # fmt: skip
    platform.cli("approve", "reviewed", "acme__alpha", "--files", "app.py")
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    assert branch_files(platform, "alpha") == ["app.py"]
    (pr,) = pulls(platform, "alpha")
    assert pr["state"] == "open"
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        change = history.latest_changes(instance, spec)["acme__alpha"]
        verification = history.latest_verifications(instance, spec)["acme__alpha"]
    assert change.files == ["app.py"]
    assert [(i.number, i.kind, i.files) for i in change.iterations] == [
        (1, "initial", []), (2, "partial", ["app.py"]),
    ]  # fmt: skip
    # The cut-down change was verified again before its PR opened.
    assert verification.head_sha == change.head_sha and verification.passed
    diff = platform.cli("diff", "reviewed", "acme__alpha").stdout
    assert "app.py" in diff and "notes.txt" not in diff and "\x1b[" not in diff
    first = platform.cli("diff", "reviewed", "acme__alpha", "--iteration", "1").stdout
    assert "notes.txt" in first


def test_diff_is_coloured_in_a_terminal_and_logs_show_verifier_output(platform):
    path = reviewed(platform)
    platform.run(path, ["acme__alpha"])
    plain = platform.cli("diff", "reviewed", "acme__alpha").stdout
    assert plain.startswith("diff --git a/app.py b/app.py") and "+GREETING = 'NEW'" in plain
    coloured = subprocess.run(
        [ORCHESTRATOR, "diff", "reviewed", "acme__alpha"],
        env={**platform.env, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "\x1b[" in coloured and "GREETING" in coloured
    assert platform.cli("diff", "reviewed", "acme__alpha", "--stat").stdout.strip() == (
        "app.py +1 -1"
    )
    logs = platform.cli("logs", "reviewed", "acme__alpha").stdout
    assert "verifier test passed" in logs and "1 passed" in logs


def test_review_sensor_requests_one_run_per_decision_and_expires_late_reviews(platform, slack):
    path = reviewed(platform)
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    targets_job = unresolved_targets_job(path, platform)
    clock = [0.0]
    sensor = build_review_sensor(
        spec, targets_job, lambda: None, clock=lambda: clock[0],  # type: ignore[arg-type, return-value]
        notifier_getter=NotifierResource().get,
    )  # fmt: skip
    with platform.instance() as instance:
        waiting = review.awaiting_targets(instance, spec)
        assert set(waiting) == {"acme__alpha", "acme__beta"}
        latest = max(w.since for w in waiting.values())
        clock[0] = latest + 3600  # an hour later: nothing has timed out
        result = sensor(dg.build_sensor_context(instance=instance))
        assert result.run_requests == [] and decisions(platform, spec) == []

        platform.cli("approve", "reviewed", "acme__alpha")
        result = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        (request,) = result.run_requests
        assert request.partition_key == "acme__alpha"
        assert request.tags["orchestrator/review"] == decisions(platform, spec)[0]["id"]
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert again.run_requests == []  # the cursor moved past it

        clock[0] = latest + 25 * 3600  # beta waited more than 24h
        expired = sensor(dg.build_sensor_context(instance=instance, cursor=again.cursor))
        (request,) = expired.run_requests
        assert request.partition_key == "acme__beta"
        last = decisions(platform, spec)[-1]
        assert (last["target"], last["decision"], last["source"]) == (
            "acme__beta", "reject", "timeout",
        )  # fmt: skip
        assert last["reason"] == "timeout: no review within 24h"
        rows = {r["target"]: r for r in review_rows(instance, spec)}
        assert rows["acme__beta"]["status"] == "rejected"
        assert rows["acme__beta"]["reason"] == "timeout: no review within 24h"
    assert any("acme__beta" in t and "timed out" in t for t in slack.texts("review_timeout"))


def review_rows(instance, spec) -> list[dict]:
    from orchestrator_assets.reports.report import build_report

    return build_report(instance, spec).to_dict("records")


def test_review_job_records_a_decision_from_its_config(platform):
    path = reviewed(platform)
    platform.run(path, ["acme__alpha"])
    campaign = load_one(path, platform.settings())
    spec = campaign.spec
    job = campaign_definitions(campaign, platform.settings()).resolve_job_def(f"{spec.id}_review")
    config = {"ops": {f"{spec.id}__review": {"config": {
        "target": "acme__alpha", "decision": "approve", "reason": "from the launchpad",
        "actor": "bob",
    }}}}  # fmt: skip
    with platform.instance() as instance:
        result = job.execute_in_process(instance=instance, run_config=config)
        assert result.success
        (decision,) = decisions(platform, spec)
        assert (decision["actor"], decision["source"], decision["reason"]) == (
            "bob", "job", "from the launchpad",
        )  # fmt: skip
        bad = {"ops": {f"{spec.id}__review": {"config": {
            "target": "acme__alpha", "decision": "steer", "prompt": "x"}}}}  # fmt: skip
        failed = job.execute_in_process(instance=instance, run_config=bad, raise_on_error=False)
        assert not failed.success
        (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "steer needs an agentic campaign" in failure.step_failure_data.error.message
    assert statuses(platform.run(path, ["acme__alpha"]).report)["acme__alpha"] == "pr_open"


def test_a_draft_pr_review_on_the_forge_becomes_the_decision(platform):
    path = reviewed(platform, pull_request={"draft": True})
    platform.run(path)
    (draft,) = pulls(platform, "alpha")
    assert draft["draft"] is True and draft["state"] == "open"
    spec = load_one(path, platform.settings()).spec
    targets_job = unresolved_targets_job(path, platform)
    edit = platform.fleet / "acme" / "alpha.git" / "pulls" / "1.json"
    data = json.loads(edit.read_text())
    edit.write_text(json.dumps({**data, "review": "approved"}))
    edit_beta = platform.fleet / "acme" / "beta.git" / "pulls" / "1.json"
    data = json.loads(edit_beta.read_text())
    edit_beta.write_text(json.dumps({**data, "review": "changes_requested"}))
    from resources.build import build_forge

    sensor = build_review_sensor(spec, targets_job, lambda: build_forge(platform.settings()))
    with platform.instance() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
    assert {r.partition_key for r in result.run_requests} == {"acme__alpha", "acme__beta"}
    made = {d["target"]: d for d in decisions(platform, spec)}
    assert made["acme__alpha"]["decision"] == "approve" and made["acme__alpha"]["source"] == "local"
    # A deterministic change cannot be steered: changes requested rejects it.
    assert made["acme__beta"]["decision"] == "reject"
    outcome = platform.run(path)
    got = statuses(outcome.report)
    assert got["acme__alpha"] == "pr_open" and got["acme__beta"] == "rejected"
    assert pulls(platform, "alpha")[0]["draft"] is False  # approved: published
    assert pulls(platform, "beta")[0]["state"] == "closed"  # rejected: its draft closed


def test_with_the_daemon_a_launched_review_job_leads_to_the_pull_request(platform, tmp_path):
    """The whole loop as a platform team runs it: the review job launched with `dagster job
    launch` and its config, the daemon running it and the review sensor applying the decision."""
    import os
    import sys
    import time

    import yaml

    path = reviewed(platform)
    platform.run(path, ["acme__alpha"])
    spec = load_one(path, platform.settings()).spec
    project = Path(__file__).resolve().parents[1]
    env = {**platform.env, "ORCHESTRATOR_REVIEW_POLL_INTERVAL_S": "2", "PYTHONPATH": str(project)}
    config = tmp_path / "approve.yaml"
    decided = {"target": "acme__alpha", "decision": "approve", "actor": "dana", "reason": "ship it"}
    config.write_text(yaml.safe_dump({"ops": {f"{spec.id}__review": {"config": decided}}}))
    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(project / "workspace.yaml")]
    launch = subprocess.run(
        [str(bin_dir / "dagster"), "job", "launch", *workspace, "-j", f"{spec.id}_review",
         "-c", str(config)],
        env=env, cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr[-2000:]
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", *workspace], env=env, cwd=project,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def applied_runs() -> list[dg.DagsterRun]:
        """The finished runs the review sensor requested for the recorded decision."""
        found = decisions(platform, spec)
        if not found:
            return []
        with platform.instance() as instance:
            runs = instance.get_runs(dg.RunsFilter(tags={"orchestrator/review": found[0]["id"]}))
        return [r for r in runs if r.is_finished]

    try:
        # Until the run the sensor requested has finished, not only until its PR exists:
        # stopping the daemon's process group earlier interrupts that run.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if pulls(platform, "alpha") and applied_runs():
                break
            assert daemon.poll() is None, "the daemon exited"
            time.sleep(2)
        (pr,) = pulls(platform, "alpha")
        assert pr["state"] == "open"
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)
    (decision,) = decisions(platform, spec)
    assert (decision["actor"], decision["source"], decision["reason"]) == ("dana", "job", "ship it")
    runs = applied_runs()
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS


def test_cancel_stops_a_running_campaign_and_removes_its_sandboxes(platform):
    import time

    targets = [str(p) for p in platform.make_fleet(FLEET[:2])]
    slow = 'python -c "import time; time.sleep(120)"'
    platform.write_campaign(
        "slow", targets=targets, concurrency=1,
        transformation={"kind": "deterministic", "command": slow},
    )  # fmt: skip
    assert "nothing running for slow" in platform.cli("cancel", "slow").stdout
    env = {**platform.env, "ORCHESTRATOR_SHUTDOWN_GRACE_S": "1"}
    runner = subprocess.Popen(
        [ORCHESTRATOR, "run", "--campaign", "slow"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listed = json.loads(platform.cli("sandboxes", "list", "--output", "json").stdout)
            if listed:
                break
            time.sleep(0.5)
        assert listed, "no sandbox appeared"
        out = platform.cli("cancel", "slow", "acme__alpha").stdout
        assert "process" in out and "stopped" in out
        runner.wait(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode != 0
    assert json.loads(platform.cli("sandboxes", "list", "--output", "json").stdout) == []
    leftover = subprocess.run(["pgrep", "-f", "time.sleep\\(120\\)"], capture_output=True)
    assert leftover.stdout == b""  # no command of the campaign still runs


def test_audit_lists_decisions_bulk_actions_cancels_pushes_and_pr_writes(platform):
    path = reviewed(platform)
    platform.run(path)
    platform.env["ORCHESTRATOR_ACTOR"] = "erin"
    platform.cli("approve", "reviewed", "acme__alpha", "--reason", "fine")
    platform.cli("reject", "reviewed", "acme__beta", "--reason", "not now")
    platform.run(path)
    platform.cli("prs", "comment", "reviewed", "--message", "ping", "--yes")
    platform.cli("cancel", "reviewed")
    lines = platform.cli("audit", "reviewed", "--output", "json").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    seen = [(e["target"], e["actor"], e["action"]) for e in entries]
    assert ("acme__alpha", "erin", "approve (cli)") in seen
    assert ("acme__beta", "erin", "reject (cli)") in seen
    assert ("acme__alpha", "erin", "pr comment") in seen
    assert (None, "erin", "cancel") in seen
    pushes = [e for e in entries if e["action"] == "push"]
    # only an approved change is published: the rejected one never reached the forge
    assert {e["target"] for e in pushes} == {"acme__alpha"}
    assert all(e["actor"].startswith("platform (run ") and e["run_id"] for e in pushes)
    opened = [e for e in entries if e["action"] == "pr opened"]
    assert [e["target"] for e in opened] == ["acme__alpha"] and opened[0]["detail"].startswith("#1")
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    reasons = {e["action"]: e["reason"] for e in entries if e["target"] == "acme__beta"}
    assert reasons["reject (cli)"] == "not now"
    platform.env["COLUMNS"] = "250"
    table = platform.cli("audit").stdout  # every campaign, as a table
    assert "approve (cli)" in table and "audited action(s)" in table


def test_a_merged_pr_is_announced_once(platform, slack):
    from sensors.pr_status import build_pr_status_sensor

    path = platform.write_campaign(
        "plain", targets=[str(p) for p in platform.make_fleet(FLEET[:1])]
    )
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    spec = load_one(path, platform.settings()).spec
    clock = [1_000_000.0]
    sensor = build_pr_status_sensor(
        spec, lambda: build_forge(platform.settings()), clock=lambda: clock[0],
        notifier_getter=NotifierResource().get,
    )  # fmt: skip
    with platform.instance() as instance:
        first = sensor(dg.build_sensor_context(instance=instance))
        assert slack.texts("merged") == []  # open: nothing to announce
        record = platform.fleet / "acme" / "alpha.git" / "pulls" / "1.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "state": "merged"}))
        clock[0] += 3600
        sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    (merged,) = slack.texts("merged")
    assert "*plain*: `acme__alpha` merged" in merged
