"""Pull requests followed to the end: the PR status sensor, the report's PR columns and
burndown, and bulk merge/close/comment/publish — against real PRs on the local forge, opened by
a real campaign run, and a real Dagster instance."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from click.testing import CliRunner

from orchestrator_assets.assets import history
from orchestrator_assets.cli.prs import prs
from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from orchestrator_assets.reports import report
from orchestrator_assets.spec.catalog import load_one
from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.github import GitHubPullRequestDraft
from resources.forges.local import LocalForge
from sensors.pr_status import build_pr_status_sensor, next_delay
from tests.conftest import STRICT_TEST, Platform, app_repo, statuses

FLEET = [
    app_repo("alpha", "GREETING = 'OLD'\n"),
    app_repo("beta", "GREETING = 'OLD'\n", branch="master"),
    app_repo("zeta", "GREETING = 'OLD'\n"),
    app_repo("gamma", "GREETING = 'NEW'\n"),  # nothing to change: no PR
]
PR_TARGETS = ["acme__alpha", "acme__beta", "acme__zeta"]


class Clock:
    """The sensor's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingForge(LocalForge):
    """The local forge, counting status reads per repository and failing for some."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        self.broken: set[str] = set()

    def pull_request_status(self, url: str, number: int):
        name = Path(url).stem
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.broken:
            raise ConnectionError(f"{name}: forge unreachable")
        return super().pull_request_status(url, number)


@pytest.fixture
def campaign(platform: Platform, bwrap: None):
    """A campaign run on the fleet: open PRs on alpha, beta and zeta; returns its spec."""
    return _run(platform)


def _run(platform: Platform, name: str = "rename", **fields):
    targets = [str(p) for p in platform.make_fleet(FLEET)]
    path = platform.write_campaign(name, targets=targets, **fields)
    outcome = platform.run(path)
    assert {k: v for k, v in statuses(outcome.report).items() if v == "pr_open"}.keys() == set(
        PR_TARGETS
    )
    return load_one(path, platform.settings()).spec


def repo(platform: Platform, name: str) -> Path:
    return platform.fleet / "acme" / f"{name}.git"


def pr_json(platform: Platform, name: str, number: int = 1) -> Path:
    return repo(platform, name) / "pulls" / f"{number}.json"


def pr(platform: Platform, name: str) -> dict:
    """The JSON record of a repository's PR #1."""
    return json.loads(pr_json(platform, name).read_text())


def edit_pr(platform: Platform, name: str, **fields) -> None:
    """What a human (or a CI system) does to a local PR: set fields in its JSON record."""
    path = pr_json(platform, name)
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data, indent=2))


def tick(sensor, instance, cursor: str | None) -> dg.SensorResult:
    """Evaluate the sensor and write its events to the instance, as the daemon does."""
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def observed(result: dg.SensorResult) -> dict[str, dict]:
    """partition -> metadata values of the observations a tick made."""
    return {e.partition: {k: v.value for k, v in e.metadata.items()} for e in result.asset_events}


def rows(instance, spec) -> dict[str, dict]:
    frame = report.build_report(instance, spec)
    return {r["target"]: r for r in frame.to_dict("records")}


