"""CI-driven repair: a PR whose checks fail on the code host (or that conflicts after its base
moved) is repaired by a run the PR status sensor requests — the real Claude Code CLI resumed in
its session with the failed check's log (against the scripted Messages API), or a deterministic
codemod run again on the new base — on the local forge with a real Dagster instance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from orchestrator_assets.assets import history
from orchestrator_assets.assets.rollout_history import latest_ci_repairs
from orchestrator_assets.demo_fleet import create_repo
from orchestrator_assets.reports import report
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.stages.ci_repair import CI_REPAIR_TAG
from resources.forges.base import ForgeError
from resources.forges.local import LocalForge
from resources.git import run_git
from sensors.pr_status import build_pr_status_sensor
from tests.conftest import Platform, app_repo, statuses
from tests.fake_model import last_user_text, text, tool
from tests.test_agentic import model  # noqa: F401 (the scripted model server fixture)
from tests.test_github_forge import BRANCH as GITHUB_BRANCH
from tests.test_github_forge import app, clock, fake, forge  # noqa: F401 (fixtures)
from tests.test_rollout import _job, launch, tick

LINT_LOG = (
    "Run ruff check .\n"
    + "".join(f"checking file {i}\n" for i in range(400))
    + "app.py:1:1: E999 GREETING must say why it is NEW\nFound 1 error.\nError: exit code 1\n"
)


class Clock:
    """The sensor's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pr_record(repo: Path, number: int = 1) -> Path:
    return repo / "pulls" / f"{number}.json"


def edit_pr(repo: Path, **fields) -> None:
    """What the code host's CI does to a local PR: set fields in its JSON record."""
    path = pr_record(repo)
    path.write_text(json.dumps(json.loads(path.read_text()) | fields, indent=2))


def branch_head(repo: Path, branch: str) -> str:
    return run_git(["rev-parse", f"refs/heads/{branch}"], repo).strip()


def test_failed_checks_wake_the_agent_in_its_session_with_the_log_and_the_fix_is_pushed(
    platform: Platform,
    bwrap: None,
    model,  # noqa: F811
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign(
        "cifix",
        targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 6,
                        "verifier_tools": False, "max_stop_blocks": 0},
        ci_repairs=1,
    )  # fmt: skip
    fix = "printf '# NEW: the new greeting\\n' >> app.py"
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
        tool("Bash", {"command": fix, "description": "say why"}),
        text("Explained the greeting."),
    ]
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    spec = load_one(path, platform.settings()).spec
    first_head = branch_head(repo, spec.branch_name)
    edit_pr(repo, checks="failure", check_logs={"lint": LINT_LOG})

    ticks = Clock()
    sensor = build_pr_status_sensor(
        spec, lambda: LocalForge(), clock=ticks, job=_job(platform, path)
    )
    with platform.instance() as instance:
        result = tick(sensor, instance, None)
        assert [(r.partition_key, r.tags) for r in result.run_requests] == [
            ("acme__alpha", {CI_REPAIR_TAG: "checks"})
        ]
        request = latest_ci_repairs(instance, spec)["acme__alpha"]
        assert (request.attempt, request.reason, request.failing) == (1, "checks", ["lint"])
        assert request.head_sha == first_head and "E999" in request.logs["lint"]

    launch(platform, path, result.run_requests[0])

    # the agent was resumed in its session (its first turn re-sent) with the trimmed log
    resumed = next(
        r["json"] for r in model.conversation_requests
        if "checks failed on the code host" in last_user_text(r["json"])
    )  # fmt: skip
    feedback = last_user_text(resumed)
    assert "E999 GREETING must say why" in feedback and "lint" in feedback
    assert "checking file 3\n" not in feedback and len(feedback) < 3000  # trimmed
    assert "sed -i s/OLD/NEW/ app.py" in json.dumps(resumed["messages"])
    with platform.instance() as instance:
        change = history.latest_changes(instance, spec)["acme__alpha"]
        assert [i.kind for i in change.iterations] == ["initial", "ci_repair"]
        assert change.iterations[-1].cost_usd > 0
        assert change.total_cost_usd == pytest.approx(sum(i.cost_usd for i in change.iterations))
        # the fix is verified and pushed to the same PR
        new_head = branch_head(repo, spec.branch_name)
        assert new_head == change.head_sha != first_head
        assert "# NEW: the new greeting" in run_git(["show", f"{new_head}:app.py"], repo)
        row = report.build_report(instance, spec).set_index("target").loc["acme__alpha"]
        assert (row["status"], row["ci_repairs"], row["pr_number"]) == ("pr_open", 1, 1)

        # the new head fails as well: no repair is left (ci_repairs: 1)
        ticks.now += 60
        again = tick(sensor, instance, result.cursor)
        assert not again.run_requests
        assert latest_ci_repairs(instance, spec)["acme__alpha"].attempt == 1


