"""The post-merge watch: after a campaign's PR merged, the target's default-branch checks are
watched for `post_merge.watch`; a failure is recorded on the campaign's `pull_request` and
notified — on the local forge (its `branch_checks.json`) with a real Dagster instance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator_assets.assets.rollout_history import latest_post_merge
from orchestrator_assets.reports import report
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.spec.errors import SpecError
from resources.forges.base import ForgeError
from resources.forges.local import BRANCH_CHECKS, LocalForge
from resources.git import run_git
from sensors.post_merge import build_post_merge_sensor
from sensors.pr_status import build_pr_status_sensor
from tests.conftest import Platform, app_repo, statuses
from tests.test_github_forge import app, clock, fake, forge  # noqa: F401 (fixtures)
from tests.test_rollout import tick

FLEET = [app_repo("alpha", "GREETING = 'OLD'\n"), app_repo("beta", "GREETING = 'OLD'\n")]


class Clock:
    """The sensors' clock: the real time (observations carry it) plus what the test adds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def bare(platform: Platform, name: str) -> Path:
    return platform.fleet / "acme" / f"{name}.git"


def ci_says(repo: Path, branch: str, state: str, failing: list[str] | None = None) -> None:
    """What CI reports of a branch, in the local forge's branch checks file."""
    (repo / BRANCH_CHECKS).write_text(
        json.dumps({branch: {"state": state, "failing": failing or []}})
    )


@pytest.mark.usefixtures("bwrap")
def test_a_failure_after_the_merge_is_recorded_and_notified_a_green_watch_ends(platform):
    targets = [str(p) for p in platform.make_fleet(FLEET)]
    path = platform.write_campaign("watched", targets=targets, post_merge={"watch": "2h"})
    platform.cli("run", "--file", str(path))
    spec = load_one(path, platform.settings()).spec
    assert set(statuses(report.build_report(platform.instance(), spec)).values()) == {"pr_open"}
    for name in ("alpha", "beta"):
        LocalForge().merge_pull_request(str(bare(platform, name)), 1)
    ci_says(bare(platform, "alpha"), "main", "pending")
    ci_says(bare(platform, "beta"), "main", "success")

    ticks, noted = Clock(), []
    status = build_pr_status_sensor(spec, lambda: LocalForge())
    watch = build_post_merge_sensor(
        spec, lambda: LocalForge(), clock=ticks, notifier_getter=lambda: _note(noted)
    )
    with platform.instance() as instance:
        tick(status, instance, None)  # both seen merged
        first = tick(watch, instance, None)
        assert (
            not first.asset_events
            and "2 merged target(s) watched" in first.skip_reason.skip_message
        )

        ci_says(bare(platform, "alpha"), "main", "failure", ["unit", "lint"])
        ticks.offset = 600
        second = tick(watch, instance, None)
        assert [e.partition for e in second.asset_events] == ["acme__alpha"]
        result = latest_post_merge(instance, spec)["acme__alpha"]
        main = run_git(["rev-parse", "refs/heads/main"], bare(platform, "alpha")).strip()
        assert (result.state, result.failing, result.sha, result.number) == (
            "failure", ["unit", "lint"], main, 1,
        )  # fmt: skip
        assert [k for k, _ in noted] == ["post_merge_failure"]
        assert "`acme__alpha`: main fails after PR #1 merged: unit, lint" in noted[0][1]

        ticks.offset = 2 * 3600 + 1  # the watch is over: beta's green state is recorded
        third = tick(watch, instance, None)
        assert [e.partition for e in third.asset_events] == ["acme__beta"]
        assert latest_post_merge(instance, spec)["acme__beta"].state == "success"
        assert not tick(watch, instance, None).asset_events  # both done
        assert len(noted) == 1

    out = platform.cli("report", "watched", "--output", "json")
    rows = {r["target"]: r for r in json.loads(out.stdout)}
    assert rows["acme__alpha"]["post_merge"] == "failure on main: unit, lint"
    assert rows["acme__beta"]["post_merge"] == "success on main"
    assert rows["acme__alpha"]["status"] == "merged"


def test_branch_checks_of_the_local_forge_and_bad_input(platform: Platform, tmp_path: Path):
    (repo,) = platform.make_fleet(FLEET[:1])
    local = LocalForge()
    checks = local.branch_checks(str(repo), "main")
    assert (checks.state, checks.failing, checks.branch) == ("none", [], "main")
    ci_says(repo, "main", "failure", ["e2e"])
    assert local.branch_checks(str(repo), "main").failing == ["e2e"]
    (repo / BRANCH_CHECKS).write_text(json.dumps({"main": {"state": "red"}}))
    with pytest.raises(ForgeError, match=r"branch_checks\.json is not a valid branch checks file"):
        local.branch_checks(str(repo), "main")
    with pytest.raises(ForgeError, match="branch 'nope' does not exist"):
        local.branch_checks(str(repo), "nope")
    path = platform.write_campaign("bad", targets=[str(repo)], post_merge={"watch": "soon"})
    with pytest.raises(SpecError, match=r"post_merge\.watch.*not a duration"):
        load_one(path, platform.settings())


def _note(noted: list):
    return lambda kind, message: noted.append((kind, message))


# the GitHub contract ------------------------------------------------------------------------------


def test_github_branch_checks_combine_the_head_statuses_and_check_runs(
    fake,  # noqa: F811
    forge,  # noqa: F811
    app,  # noqa: F811
):
    sha = fake.refs("acme/app")["main"]
    checks = forge.branch_checks(app, "main")
    assert (checks.branch, checks.sha, checks.state, checks.failing) == ("main", sha, "none", [])
    fake.set_status("acme/app", sha, "ci/build", "pending")
    assert forge.branch_checks(app, "main").state == "pending"
    fake.set_status("acme/app", sha, "ci/build", "success")
    fake.add_check_run("acme/app", sha, "e2e", "completed", "timed_out")
    checks = forge.branch_checks(app, "main")
    assert (checks.state, checks.failing) == ("failure", ["e2e"])
    with pytest.raises(ForgeError, match="branch nope not found"):
        forge.branch_checks(app, "nope")