# the local forge's PR status, comments and reviewers ---------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def test_local_forge_status_comments_and_reviewers(tmp_path: Path):
    bare = create_repo(tmp_path, RepoSpec("x", {"a.txt": "1\n"}))
    work = tmp_path / "work"
    _git(tmp_path, "clone", "-q", str(bare), str(work))
    (work / "a.txt").write_text("campaign\n")
    _git(work, "commit", "-qam", "change")
    forge, url, branch = LocalForge(), str(bare), "campaign/x"
    forge.push_branch(url, work, branch, _git(work, "rev-parse", "HEAD"), None)
    # a forge-specific draft is accepted; only the base draft's fields are the record's
    draft = GitHubPullRequestDraft(
        head=branch, base="main", title="T", body="B", reviewers=["alice"], team_reviewers=["t"]
    )
    opened = forge.create_pull_request(url, draft)
    record = bare / "pulls" / "1.json"
    assert json.loads(record.read_text())["team_reviewers"] == ["t"]  # a base draft field now

    status = forge.pull_request_status(url, 1)
    assert (status.state, status.mergeable, status.mergeable_state) == ("open", True, "clean")
    assert (status.checks, status.review) == ("none", "none")
    assert status.head_sha == _git(bare, "rev-parse", branch)

    # reviewers are added, never dropped; asking the same ones again writes nothing
    again = PullRequestDraft(head=branch, base="main", title="T", body="B", reviewers=["bob"])
    asked = forge.update_pull_request(url, 1, again)
    assert asked.reviewers == ["alice", "bob"] and asked.updated_at > opened.updated_at
    before = record.read_text()
    assert forge.update_pull_request(url, 1, again).updated_at == asked.updated_at
    assert record.read_text() == before

    # what a human sets is reported, and kept (with unknown fields) when the forge rewrites
    data = json.loads(before) | {"checks": "success", "review": "changes_requested", "ci": "x"}
    record.write_text(json.dumps(data))
    url_of_comment = forge.comment(url, 1, "Looks good.")
    assert url_of_comment == f"{opened.url}#comment-1"
    data = json.loads(record.read_text())
    assert [c["body"] for c in data["comments"]] == ["Looks good."] and data["ci"] == "x"
    status = forge.pull_request_status(url, 1)
    assert (status.checks, status.review) == ("success", "changes_requested")

    # the base moved with a conflicting edit: not mergeable
    _git(work, "checkout", "-q", "-b", "base", "origin/main")
    (work / "a.txt").write_text("upstream\n")
    _git(work, "commit", "-qam", "upstream")
    _git(work, "push", "-q", "origin", "HEAD:main")
    status = forge.pull_request_status(url, 1)
    assert (status.mergeable, status.mergeable_state) == (False, "dirty")

    # a draft reads as such; a value outside the vocabulary fails this PR's status only
    record.write_text(json.dumps(json.loads(record.read_text()) | {"draft": True}))
    assert forge.pull_request_status(url, 1).state == "draft"
    record.write_text(json.dumps(json.loads(record.read_text()) | {"checks": "green"}))
    with pytest.raises(ForgeError, match="checks 'green' is not one of"):
        forge.pull_request_status(url, 1)
    assert forge.find_pull_request(url, branch).number == 1

    record.write_text(json.dumps(json.loads(record.read_text()) | {"checks": "pending"}))
    forge.close_pull_request(url, 1)
    status = forge.pull_request_status(url, 1)
    assert (status.state, status.mergeable, status.mergeable_state) == ("closed", False, None)


# the status sensor --------------------------------------------------------------------------------


def test_sensor_follows_prs_to_merged_and_closed_and_the_report_shows_it(platform, campaign):
    spec, clock = campaign, Clock()
    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), clock=clock)
    assert sensor.name == "rename_pr_status" and sensor.minimum_interval_seconds == 60
    with platform.instance() as instance:
        first = tick(sensor, instance, None)
        seen = observed(first)
        assert set(seen) == set(PR_TARGETS)  # every open PR's first status is recorded
        alpha = seen["acme__alpha"]
        assert (alpha["pr_state"], alpha["checks"], alpha["review"]) == ("open", "none", "none")
        assert alpha["mergeable"] is True and alpha["pr_number"] == 1
        assert alpha["pr_url"] == pr_json(platform, "alpha").resolve().as_uri()
        assert alpha["status"]["state"] == "open" and alpha["status"]["head_sha"]

        edit_pr(platform, "alpha", checks="pending")
        clock.now += 60
        second = tick(sensor, instance, first.cursor)
        assert set(observed(second)) == {"acme__alpha"}  # only what changed is recorded
        assert observed(second)["acme__alpha"]["checks"] == "pending"
        assert rows(instance, spec)["acme__alpha"]["checks"] == "pending"

        edit_pr(platform, "alpha", checks="success", review="approved")
        clock.now += 60
        third = tick(sensor, instance, second.cursor)
        assert observed(third)["acme__alpha"]["review"] == "approved"
        row = rows(instance, spec)["acme__alpha"]
        assert (row["status"], row["pr_state"], row["checks"], row["review"], row["mergeable"]) == (
            "pr_open", "open", "success", "approved", True,
        )  # fmt: skip

        LocalForge().merge_pull_request(str(repo(platform, "alpha")), 1)
        LocalForge().close_pull_request(str(repo(platform, "beta")), 1, "not this one")
        clock.now += 3600  # everything is due again
        fourth = tick(sensor, instance, third.cursor)
        states = {k: v["pr_state"] for k, v in observed(fourth).items()}
        assert states == {"acme__alpha": "merged", "acme__beta": "closed"}
        got = rows(instance, spec)
        assert {k: got[k]["status"] for k in PR_TARGETS} == {
            "acme__alpha": "merged", "acme__beta": "closed", "acme__zeta": "pr_open",
        }  # fmt: skip
        assert got["acme__alpha"]["pr_state"] == "merged" and got["acme__beta"]["checks"] == "none"
        assert report.build_report(instance, spec)["mergeable"].dtype == "boolean"

        # a merged PR is not polled again; a closed one only hourly (a human may reopen it)
        followed = json.loads(fourth.cursor)["prs"]
        assert set(followed) == {"acme__beta", "acme__zeta"}
        assert followed["acme__beta"]["next"] == clock.now + 3600

        table = report.burndown(instance, spec)
        today = datetime.now(UTC).date()
        assert table.to_dict("records") == [{"day": today, "open": 1, "merged": 1, "closed": 1}]
        assert "| day" in report.burndown_markdown(table)
        png = report.burndown_chart(table, platform.root / "out" / "burndown.png", "rename")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a re-run leaves the ended targets alone and the report keeps saying so
    outcome = platform.run(platform.campaigns / "rename.yaml")
    assert statuses(outcome.report)["acme__alpha"] == "merged"
    assert statuses(outcome.report)["acme__beta"] == "closed"