def move_base(repo: Path, work: Path, content: str) -> None:
    """Someone changes app.py on main (the same line as the campaign)."""
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    (work / "app.py").write_text(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "comment"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, check=True)


def test_a_conflict_resumes_the_agent_on_the_new_base_with_its_earlier_diff(
    platform: Platform,
    tmp_path: Path,
    bwrap: None,
    model,  # noqa: F811
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign(
        "cimerge",
        targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 6,
                        "verifier_tools": False, "max_stop_blocks": 0},
        ci_repairs=1,
    )  # fmt: skip
    rename = {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}
    model.script = [tool("Bash", rename), text("Renamed."), tool("Bash", rename), text("Again.")]
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    spec = load_one(path, platform.settings()).spec
    move_base(repo, tmp_path / "work", "GREETING = 'OLD'  # the greeting\n")
    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), job=_job(platform, path))
    with platform.instance() as instance:
        (request,) = tick(sensor, instance, None).run_requests
    assert request.tags == {CI_REPAIR_TAG: "conflict"}
    launch(platform, path, request)

    resumed = next(
        r["json"] for r in model.conversation_requests
        if "no longer merges" in last_user_text(r["json"])
    )  # fmt: skip
    prompt = last_user_text(resumed)
    assert "-GREETING = 'OLD'" in prompt and "+GREETING = 'NEW'" in prompt  # the earlier diff
    assert "the base branch as it is now, without your change" in prompt
    assert "Renamed." in json.dumps(resumed["messages"])  # the same session
    head, main = branch_head(repo, spec.branch_name), branch_head(repo, "main")
    assert run_git(["rev-parse", f"{head}^"], repo).strip() == main
    assert run_git(["show", f"{head}:app.py"], repo) == "GREETING = 'NEW'  # the greeting\n"
    assert LocalForge().pull_request_status(str(repo), 1).mergeable is True
    with platform.instance() as instance:
        change = history.latest_changes(instance, spec)["acme__alpha"]
        assert [i.kind for i in change.iterations] == ["initial", "ci_repair"]
        assert change.base_sha == main and change.iterations[-1].cost_usd > 0


def test_a_conflict_after_the_base_moved_reruns_the_codemod_on_the_new_base(
    platform: Platform, tmp_path: Path, bwrap: None
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign("conflict", targets=[str(repo)], ci_repairs=2)
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    spec = load_one(path, platform.settings()).spec
    old_head = branch_head(repo, spec.branch_name)

    # someone changes the same line on main: the PR no longer merges
    move_base(repo, tmp_path / "work", "GREETING = 'OLD'  # the greeting\n")
    assert LocalForge().pull_request_status(str(repo), 1).mergeable is False

    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), job=_job(platform, path))
    with platform.instance() as instance:
        result = tick(sensor, instance, None)
        assert [r.tags[CI_REPAIR_TAG] for r in result.run_requests] == ["conflict"]
    launch(platform, path, result.run_requests[0])

    new_head = branch_head(repo, spec.branch_name)
    assert new_head != old_head
    main = branch_head(repo, "main")
    assert run_git(["rev-parse", f"{new_head}^"], repo).strip() == main  # on the new base
    assert run_git(["show", f"{new_head}:app.py"], repo) == "GREETING = 'NEW'  # the greeting\n"
    status = LocalForge().pull_request_status(str(repo), 1)
    assert (status.state, status.mergeable) == ("open", True)
    with platform.instance() as instance:
        change = history.latest_changes(instance, spec)["acme__alpha"]
        assert change.base_sha == main
        nothing = tick(sensor, instance, result.cursor)  # mergeable again: nothing to repair
        assert not nothing.run_requests


