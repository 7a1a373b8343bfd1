"""How fast and how much the GitHub forge talks to GitHub: the write budget of GitHub's secondary
limits, conditional reads, the requests one target costs, and a campaign's `max_per_hour`.

Pacing decisions are asserted on an injected clock (nothing waits); request counts come from the
fake GitHub's record of every request it answered.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from orchestrator_assets.spec.campaign import load_campaign
from orchestrator_assets.stages.deliver import opened_a_pull_request
from orchestrator_assets.stages.records import PullRequestRecord
from orchestrator_assets.stages.workbench import PullRequestLimiter
from resources import cancel
from resources.forges.base import ForgeError, counting_requests
from resources.forges.github_pacing import (
    HOUR,
    MINUTE,
    HostBudget,
    WriteLimits,
    campaign_duration_s,
    shared_budget,
)
from resources.forges.github_transport import stoppable_sleep
from resources.git import author_env, run_git
from tests.conftest import CODEMOD, TEST
from tests.fake_github import FakeGitHub
from tests.test_github_forge import APP, BRANCH, FILES, TOKEN, FakeClock, draft, make_forge

# the budget ------------------------------------------------------------------------------------


def test_a_burst_of_80_then_the_per_minute_rate_and_never_500_in_an_hour():
    budget = HostBudget(WriteLimits())
    now, sent = 0.0, []
    for _ in range(1200):  # as fast as the budget lets: each write goes at its slot
        now = budget.reserve(now)
        sent.append(now)
    m = WriteLimits().margin_s  # a slot comes back this long after its window
    assert sent[:80] == [0.0] * 80  # the burst: the whole per-minute limit at once
    assert sent[80:160] == [MINUTE + m] * 80  # then the per-minute rate
    assert (
        sent[499] == 6 * (MINUTE + m) and sent[500] == HOUR + m
    )  # 500 in 6 minutes, then the hour
    for i, t in enumerate(sent):  # no window holds more than the limits
        assert sum(1 for u in sent[i:] if u < t + MINUTE) <= 80
        assert sum(1 for u in sent[i:] if u < t + HOUR) <= 500


def test_the_durations_the_readme_quotes():
    # (6 min, 1 h 06 min and 2 h 06 min in the README, to the minute; each slot comes back
    # `margin_s` after its window)
    m = WriteLimits().margin_s
    assert campaign_duration_s(80) == 0.0
    assert campaign_duration_s(500) == 6 * (MINUTE + m)
    assert campaign_duration_s(1000) == HOUR + m + 6 * (MINUTE + m)
    assert campaign_duration_s(1500) == 2 * (HOUR + m) + 6 * (MINUTE + m)


def test_one_budget_per_host_and_token_shared_by_every_forge_of_the_process():
    clock = FakeClock()
    a = shared_budget("https://api.github.com", "t1", WriteLimits(), clock.clock)
    assert shared_budget("https://api.github.com/", "t1", WriteLimits(), clock.clock) is a
    assert shared_budget("https://api.github.com", "t2", WriteLimits(), clock.clock) is not a
    assert (
        shared_budget("https://ghe.example.com/api/v3", "t1", WriteLimits(), clock.clock) is not a
    )
    with pytest.raises(ValueError):
        WriteLimits(per_minute=0)


@pytest.fixture
def fake(tmp_path: Path):
    """A running fake GitHub with acme/app, whose campaign branch is one commit ahead."""
    with FakeGitHub(TOKEN, tmp_path / "github") as server:
        server.add_org("acme")
        server.add_repo("acme/app", FILES)
        server.create_branch("acme/app", BRANCH, {"app.py": "GREETING = 'NEW'\n"})
        yield server


def test_the_forge_waits_for_its_write_slots_on_the_injected_clock(fake):
    clock = FakeClock()
    forge = make_forge(fake, clock, limits=WriteLimits(per_minute=3, per_hour=5, margin_s=0))
    forge.create_pull_request(APP, draft())  # one write
    for i in range(5):
        forge.comment(APP, 1, f"note {i}")
    # writes 1-3 at once, 4-5 a minute later, the 6th an hour after the first
    assert clock.sleeps == [MINUTE, HOUR - MINUTE]
    assert forge.stats["write_pacing_wait_s"] == HOUR and forge.stats["writes"] == 6
    assert len(fake.repos["acme/app"].comments[1]) == 5


def test_writes_to_different_repositories_overlap(fake):
    for i in range(8):
        fake.add_repo(f"acme/r{i}", FILES)
        fake.create_branch(f"acme/r{i}", BRANCH, {"x.txt": f"{i}\n"})
    fake.write_latency_s = 0.3
    clock = FakeClock()
    forge = make_forge(fake, clock, write_concurrency=4)
    with ThreadPoolExecutor(8) as pool:
        prs = list(pool.map(lambda i: forge.create_pull_request(f"acme/r{i}", draft()), range(8)))
    assert [pr.number for pr in prs] == [1] * 8
    assert 1 < fake.max_writes_in_flight <= 4  # side by side, up to the write concurrency
    assert clock.sleeps == [] and forge.stats["write_pacing_wait_s"] == 0  # within the burst


def test_retry_after_pauses_every_thread_of_the_token(fake):
    clock = FakeClock()
    forge = make_forge(fake, clock)
    fake.inject("secondary", methods={"POST"}, path=r"/repos/acme/app/pulls", times=1,
                retry_after=7)  # fmt: skip
    forge.create_pull_request(APP, draft())
    assert clock.sleeps == [7] and forge.stats["rate_limit_wait_s"] == 7
    assert forge.budget.pause_until == 1007  # what any other thread would wait out too
    assert len(fake.repos["acme/app"].pulls) == 1


def test_a_cancelled_worker_stops_waiting_for_a_slot_and_gives_it_back(fake):
    def cancelled(seconds: float) -> None:  # what stoppable_sleep does in a cancelled worker
        raise ForgeError(f"GitHub: {cancel.CANCELLED_MESSAGE}")

    clock = FakeClock()
    limits = WriteLimits(per_minute=1, per_hour=10)
    forge = make_forge(fake, clock, limits=limits)
    forge._sleep = cancelled
    forge.create_pull_request(APP, draft())  # the minute's one write
    assert forge.budget.writes_within(1000.0, MINUTE) == 1
    with pytest.raises(ForgeError, match="cancelled"):
        forge.comment(APP, 1, "never sent")
    assert forge.budget.writes_within(1000.0 + MINUTE, MINUTE) == 0  # the slot was given back
    assert not fake.repos["acme/app"].comments.get(1)

    # the default sleep ends at once in a cancelled worker
    scope = cancel.CancelScope()
    scope.cancel()
    with cancel.scope(scope), pytest.raises(ForgeError, match="cancelled"):
        stoppable_sleep(3600)


# requests ----------------------------------------------------------------------------------------


def deliver_like_a_run(forge, fake, tmp_path: Path) -> None:
    """What a run does for one target on GitHub: resolve, look for its PR, push, open it."""
    resolved = forge.resolve(APP, None, BRANCH)
    ws = tmp_path / "ws"
    run_git(["clone", "--quiet", resolved.clone_url, str(ws)], env=forge.git_env())
    run_git(["checkout", "--quiet", "-b", "campaign/two"], ws)
    (ws / "app.py").write_text("GREETING = 'TWO'\n")
    run_git(["commit", "--quiet", "-am", "two"], ws, env=author_env("Test", "test@example.com"))
    sha = run_git(["rev-parse", "HEAD"], ws).strip()
    assert forge.find_pull_request(APP, "campaign/two") is None
    forge.push_branch(APP, ws, "campaign/two", sha, None)
    forge.create_pull_request(
        APP, draft(head="campaign/two", labels=["campaign"], reviewers=["octocat"])
    )


def api_calls(fake: FakeGitHub) -> list[tuple[str, str, int]]:
    """(method, path without the API prefix, status) of every API request, in order."""
    return [
        (c.method, c.path.removeprefix(fake.api_prefix), c.status)
        for c in fake.calls
        if not c.path.startswith("/git/")
    ]


def test_a_fresh_target_costs_seven_requests_and_reads_its_repository_once(fake, tmp_path):
    forge = make_forge(fake, FakeClock())
    with counting_requests(forge) as tally:
        deliver_like_a_run(forge, fake, tmp_path)
    assert api_calls(fake) == [
        ("GET", "/repos/acme/app", 200),
        ("GET", "/repos/acme/app/branches/main", 200),
        ("GET", f"/repos/acme/app/branches/{BRANCH}", 200),
        ("GET", "/repos/acme/app/pulls", 200),
        ("POST", "/repos/acme/app/pulls", 201),
        ("POST", "/repos/acme/app/issues/1/labels", 200),
        ("POST", "/repos/acme/app/pulls/1/requested_reviewers", 201),
    ]  # the push took the default branch and clone URL that resolve read
    assert (tally.requests, tally.writes, tally.not_modified) == (7, 3, 0)
    assert len(fake.calls_to("GET", r"/repos/acme/app")) == 1


def test_a_rerun_updates_without_reading_the_pull_request_again(fake):
    forge = make_forge(fake, FakeClock())
    forge.create_pull_request(APP, draft(reviewers=["octocat"]))
    fake.calls.clear()
    existing = forge.find_pull_request(APP, BRANCH)
    assert existing is not None
    with counting_requests(forge) as tally:
        same = forge.update_pull_request(APP, existing.number, draft(reviewers=["octocat"]))
    assert same.updated_at == existing.updated_at
    # the reviews (who reviewed already) are all it reads: the PR is what find returned
    assert [(m, p) for m, p, _ in api_calls(fake)] == [
        ("GET", "/repos/acme/app/pulls"),
        ("GET", "/repos/acme/app/pulls/1/reviews"),
    ]
    assert tally.requests == 1


def test_an_unchanged_pull_request_is_read_again_with_304s(fake):
    clock = FakeClock()
    forge = make_forge(fake, clock)
    forge.create_pull_request(APP, draft())
    sha = fake.refs("acme/app")[BRANCH]
    fake.set_status("acme/app", sha, "ci/build", "pending")
    first = forge.pull_request_status(APP, 1)
    used = fake.rate_used
    fake.calls.clear()

    again = forge.pull_request_status(APP, 1)
    assert again == first
    statuses = [status for _, _, status in api_calls(fake)]
    assert statuses and set(statuses) == {304}  # the PR, its checks and its reviews
    assert fake.rate_used == used  # a 304 is not counted against the rate limit
    assert forge.stats["not_modified"] == len(statuses)
    assert all(c.headers.get("if-none-match", "").startswith('W/"') for c in fake.calls)

    fake.set_status("acme/app", sha, "ci/build", "success")
    assert forge.pull_request_status(APP, 1).checks == "success"  # a change is a 200 again
    assert fake.rate_used > used


def test_no_etags_without_a_cache(fake):
    forge = make_forge(fake, FakeClock(), etag_cache_size=0)
    forge.resolve(APP, None, BRANCH)
    forge.resolve(APP, None, BRANCH)
    assert all("if-none-match" not in c.headers for c in fake.calls)


# the campaign's max_per_hour -----------------------------------------------------------------


def test_the_limiter_waits_within_its_patience_and_holds_beyond_it():
    now = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> bool:
        waited.append(seconds)
        now[0] += seconds
        return False

    limiter = PullRequestLimiter(2, [-3000.0], patience_s=300, clock=lambda: now[0], sleep=sleep)
    assert limiter.acquire() is None  # a second slot in the hour
    now[0] = 400.0
    assert limiter.acquire() is None and waited == [200.0]  # -3000's slot comes back at 600
    assert limiter.acquire() == 3600.0 and waited == [200.0]  # an hour after 0: held
    limiter.give_back()
    assert limiter.acquire() is None


def test_max_per_hour_must_be_positive(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: rename\ntargets: [acme/app]\n"
        "transformation: {kind: deterministic, command: 'true'}\n"
        "pull_request: {max_per_hour: 0}\n"
    )
    with pytest.raises(Exception, match="max_per_hour"):
        load_campaign(path)


def test_which_records_count_as_opened():
    assert opened_a_pull_request(PullRequestRecord(outcome="opened", number=1))
    draft_opened = "draft pull request #3 opened; awaits a review"
    assert opened_a_pull_request(PullRequestRecord(outcome="awaiting_review", reason=draft_opened))
    waiting = "draft pull request #3 awaits a review"
    assert not opened_a_pull_request(PullRequestRecord(outcome="awaiting_review", reason=waiting))
    assert not opened_a_pull_request(PullRequestRecord(outcome="updated", number=1))


@pytest.mark.usefixtures("bwrap")
def test_max_per_hour_holds_across_two_runs(platform):
    token = TOKEN
    with FakeGitHub(token, platform.root / "github") as github:
        github.add_org("acme")
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        names = ["alpha", "beta", "gamma"]
        for name in names:
            github.add_repo(f"acme/{name}", files)
        platform.use_github(github.base_url, token)
        data = {
            "name": "rename",
            "targets": [f"acme/{n}" for n in names],
            "transformation": {"kind": "deterministic", "command": CODEMOD},
            "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
            "pull_request": {"max_per_hour": 2},
        }
        path = platform.campaigns / "rename.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))

        platform.cli("run", "--file", str(path))
        opened = [n for n in names if github.repos[f"acme/{n}"].pulls]
        assert len(opened) == 2
        (held,) = set(names) - set(opened)
        assert "campaign/rename" not in github.refs(f"acme/{held}")  # not even pushed

        platform.cli("run", "--file", str(path))  # within the hour: the records count
        assert sum(len(github.repos[f"acme/{n}"].pulls) for n in names) == 2
        rows = {
            r["target"]: r
            for r in json.loads(platform.cli("report", "rename", "--output", "json").stdout)
        }
        row = rows[f"acme__{held}"]
        assert row["status"] == "pending"
        assert "PR rate limit: next slot at" in json.dumps(row)


def test_the_limiter_is_shared_by_threads():
    limiter = PullRequestLimiter(5, patience_s=0, clock=lambda: 0.0)
    results: list[float | None] = []
    lock = threading.Lock()

    def take() -> None:
        got = limiter.acquire()
        with lock:
            results.append(got)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == 5 and results.count(3600.0) == 15