def test_a_pr_a_human_reopens_is_followed_again_for_a_week_after_its_close(platform, campaign):
    import time

    spec, clock = campaign, Clock()
    clock.now = time.time()  # observations carry the instance's real timestamps
    sensor = build_pr_status_sensor(spec, lambda: LocalForge(), clock=clock)
    beta = str(repo(platform, "beta"))
    with platform.instance() as instance:
        LocalForge().close_pull_request(beta, 1, "not now")
        result = tick(sensor, instance, None)
        assert observed(result)["acme__beta"]["pr_state"] == "closed"
        assert statuses_of(instance, spec)["acme__beta"] == "closed"

        LocalForge().reopen_pull_request(beta, 1)
        clock.now += 1800  # not due: a closed PR is looked at hourly
        result = tick(sensor, instance, result.cursor)
        assert "acme__beta" not in observed(result)
        clock.now += 1800
        result = tick(sensor, instance, result.cursor)
        assert observed(result)["acme__beta"]["pr_state"] == "open"
        assert statuses_of(instance, spec)["acme__beta"] == "pr_open"

        # closed again and left so for over a week: no longer polled, even without a cursor
        LocalForge().close_pull_request(beta, 1, "for good")
        clock.now += 3600
        result = tick(sensor, instance, result.cursor)
        assert observed(result)["acme__beta"]["pr_state"] == "closed"
        clock.now += 8 * 86400
        for cursor in (result.cursor, None):
            assert "acme__beta" not in json.loads(tick(sensor, instance, cursor).cursor)["prs"]


def statuses_of(instance, spec) -> dict[str, str]:
    """Each target's status in the report built from the instance."""
    frame = report.build_report(instance, spec)
    return dict(zip(frame["target"], frame["status"], strict=True))