def test_failed_checks_of_a_deterministic_campaign_on_an_unchanged_base_push_nothing(
    platform: Platform, bwrap: None
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign("same", targets=[str(repo)], ci_repairs=1)
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    head = branch_head(repo, spec.branch_name)
    edit_pr(repo, checks="failure", check_logs={"unit": "FAILED tests/test_app.py\n"})
    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), job=_job(platform, path))
    with platform.instance() as instance:
        result = tick(sensor, instance, None)
    (request,) = result.run_requests
    launch(platform, path, request)
    assert branch_head(repo, spec.branch_name) == head  # the same change: nothing new pushed
    with platform.instance() as instance:
        record = history.latest_pull_requests(instance, spec)["acme__alpha"]
        assert (record.outcome, record.number, record.pushed_sha) == ("unchanged", 1, None)
        again = tick(sensor, instance, None)  # polled again, the same status: not asked again
        assert not again.run_requests and "1 polled, 0 changed" in again.skip_reason.skip_message


def test_no_repair_without_ci_repairs_and_the_local_forge_verbs(platform: Platform, bwrap: None):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign("plain", targets=[str(repo)])
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    edit_pr(repo, checks="failure", check_logs={"unit": "boom\n"})
    local = LocalForge()
    assert local.failed_check_logs(str(repo), 1) == {"unit": "boom\n"}
    assert local.pull_request_status(str(repo), 1).failing_checks == ["unit"]
    edit_pr(repo, checks="success")
    assert local.failed_check_logs(str(repo), 1) == {}
    edit_pr(repo, checks="failure")
    sensor = build_pr_status_sensor(spec, lambda: local, job=_job(platform, path))
    with platform.instance() as instance:
        result = tick(sensor, instance, None)
        assert isinstance(result, dg.SensorResult) and not result.run_requests


# the GitHub contract ------------------------------------------------------------------------------


def test_github_failed_check_logs_read_check_run_output_and_status_descriptions(
    fake,  # noqa: F811
    forge,  # noqa: F811
    app,  # noqa: F811
):
    forge.create_pull_request(app, github_draft())
    sha = fake.refs("acme/app")[GITHUB_BRANCH]
    fake.add_check_run(
        "acme/app", sha, "lint", "completed", "failure",
        output={"title": "1 error", "summary": "ruff found 1 error",
                "text": "app.py:1:1: E999 GREETING must say why"},
        details_url="https://ci.example.com/runs/7",
    )  # fmt: skip
    fake.add_check_run("acme/app", sha, "docs", "completed", "success", output={"text": "ok"})
    fake.set_status(
        "acme/app", sha, "ci/build", "error", description="make: *** [build] Error 2",
        target_url="https://ci.example.com/builds/9",
    )  # fmt: skip
    fake.set_status("acme/app", sha, "ci/deploy", "success")
    logs = forge.failed_check_logs(app, 1)
    assert set(logs) == {"lint", "ci/build"}
    assert "E999 GREETING must say why" in logs["lint"] and "ruff found 1 error" in logs["lint"]
    assert "https://ci.example.com/runs/7" in logs["lint"]
    assert logs["ci/build"] == "make: *** [build] Error 2\nhttps://ci.example.com/builds/9"
    status = forge.pull_request_status(app, 1)
    assert status.checks == "failure" and sorted(status.failing_checks) == ["ci/build", "lint"]
    with pytest.raises(ForgeError, match="pull request #9 not found"):
        forge.failed_check_logs(app, 9)


