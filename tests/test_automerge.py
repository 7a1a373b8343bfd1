"""Auto-merge (`merge: {when: checks_green, method: squash}`): the PR status sensor merges a PR
once its checks pass and its reviews allow it, with the campaign's method; on GitHub the
platform also enables auto-merge at PR creation where the repository allows it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestrator_assets.reports import report
from orchestrator_assets.spec.catalog import load_one
from resources.build import build_forge
from resources.forges.local import LocalForge
from sensors.pr_status import build_pr_status_sensor
from tests.conftest import CODEMOD, TEST, Platform, app_repo, statuses
from tests.fake_github import FakeGitHub

pytestmark = pytest.mark.usefixtures("bwrap")

MERGE = {"when": "checks_green", "method": "squash"}
TOKEN = "ghp_AUTOMERGE" + "0" * 28


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tick(sensor, instance, cursor: str | None) -> dg.SensorResult:
    """Evaluate the sensor and write its events to the instance, as the daemon does."""
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def edit_pr(platform: Platform, repo: str, **fields) -> None:
    """What CI and reviewers do to a local PR: set fields in its JSON record."""
    path = platform.fleet / "acme" / f"{repo}.git" / "pulls" / "1.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data, indent=2))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_sensor_merges_green_prs_with_the_campaigns_method(platform: Platform):
    fleet = [app_repo(n, "GREETING = 'OLD'\n") for n in ("alpha", "beta", "gamma", "delta")]
    targets = [str(p) for p in platform.make_fleet(fleet)]
    path = platform.write_campaign("merging", targets=targets, merge=MERGE)
    alpha = platform.fleet / "acme" / "alpha.git"
    (alpha / "forge_settings.json").write_text('{"allow_auto_merge": true}')
    delta = platform.fleet / "acme" / "delta.git"  # branch protection: an approval is required
    (delta / "forge_settings.json").write_text('{"requires_approval": true}')
    outcome = platform.run(path)
    assert set(statuses(outcome.report).values()) == {"pr_open"}
    # Auto-merge is enabled where the repository allows it (alpha), with the campaign's method.
    records = {
        n: json.loads((platform.fleet / "acme" / f"{n}.git" / "pulls" / "1.json").read_text())
        for n in ("alpha", "beta")
    }
    assert records["alpha"]["auto_merge"] == "squash" and records["beta"]["auto_merge"] is None
    spec = load_one(path, platform.settings()).spec
    main_before = git(alpha, "rev-parse", "main")
    clock = Clock()
    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), clock=clock)
    with platform.instance() as instance:
        first = tick(sensor, instance, None)  # no checks reported yet: nothing merges
        assert {e.metadata["pr_state"].value for e in first.asset_events} == {"open"}

        edit_pr(platform, "alpha", checks="success")
        edit_pr(platform, "beta", checks="success", review="changes_requested")
        edit_pr(platform, "gamma", checks="failure")
        edit_pr(platform, "delta", checks="success")
        clock.now += 3600
        second = tick(sensor, instance, first.cursor)
        seen = {e.partition: e.metadata["pr_state"].value for e in second.asset_events}
        assert seen == {
            "acme__alpha": "merged", "acme__beta": "open", "acme__gamma": "open",
            "acme__delta": "open",
        }  # fmt: skip
        blocked = {e.partition: e.metadata["status"].value for e in second.asset_events}
        assert blocked["acme__delta"]["mergeable_state"] == "blocked"

        edit_pr(platform, "delta", checks="success", review="approved")
        clock.now += 3600
        third = tick(sensor, instance, second.cursor)
        seen = {e.partition: e.metadata["pr_state"].value for e in third.asset_events}
        assert seen["acme__delta"] == "merged"
        frame = report.build_report(instance, spec)
    assert statuses(frame) == {
        "acme__alpha": "merged", "acme__beta": "pr_open", "acme__gamma": "pr_open",
        "acme__delta": "merged",
    }  # fmt: skip
    # Squashed: one new commit on main, on top of the old main, holding the change.
    main_after = git(alpha, "rev-parse", "main")
    assert git(alpha, "rev-list", "--parents", "-n", "1", main_after).split() == [
        main_after, main_before,
    ]  # fmt: skip
    assert "NEW" in git(alpha, "show", f"{main_after}:app.py")
    assert json.loads((alpha / "pulls" / "1.json").read_text())["state"] == "merged"


def test_without_merge_the_sensor_merges_nothing(platform: Platform):
    targets = [str(p) for p in platform.make_fleet([app_repo("alpha", "GREETING = 'OLD'\n")])]
    path = platform.write_campaign("plain", targets=targets)
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    edit_pr(platform, "alpha", checks="success", review="approved")
    with platform.instance() as instance:
        result = tick(build_pr_status_sensor(spec, lambda: LocalForge()), instance, None)
    assert [e.metadata["pr_state"].value for e in result.asset_events] == ["open"]


@pytest.fixture
def github(platform: Platform):
    with FakeGitHub(TOKEN, platform.root / "github") as fake:
        fake.add_org("acme")
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        fake.add_repo("acme/auto", files, allow_auto_merge=True)  # GitHub merges by itself
        fake.add_repo("acme/plain", files)  # auto-merge not allowed: the sensor merges
        fake.add_repo("acme/guarded", files, requires_approval=True)  # a review is required
        platform.use_github(fake.base_url, TOKEN)
        yield fake


def test_github_auto_merge_where_allowed_and_the_sensor_merges_the_rest(platform, github):
    data = {
        "name": "merging",
        "description": "Rename OLD to NEW.",
        "targets": [f"{github.web}/acme/{n}" for n in ("auto", "plain", "guarded")],
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
        "merge": MERGE,
    }
    path = platform.campaigns / "merging.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    out = platform.cli("run", "--file", str(path)).stdout
    assert "auto-merge (squash) enabled for pull request #1" in out
    # The contract: enablePullRequestAutoMerge with the campaign's method where allowed.
    assert github.pr("acme/auto", 1).auto_merge["merge_method"] == "squash"
    assert github.pr("acme/plain", 1).auto_merge is None
    assert github.pr("acme/guarded", 1).auto_merge is None

    for name in ("plain", "guarded"):
        head = github.refs(f"acme/{name}")["campaign/merging"]
        github.set_status(f"acme/{name}", head, "ci", "success")
    spec = load_one(path, platform.settings()).spec
    clock = Clock()
    sensor = build_pr_status_sensor(spec, lambda: build_forge(platform.settings()), clock=clock)
    with platform.instance() as instance:
        first = tick(sensor, instance, None)
        seen = {e.partition: e.metadata["pr_state"].value for e in first.asset_events}
        # plain is green and mergeable: merged (squash); guarded is blocked until approved.
        assert seen["acme__plain"] == "merged" and seen["acme__guarded"] == "open"
        plain = github.pr("acme/plain", 1)
        assert plain.merged
        merges = [c for c in github.calls if c.method == "PUT" and c.path.endswith("/merge")]
        assert [c.json()["merge_method"] for c in merges] == ["squash"]

        github.add_review("acme/guarded", 1, "octocat", "APPROVED")
        clock.now += 3600
        second = tick(sensor, instance, first.cursor)
        seen = {e.partition: e.metadata["pr_state"].value for e in second.asset_events}
        assert seen["acme__guarded"] == "merged"
        rows = statuses(report.build_report(instance, spec))
    assert rows["acme__plain"] == "merged" and rows["acme__guarded"] == "merged"


def test_a_bad_merge_setting_names_the_field(platform: Platform):
    path = platform.write_campaign(
        "merging", targets=["/tmp/nowhere"], merge={"when": "checks_green", "method": "ff"}
    )
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1 and "merge.method" in proc.stderr