def test_sensor_backs_off_unchanged_prs_and_survives_a_failing_one(platform, campaign):
    spec, clock, forge = campaign, Clock(), CountingForge()
    sensor = build_pr_status_sensor(spec, lambda: forge, clock=clock)
    calls = lambda: dict(forge.calls)  # noqa: E731
    with platform.instance() as instance:
        forge.broken = {"beta"}
        result = tick(sensor, instance, None)  # t=0: all polled; beta's forge fails
        assert calls() == {"alpha": 1, "beta": 1, "zeta": 1}
        assert set(observed(result)) == {"acme__alpha", "acme__zeta"}  # the others go on
        cursor = json.loads(result.cursor)["prs"]
        assert cursor["acme__beta"]["failures"] == 1
        assert cursor["acme__beta"]["next"] == clock.now + 120  # backed off
        assert cursor["acme__alpha"]["next"] == clock.now + 60

        forge.broken = set()
        clock.now += 30  # nothing is due yet
        result = tick(sensor, instance, result.cursor)
        assert calls() == {"alpha": 1, "beta": 1, "zeta": 1}
        assert result.skip_reason is not None

        clock.now += 30  # t=60: alpha and zeta due (unchanged), beta not yet
        result = tick(sensor, instance, result.cursor)
        assert calls() == {"alpha": 2, "beta": 1, "zeta": 2}
        assert observed(result) == {}

        clock.now += 60  # t=120: beta due again, now answers; alpha, zeta wait until t=180
        result = tick(sensor, instance, result.cursor)
        assert calls() == {"alpha": 2, "beta": 2, "zeta": 2}
        assert set(observed(result)) == {"acme__beta"}
        assert json.loads(result.cursor)["prs"]["acme__beta"]["failures"] == 0

        edit_pr(platform, "alpha", checks="failure")  # changed, but alpha is not due yet
        clock.now += 30  # t=150
        result = tick(sensor, instance, result.cursor)
        assert calls()["alpha"] == 2
        clock.now += 30  # t=180: alpha and zeta due; alpha's change is recorded
        result = tick(sensor, instance, result.cursor)
        assert calls() == {"alpha": 3, "beta": 3, "zeta": 3}
        assert observed(result)["acme__alpha"]["checks"] == "failure"
        prs_cursor = json.loads(result.cursor)["prs"]
        assert prs_cursor["acme__alpha"]["next"] == clock.now + 60  # changed: polled soon
        assert prs_cursor["acme__zeta"]["next"] == clock.now + 240  # unchanged twice

        # a lost cursor does not record the same statuses again
        result = tick(sensor, instance, None)
        assert observed(result) == {}

    assert next_delay(60, 0, 0, 3600) == 60
    assert next_delay(60, 3, 0, 3600) == 480
    assert next_delay(60, 2, 2, 3600) == 960
    assert next_delay(60, 40, 0, 3600) == 3600  # at most an hour


def test_a_pr_stays_followed_when_a_later_run_is_blocked(platform, campaign):
    """A re-run whose new change fails its verifier records no PR number; the PR is still open."""
    work = platform.root / "alpha-work"
    _git(platform.root, "clone", "-q", str(repo(platform, "alpha")), str(work))
    (work / "tests" / "test_app.py").write_text(STRICT_TEST)  # upstream: the rename now breaks it
    _git(work, "commit", "-qam", "strict test")
    _git(work, "push", "-q", "origin", "HEAD:main")
    outcome = platform.run(platform.campaigns / "rename.yaml", targets=["acme__alpha"])
    assert statuses(outcome.report)["acme__alpha"] == "verification_failed"
    assert pr(platform, "alpha")["state"] == "open"
    sensor = build_pr_status_sensor(campaign, lambda: LocalForge())
    with platform.instance() as instance:
        assert "acme__alpha" in observed(tick(sensor, instance, None))
    code, out = prs_cli("close", "rename", "--target", "acme__alpha", "--output", "json")
    assert code == 0 and json.loads(out)[0]["action"] == "close"  # bulk actions reach it too