def github_draft():
    from resources.forges.github import GitHubPullRequestDraft

    return GitHubPullRequestDraft(head=GITHUB_BRANCH, base="main", title="T", body="B")


def test_on_github_waves_ci_repair_and_the_post_merge_watch(platform: Platform, bwrap: None):
    """The three features through the GitHub forge against its API contract."""
    from resources.build import build_forge
    from sensors.post_merge import build_post_merge_sensor
    from sensors.rollout import build_rollout_sensor
    from tests.conftest import TEST
    from tests.fake_github import FakeGitHub

    token = "ghp_" + "6" * 36
    with FakeGitHub(token, platform.root / "github") as github:
        github.add_org("acme")
        for name in ("alpha", "beta"):
            github.add_repo(
                f"acme/{name}", {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
            )
        platform.use_github(github.base_url, token)
        path = platform.write_campaign(
            "gh", targets=["acme/alpha", "acme/beta"], ci_repairs=1,
            rollout={"waves": [1, "all"], "wait_for": "checks_green"},
            post_merge={"watch": "1h"},
        )  # fmt: skip
        platform.cli("run", "--file", str(path))
        assert "campaign/gh" not in github.refs("acme/beta")  # wave 2: nothing pushed
        spec = load_one(path, platform.settings()).spec
        forge = build_forge(platform.settings(), spec)
        ticks, job = Clock(), _job(platform, path)
        status = build_pr_status_sensor(spec, lambda: forge, clock=ticks, job=job)
        waves = build_rollout_sensor(spec, job)

        # alpha's check fails with a log, and its base moves under it with a conflicting edit
        head = github.refs("acme/alpha")["campaign/gh"]
        github.add_check_run(
            "acme/alpha", head, "unit", "completed", "failure",
            output={"title": "1 failed", "text": "FAILED tests/test_app.py::test_greeting"},
        )  # fmt: skip
        github.create_branch("acme/alpha", "main", {"app.py": "GREETING = 'OLD'  # hi\n"})
        with platform.instance() as instance:
            (request,) = tick(status, instance, None).run_requests
            asked = latest_ci_repairs(instance, spec)["acme__alpha"]
        assert asked.reason == "checks" and "FAILED tests/test_app.py" in asked.logs["unit"]
        launch(platform, path, request)  # the codemod again, on the moved base
        repaired = github.refs("acme/alpha")["campaign/gh"]
        assert repaired != head
        assert (
            run_git(["rev-parse", f"{repaired}^"], github.repos["acme/alpha"].bare).strip()
            == (github.refs("acme/alpha")["main"])
        )

        # the repaired PR goes green: wave 2 opens and beta gets its PR
        github.add_check_run("acme/alpha", repaired, "unit", "completed", "success")
        with platform.instance() as instance:
            ticks.now += 3600
            tick(status, instance, None)
            (wave2,) = tick(waves, instance, None).run_requests
        assert wave2.partition_key == "acme__beta"
        launch(platform, path, wave2)
        assert github.pr("acme/beta", 1).state == "open"

        # alpha merges; then its main fails: the watch records it
        github.merge_pr("acme/alpha", 1)
        watch = build_post_merge_sensor(spec, lambda: forge)
        with platform.instance() as instance:
            ticks.now += 3600
            tick(status, instance, None)
            main = github.refs("acme/alpha")["main"]
            github.add_check_run("acme/alpha", main, "deploy", "completed", "failure")
            (event,) = tick(watch, instance, None).asset_events
            assert event.partition == "acme__alpha"
            frame = report.build_report(instance, spec).set_index("target")
        assert frame.loc["acme__alpha", "post_merge"] == "failure on main: deploy"
        assert frame.loc["acme__alpha", "ci_repairs"] == 1
        assert list(frame["wave"]) == [1, 2]