def test_burndown_counts_each_day_and_draws_it(monkeypatch, tmp_path):
    """Per day: each target counted in the state its PR was in at the end of that day."""
    spec = SimpleNamespace(targets=[SimpleNamespace(key=k) for k in "abc"])

    def at(day: int) -> float:
        return datetime(2025, 3, day, 12, tzinfo=UTC).timestamp()

    events = [
        ("a", at(1), 1, "open"), ("b", at(1), 1, "draft"), ("c", at(2), 1, "open"),
        ("a", at(2), 1, "merged"), ("b", at(4), 1, "closed"), ("gone", at(2), 1, "open"),
    ]  # fmt: skip
    monkeypatch.setattr(history, "pr_timeline", lambda instance, spec: iter(events))
    frame = report.burndown(None, spec, until=date(2025, 3, 5))
    assert [tuple(r) for r in frame.itertuples(index=False)] == [
        (date(2025, 3, 1), 2, 0, 0),
        (date(2025, 3, 2), 2, 1, 0),
        (date(2025, 3, 3), 2, 1, 0),
        (date(2025, 3, 4), 1, 1, 1),
        (date(2025, 3, 5), 1, 1, 1),
    ]
    png = report.burndown_chart(frame, tmp_path / "b.png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 1000
    nothing = report.burndown(None, SimpleNamespace(targets=[]))
    assert list(nothing.columns) == ["day", "open", "merged", "closed"] and nothing.empty
    empty = report.burndown_chart(nothing, tmp_path / "e.png")
    assert empty.read_bytes().startswith(b"\x89PNG")


# bulk operations ----------------------------------------------------------------------------------


def prs_cli(*args: str) -> tuple[int, str]:
    """Run `orchestrator prs ARGS` in this process (a wide terminal, so table cells stay whole)."""
    result = CliRunner(env={"COLUMNS": "250"}).invoke(prs, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def actions(instance, spec) -> dict[str, dict]:
    """partition -> metadata of its newest bulk-action observation."""
    key = history.asset_key(spec, "pull_request")
    found: dict[str, dict] = {}
    for record in instance.fetch_observations(key, limit=100).records:  # newest first
        meta = {k: v.value for k, v in record.asset_observation.metadata.items()}
        if "action" in meta and record.partition_key not in found:
            found[record.partition_key] = meta
    return found


def test_merge_only_green_previews_then_merges_exactly_the_green_ones(
    platform, campaign, monkeypatch
):
    spec = campaign
    edit_pr(platform, "alpha", checks="success", review="approved")
    edit_pr(platform, "beta", checks="failure")  # zeta: no checks at all
    before = {n: pr_json(platform, n).read_text() for n in ("alpha", "beta", "zeta")}

    code, out = prs_cli("merge", "rename", "--only-green")
    assert code == 0
    assert "would merge" in out and "acme__alpha" in out
    assert "checks not green: failure" in out
    assert "none reported" in out  # the local forge's "no checks" is said to be not green
    assert "1 of 3 pull request(s) would be merged" in out
    assert {n: pr_json(platform, n).read_text() for n in before} == before  # nothing changed
    with platform.instance() as instance:
        assert actions(instance, spec) == {}

    monkeypatch.setenv("ORCHESTRATOR_ACTOR", "release-bot")
    code, out = prs_cli("merge", "rename", "--only-green", "--yes", "--output", "json")
    assert code == 0
    result = {r["target"]: r for r in json.loads(out)}
    assert result["acme__alpha"]["outcome"] == "merged"
    assert result["acme__beta"]["action"] is None and result["acme__zeta"]["action"] is None
    assert pr(platform, "alpha")["state"] == "merged"
    assert {n: pr_json(platform, n).read_text() for n in ("beta", "zeta")} == {
        n: before[n] for n in ("beta", "zeta")
    }
    with platform.instance() as instance:
        (logged,) = actions(instance, spec).values()
        assert logged["action"] == "merge" and logged["actor"] == "release-bot"
        assert logged["pr_state"] == "merged" and logged["outcome"] == "done"
        assert "only-green" in logged["reason"]
        assert rows(instance, spec)["acme__alpha"]["status"] == "merged"  # at once
        # the status sensor treats it as ended too
        sensor = build_pr_status_sensor(spec, lambda: LocalForge())
        assert set(json.loads(tick(sensor, instance, None).cursor)["prs"]) == {
            "acme__beta", "acme__zeta",
        }  # fmt: skip

    # merging again: alpha is not open any more, the others not green; nothing to do
    code, out = prs_cli("merge", "rename", "--only-green", "--yes")
    assert code == 0 and "not open: merged" in out


def test_comment_and_close_selected_targets(platform, campaign, monkeypatch):
    spec = campaign
    monkeypatch.setenv("ORCHESTRATOR_ACTOR", "alice")
    code, out = prs_cli("comment", "rename", "--target", "acme__beta", "--target", "acme__zeta",
                        "--message", "Please review by Friday.")  # fmt: skip
    assert code == 0 and "would comment" in out and "acme__alpha" not in out
    assert pr(platform, "beta")["comments"] == []  # a preview changes nothing

    code, out = prs_cli("comment", "rename", "--target", "acme__beta", "--target", "acme__zeta",
                        "--message", "Please review by Friday.", "--yes")  # fmt: skip
    assert code == 0, out
    for name in ("beta", "zeta"):
        (note,) = pr(platform, name)["comments"]
        assert note["body"] == "Please review by Friday." and note["author"] == "alice"
    assert pr(platform, "alpha")["comments"] == []  # not selected

    code, out = prs_cli("close", "rename", "--target", "acme__zeta", "--message", "Superseded.",
                        "--yes")  # fmt: skip
    assert code == 0, out
    zeta = pr(platform, "zeta")
    assert zeta["state"] == "closed" and zeta["body"].endswith("Superseded.")
    assert pr(platform, "beta")["state"] == "open"
    with platform.instance() as instance:
        logged = actions(instance, spec)
        assert logged["acme__beta"]["action"] == "comment"
        assert logged["acme__beta"]["comment_url"].endswith("1.json#comment-1")
        assert logged["acme__zeta"]["action"] == "close"
        assert logged["acme__zeta"]["message"] == "Superseded."
        assert logged["acme__zeta"]["actor"] == "alice"
        assert logged["acme__zeta"]["pr_state"] == "closed"
        got = rows(instance, spec)
        assert (got["acme__zeta"]["status"], got["acme__beta"]["status"]) == ("closed", "pr_open")

    # unknown targets are a user mistake, not a traceback
    result = CliRunner().invoke(prs, ["close", "rename", "--target", "nope", "--yes"])
    assert result.exit_code != 0 and "no target(s) nope" in str(result.exception)


def test_a_failure_on_one_pr_is_reported_and_the_others_go_on(platform, campaign, monkeypatch):
    import orchestrator_assets.cli.prs as cli_prs

    class FlakyForge(CountingForge):
        def merge_pull_request(self, url: str, number: int, method: str = "merge"):
            if Path(url).stem == "beta":
                raise ConnectionError("beta: the forge hung up")
            return super().merge_pull_request(url, number, method)

    forge = FlakyForge()
    forge.broken = {"zeta"}  # its status cannot be read: not acted on, reported
    monkeypatch.setattr(cli_prs, "forge_for", lambda campaign: forge)
    code, out = prs_cli("merge", "rename", "--yes", "--output", "json")
    assert code == 1
    result = {r["target"]: r for r in json.loads(out)}
    assert result["acme__alpha"]["outcome"] == "merged" and not result["acme__alpha"]["failed"]
    assert result["acme__beta"]["failed"] and "hung up" in result["acme__beta"]["outcome"]
    assert result["acme__zeta"]["failed"] and "unreachable" in result["acme__zeta"]["skipped"]
    states = {n: pr(platform, n)["state"] for n in ("alpha", "beta")}
    assert states == {"alpha": "merged", "beta": "open"}
    with platform.instance() as instance:
        logged = actions(instance, campaign)
        assert (
            logged["acme__beta"]["outcome"] == "failed"
            and "hung up" in logged["acme__beta"]["error"]
        )
        assert logged["acme__beta"]["pr_state"] == "open"
        assert "acme__zeta" not in logged  # nothing was done to it
        assert rows(instance, campaign)["acme__beta"]["status"] == "pr_open"


@pytest.mark.usefixtures("bwrap")
def test_publish_flips_draft_prs(platform: Platform):
    spec = _run(platform, "drafts", pull_request={"draft": True})
    for name in ("alpha", "beta", "zeta"):
        assert pr(platform, name)["draft"] is True
    code, out = prs_cli("publish", "drafts")
    assert code == 0 and out.count("would publish") == 3
    code, out = prs_cli("merge", "drafts")
    assert "a draft: publish it first" in out

    code, out = prs_cli("publish", "drafts", "--target", "acme__alpha", "--yes")
    assert code == 0, out
    assert pr(platform, "alpha")["draft"] is False
    assert pr(platform, "beta")["draft"] is True
    with platform.instance() as instance:
        assert actions(instance, spec)["acme__alpha"]["pr_state"] == "open"
        got = rows(instance, spec)
        assert (got["acme__alpha"]["pr_state"], got["acme__alpha"]["status"]) == (
            "open", "pr_open",
        )  # fmt: skip

    code, out = prs_cli("publish", "drafts", "--yes")
    assert code == 0 and "already ready for review" in out
    assert all(pr(platform, n)["draft"] is False for n in ("alpha", "beta", "zeta"))

    # Re-running the campaign (draft: true) updates the PRs but never re-drafts a published one.
    platform.run(platform.campaigns / "drafts.yaml")
    assert all(pr(platform, n)["draft"] is False for n in ("alpha", "beta", "zeta"))
