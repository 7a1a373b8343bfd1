"""The Bitbucket forge (Cloud and Data Center) and its discovery against a fake Bitbucket that
speaks each flavour's REST API and git over HTTP, requiring the credentials."""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.bitbucket import BitbucketForge
from resources.forges.bitbucket_discovery import BitbucketSelector
from resources.git import GitError, author_env, run_git
from tests.fake_bitbucket import FakeBitbucket
from tests.forge_helpers import FakeClock, forge_fixtures

TOKEN = "bbtok_CANARY4f1e8d2c6b0a9e7d5c3b1a0f2e4d6c8b"
SECRETS = [
    TOKEN,
    base64.b64encode(f"x-token-auth:{TOKEN}".encode()).decode(),
    base64.b64encode(f"bot:{TOKEN}".encode()).decode(),
]
BRANCH = "campaign/rename"
FILES = {"app.py": "GREETING = 'OLD'\n"}
FLAVORS = ["cloud", "dc"]
OWNER = {"cloud": "acme", "dc": "ACME"}
REVIEWER = {"cloud": "557058:alice", "dc": "alice"}


@pytest.fixture(params=FLAVORS)
def fake(request, tmp_path: Path):
    """A running fake Bitbucket of each flavour with repository OWNER/app and a reviewer."""
    flavor = request.param
    with FakeBitbucket(flavor, TOKEN, tmp_path / "bitbucket") as server:
        server.add_repo(f"{OWNER[flavor]}/app", FILES)
        server.add_user(REVIEWER[flavor])
        yield server


def make_forge(fake: FakeBitbucket, clock: FakeClock, **kw) -> BitbucketForge:
    """A forge on the fake that waits on the fake clock."""
    return BitbucketForge(
        fake.flavor, TOKEN, fake.base_url, sleep=clock.sleep, clock=clock.clock, **kw
    )


clock, forge = forge_fixtures(make_forge)


def app(fake: FakeBitbucket) -> tuple[str, str]:
    """(full name, web URL) of the repository app."""
    name = f"{OWNER[fake.flavor]}/app"
    return name, fake.repo_url(name)


def draft(**kw) -> PullRequestDraft:
    """The campaign's pull request."""
    data = {"head": BRANCH, "base": "main", "title": "Rename OLD to NEW", "body": "Why."}
    return PullRequestDraft(**{**data, **kw})


def push_change(forge: BitbucketForge, fake: FakeBitbucket, tmp_path: Path) -> str:
    """Clone app, commit a change and push it to the campaign branch through the forge."""
    _, url = app(fake)
    resolved = forge.resolve(url, None, BRANCH)
    work = tmp_path / f"work-{fake.flavor}"
    run_git(["clone", "--quiet", resolved.clone_url, str(work)], env=forge.git_env())
    (work / "app.py").write_text("GREETING = 'NEW'\n")
    run_git(["commit", "--quiet", "-am", "rename"], work, env=author_env("Bot", "bot@example"))
    sha = run_git(["rev-parse", "HEAD"], work).strip()
    forge.push_branch(url, work, BRANCH, sha, resolved.branch_sha)
    return sha


def open_pr(forge: BitbucketForge, fake: FakeBitbucket, tmp_path: Path, **kw):
    """Push the change and open the pull request."""
    push_change(forge, fake, tmp_path)
    return forge.create_pull_request(app(fake)[1], draft(**kw))


# repositories and pushes -------------------------------------------------------------------------


def test_resolve_and_push_go_through_the_api_and_git_with_the_token(fake, forge, tmp_path):
    name, url = app(fake)
    resolved = forge.resolve(url, None, BRANCH)
    assert resolved.base_branch == "main" and resolved.branch_sha is None
    assert resolved.base_sha == fake.refs(name)["main"]
    assert "@" not in resolved.clone_url  # Cloud's user name is dropped from the clone link
    sha = push_change(forge, fake, tmp_path)
    assert fake.refs(name)[BRANCH] == sha
    assert forge.resolve(url, None, BRANCH).branch_sha == sha
    # the credentials are scoped to this Bitbucket's web root
    env = forge.git_env()
    assert env["GIT_CONFIG_KEY_0"] == f"http.{fake.web}/.extraHeader"
    # without them, git is turned away
    with pytest.raises(GitError, match=r"401|Authentication|terminal prompts"):
        run_git(["ls-remote", resolved.clone_url], env={"GIT_TERMINAL_PROMPT": "0"})


def test_pushes_outside_campaign_branches_are_refused_before_any_request(fake, forge, tmp_path):
    _, url = app(fake)
    before = len(fake.calls)
    with pytest.raises(ForgeError, match="not a campaign branch"):
        forge.push_branch(url, tmp_path, "main", "0" * 40, None)
    assert len(fake.calls) == before


def test_addresses_of_each_flavour_are_understood(fake, forge):
    name, url = app(fake)
    repo = fake.repos[name]
    forms = [url, url + ".git" if fake.flavor == "cloud" else url + "/browse", name]
    forms.append(f"{fake.web}/{name}")  # a campaign's OWNER/NAME under the forge's web root
    forms.append(fake.clone_url(repo))
    for form in forms:
        assert forge.resolve(form, None, BRANCH).base_branch == "main", form
    with pytest.raises(ForgeError, match="not a Bitbucket"):
        forge.resolve("https://example.com/", None, BRANCH)


def test_roots_and_git_credentials_of_each_flavour():
    cloud = BitbucketForge("cloud", TOKEN, "https://api.bitbucket.org/2.0/")
    assert (cloud.http.api_root, cloud.http.web_root) == (
        "https://api.bitbucket.org/2.0", "https://bitbucket.org",
    )  # fmt: skip
    env = cloud.git_env()
    assert env["GIT_CONFIG_KEY_0"] == "http.https://bitbucket.org/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {SECRETS[1]}"  # x-token-auth
    assert env["GIT_CONFIG_VALUE_1"] == "false"  # http.followRedirects
    app_password = BitbucketForge("cloud", TOKEN, "", username="bot")
    assert app_password.git_env()["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {SECRETS[2]}"
    for given in ("https://bb.example.com", "https://bb.example.com/rest/api/1.0"):
        dc = BitbucketForge("dc", TOKEN, given)
        assert dc.http.api_root == "https://bb.example.com/rest/api/1.0"
        assert dc.git_env()["GIT_CONFIG_KEY_0"] == "http.https://bb.example.com/.extraHeader"
        assert dc.git_env()["GIT_CONFIG_VALUE_0"] == f"Authorization: Bearer {TOKEN}"
    with pytest.raises(ForgeError, match="base_url"):
        BitbucketForge("dc", TOKEN, "")
    with pytest.raises(ForgeError, match="no token"):
        BitbucketForge("cloud", "", "")
    assert TOKEN not in repr(cloud) + repr(dc)


def test_a_missing_repository_is_a_404_naming_it(fake, forge):
    missing = fake.repo_url(f"{OWNER[fake.flavor]}/nope")
    with pytest.raises(ForgeError, match=f"{OWNER[fake.flavor]}/nope: repository not found"):
        forge.resolve(missing, None, BRANCH)


def test_wrong_credentials_are_a_clear_error_without_the_token(fake, clock):
    wrong = BitbucketForge(fake.flavor, "WRONG" + TOKEN, fake.base_url, sleep=clock.sleep)
    with pytest.raises(ForgeError, match="rejected the credentials") as err:
        wrong.resolve(app(fake)[1], None, BRANCH)
    assert TOKEN not in str(err.value)


def test_cloud_takes_an_app_password_with_a_user_name(tmp_path, clock):
    with FakeBitbucket("cloud", TOKEN, tmp_path / "bb", username="bot") as fake:
        fake.add_repo("acme/app", FILES)
        forge = BitbucketForge("cloud", TOKEN, fake.base_url, username="bot", sleep=clock.sleep)
        assert forge.resolve(fake.repo_url("acme/app"), None, BRANCH).base_branch == "main"
        bearer = BitbucketForge("cloud", TOKEN, fake.base_url, sleep=clock.sleep)
        with pytest.raises(ForgeError, match="rejected the credentials"):
            bearer.resolve(fake.repo_url("acme/app"), None, BRANCH)


# pull requests -----------------------------------------------------------------------------------


def test_a_pull_request_is_created_found_and_updated_in_place(fake, forge, tmp_path):
    name, url = app(fake)
    assert forge.find_pull_request(url, BRANCH) is None
    pr = open_pr(forge, fake, tmp_path, reviewers=[REVIEWER[fake.flavor]], labels=["campaign"])
    assert (pr.number, pr.state, pr.head, pr.base) == (1, "open", BRANCH, "main")
    assert pr.labels == []  # Bitbucket has no labels: recorded nowhere, and no error
    assert fake.pr(name, 1).reviewers == [REVIEWER[fake.flavor]]
    found = forge.find_pull_request(url, BRANCH)
    assert found is not None and found.number == 1 and found.title == "Rename OLD to NEW"

    # an update with nothing new writes nothing
    writes = len([c for c in fake.calls if c.method in ("POST", "PUT")])
    same = forge.update_pull_request(url, 1, draft(reviewers=[REVIEWER[fake.flavor]]))
    assert same.updated_at == pr.updated_at
    assert len([c for c in fake.calls if c.method in ("POST", "PUT")]) == writes

    # new title and body, a new reviewer added, the first one kept (never removed)
    fake.add_user("bob")
    updated = forge.update_pull_request(url, 1, draft(title="New title", body="New body",
                                                      reviewers=["bob"]))  # fmt: skip
    assert (updated.title, updated.body) == ("New title", "New body")
    assert fake.pr(name, 1).reviewers == [REVIEWER[fake.flavor], "bob"]
    assert len(fake.repos[name].pulls) == 1


def test_draft_flag_is_set_and_flipped(fake, forge, tmp_path):
    name, url = app(fake)
    pr = open_pr(forge, fake, tmp_path, draft=True)
    assert pr.draft and fake.pr(name, 1).draft
    assert forge.pull_request_status(url, 1).state == "draft"
    forge.update_pull_request(url, 1, draft(draft=False))
    assert not fake.pr(name, 1).draft
    assert forge.pull_request_status(url, 1).state == "open"


def test_a_second_create_adopts_the_open_pull_request(fake, forge, tmp_path):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    again = forge.create_pull_request(url, draft(title="Second try"))
    assert again.number == 1 and again.title == "Second try"
    assert len(fake.repos[name].pulls) == 1


def test_a_create_whose_answer_was_lost_does_not_open_a_second(fake, forge, clock, tmp_path):
    name, url = app(fake)
    push_change(forge, fake, tmp_path)
    fake.inject("502_after", methods={"POST"}, path=r".*pull-?requests")
    pr = forge.create_pull_request(url, draft())
    assert pr.number == 1
    assert len(fake.repos[name].pulls) == 1
    assert forge.stats["recovered_writes"] == 1
    assert fake.fault_log[0][:2] == ("502_after", "POST")


def test_a_comment_whose_answer_was_lost_is_not_posted_twice(fake, forge, tmp_path):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    fake.inject("502_after", methods={"POST"}, path=r".*/comments")
    link = forge.comment(url, 1, "Hello")
    assert [c["text"] for c in fake.pr(name, 1).comments] == ["Hello"]
    assert link.startswith(fake.web) and "/pull-requests/1" in link


def test_server_errors_and_rate_limits_are_retried_honouring_retry_after(fake, forge, clock):
    _, url = app(fake)
    fake.inject("429", methods={"GET"}, times=1, retry_after=7)
    fake.inject("502", methods={"GET"}, times=2)
    assert forge.resolve(url, None, BRANCH).base_branch == "main"
    assert 7 in clock.sleeps  # Retry-After honoured, on the injected (cancellable) sleep
    assert forge.stats["rate_limited"] == 1 and forge.stats["server_errors"] == 2


def test_a_rate_limit_longer_than_max_wait_fails_at_once(fake, forge, clock):
    fake.inject("429", methods={"GET"}, times=None, retry_after=3600)
    with pytest.raises(ForgeError, match=r"asks to wait 3600 s .* not waiting that long"):
        forge.resolve(app(fake)[1], None, BRANCH)
    assert clock.sleeps == []


def test_a_lasting_outage_ends_in_a_clear_error(fake, clock):
    forge = make_forge(fake, clock, max_retries=2)
    fake.inject("502", methods={"GET"}, times=None)
    with pytest.raises(ForgeError, match="HTTP 502"):
        forge.resolve(app(fake)[1], None, BRANCH)
    assert len(clock.sleeps) == 2


def test_listings_are_paged(fake, clock, tmp_path):
    forge = make_forge(fake, clock, page_size=2)
    name, url = app(fake)
    push_change(forge, fake, tmp_path)
    for n in range(5):  # four declined pull requests from the branch, then an open one
        pr = forge.create_pull_request(url, draft(title=f"try {n}"))
        if n < 4:
            fake.decline_pr(name, pr.number)
    before = len(fake.calls)
    found = forge.find_pull_request(url, BRANCH)
    assert found is not None and found.number == 5 and found.state == "open"
    pages = [c for c in fake.calls[before:] if c.method == "GET"]
    assert len(pages) == 3  # 5 pull requests at 2 a page


def test_data_center_version_conflicts_are_read_again_and_retried(tmp_path, clock):
    with FakeBitbucket("dc", TOKEN, tmp_path / "bb") as fake:
        fake.add_repo("ACME/app", FILES)
        forge = make_forge(fake, clock)
        url = fake.repo_url("ACME/app")
        open_pr(forge, fake, tmp_path)
        fake.inject("conflict", methods={"PUT"}, path=r".*/pull-requests/1")
        updated = forge.update_pull_request(url, 1, draft(title="After a conflict"))
        assert updated.title == "After a conflict"
        statuses = [c.status for c in fake.calls_to("PUT", r".*/pull-requests/1")]
        assert statuses == [409, 200]
        fake.inject("conflict", methods={"POST"}, path=r".*/pull-requests/1/decline")
        assert forge.close_pull_request(url, 1).state == "closed"


def test_merge_close_reopen_and_comment_semantics(fake, forge, tmp_path):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    closed = forge.close_pull_request(url, 1, comment="Not needed any more")
    assert closed.state == "closed" and fake.pr(name, 1).state == "DECLINED"
    assert [c["text"] for c in fake.pr(name, 1).comments] == ["Not needed any more"]
    assert forge.close_pull_request(url, 1).state == "closed"  # a no-op
    with pytest.raises(ForgeError, match="is closed, not open"):
        forge.merge_pull_request(url, 1)
    if fake.flavor == "cloud":
        with pytest.raises(ForgeError, match="cannot reopen a declined pull request"):
            forge.reopen_pull_request(url, 1)
        pr = forge.create_pull_request(url, draft())  # a new one instead
        number = pr.number
    else:
        assert forge.reopen_pull_request(url, 1).state == "open"
        assert forge.reopen_pull_request(url, 1).state == "open"  # a no-op
        number = 1
    merged = forge.merge_pull_request(url, number)
    assert merged.state == "merged" and fake.pr(name, number).state == "MERGED"
    assert fake.refs(name)["main"] != fake.refs(name)[BRANCH]  # a merge commit
    assert forge.merge_pull_request(url, number).state == "merged"  # merged stays merged
    with pytest.raises(ForgeError, match="merged and cannot be closed"):
        forge.close_pull_request(url, number)
    with pytest.raises(ForgeError, match="merged and cannot be reopened"):
        forge.reopen_pull_request(url, number)
    with pytest.raises(ForgeError, match="pull request #99 not found"):
        forge.comment(url, 99, "hi")


def test_merge_methods(fake, forge, tmp_path):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    with pytest.raises(ForgeError, match="'octopus' is not one of"):
        forge.merge_pull_request(url, 1, "octopus")
    if fake.flavor == "dc":
        with pytest.raises(ForgeError, match="'squash' is not supported on Bitbucket Data Center"):
            forge.merge_pull_request(url, 1, "squash")
        assert fake.pr(name, 1).state == "OPEN"
        return
    head = fake.refs(name)[BRANCH]
    forge.merge_pull_request(url, 1, "rebase")  # fast_forward: main moves to the head
    assert fake.refs(name)["main"] == head
    assert fake.calls_to("POST", r".*/merge")[-1].json()["merge_strategy"] == "fast_forward"


def test_status_reads_build_statuses_and_approvals(fake, forge, tmp_path):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path, reviewers=[REVIEWER[fake.flavor]])
    status = forge.pull_request_status(url, 1)
    assert (status.state, status.checks, status.review) == ("open", "none", "none")
    fake.review(name, 1, "dave", "commented")
    status = forge.pull_request_status(url, 1)
    assert status.review == "commented" and status.reviews == {"dave": "commented"}
    assert status.mergeable is (None if fake.flavor == "cloud" else True)
    sha = fake.refs(name)[BRANCH]
    fake.set_status(name, sha, "ci", "INPROGRESS")
    fake.set_status(name, sha, "lint", "SUCCESSFUL")
    status = forge.pull_request_status(url, 1)
    assert status.checks == "pending" and status.pending_checks == ["ci"]
    fake.set_status(name, sha, "ci", "FAILED")
    status = forge.pull_request_status(url, 1)
    assert status.checks == "failure" and status.failing_checks == ["ci"]
    fake.set_status(name, sha, "ci", "SUCCESSFUL")
    assert forge.pull_request_status(url, 1).checks == "success"
    fake.review(name, 1, REVIEWER[fake.flavor], "approved")
    status = forge.pull_request_status(url, 1)
    assert status.review == "approved"
    assert status.reviews == {REVIEWER[fake.flavor]: "approved", "dave": "commented"}
    fake.review(name, 1, "carol", "changes_requested")
    assert forge.pull_request_status(url, 1).review == "changes_requested"
    fake.merge_pr(name, 1)
    status = forge.pull_request_status(url, 1)
    assert status.state == "merged" and status.mergeable is None


def test_failed_builds_and_branch_checks(fake, forge, tmp_path):
    """What CI-driven repair and the post-merge watch read."""
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    head, main = fake.refs(name)[BRANCH], fake.refs(name)["main"]
    fake.set_status(name, head, "ci", "FAILED", "3 tests failed", "https://ci.example.com/b/7")
    fake.set_status(name, head, "lint", "SUCCESSFUL")
    assert forge.failed_check_logs(url, 1) == {
        "ci": "3 tests failed\nbuild: https://ci.example.com/b/7"
    }
    assert forge.branch_checks(url, "main").state == "none"
    fake.set_status(name, main, "ci", "STOPPED")
    checks = forge.branch_checks(url, "main")
    assert (checks.sha, checks.state, checks.failing) == (main, "failure", ["ci"])
    with pytest.raises(ForgeError, match="branch 'nope' does not exist"):
        forge.branch_checks(url, "nope")


def test_data_center_reports_a_conflicting_pull_request_not_mergeable(tmp_path, clock):
    with FakeBitbucket("dc", TOKEN, tmp_path / "bb") as fake:
        fake.add_repo("ACME/app", FILES)
        forge = make_forge(fake, clock)
        open_pr(forge, fake, tmp_path)
        fake.create_branch("ACME/app", "main", {"app.py": "GREETING = 'OTHER'\n"})
        status = forge.pull_request_status(fake.repo_url("ACME/app"), 1)
        assert status.mergeable is False and status.mergeable_state == "dirty"


def test_a_reviewer_bitbucket_refuses_is_a_warning_not_a_failure(fake, forge, tmp_path, caplog):
    """As on GitHub: the pull request opens (or is updated) without the reviewer."""
    name, url = app(fake)
    push_change(forge, fake, tmp_path)
    pr = forge.create_pull_request(url, draft(reviewers=["nobody"]))
    assert pr.number == 1 and fake.pr(name, 1).reviewers == []
    assert "reviewers not requested" in caplog.text and "nobody" in caplog.text
    forge.update_pull_request(url, 1, draft(title="Retitled", reviewers=["ghost"]))
    assert fake.pr(name, 1).title == "Retitled" and fake.pr(name, 1).reviewers == []
    assert "ghost" in caplog.text


def test_bitbucket_validation_errors_name_the_repository(fake, forge):
    name, url = app(fake)
    wanted = rf"{name}: creating a pull request for campaign/none .*(Branch not found|not found)"
    with pytest.raises(ForgeError, match=wanted):
        forge.create_pull_request(url, draft(head="campaign/none"))


def test_credentials_are_in_no_error_or_log(fake, clock, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    forge = make_forge(fake, clock, max_retries=1)
    fake.inject("502", methods={"GET", "POST"}, times=None)
    with pytest.raises(ForgeError) as err:
        forge.resolve(app(fake)[1], None, BRANCH)
    texts = [str(err.value), caplog.text]
    with pytest.raises(ForgeError) as err:
        forge.push_branch(app(fake)[1], tmp_path, BRANCH, "0" * 40, None)
    texts.append(str(err.value))
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# discovery ---------------------------------------------------------------------------------------


def test_discovery_lists_pages_and_filters(fake, clock):
    owner = OWNER[fake.flavor]
    for slug in ("svc-a", "svc-b", "svc-c", "lib"):
        fake.add_repo(f"{owner}/{slug}", project="CORE" if slug != "lib" else "LIB")
    fake.add_repo(f"{owner}/svc-fork", fork=True)
    fake.add_repo(f"{owner}/svc-old", archived=True)
    forge = make_forge(fake, clock, page_size=2)
    source = {"workspace": owner} if fake.flavor == "cloud" else {"project": owner}
    found = forge.discover(BitbucketSelector(**source, name_pattern="svc-*"))
    names = [r.full_name for r in found]
    expected = ["svc-a", "svc-b", "svc-c"] + (["svc-old"] if fake.flavor == "cloud" else [])
    assert names == [f"{owner}/{s}" for s in expected]  # Cloud has no archived flag
    assert found[0].url == fake.repo_url(f"{owner}/svc-a")
    with_forks = forge.discover(BitbucketSelector(**source, include_forks=True))
    assert f"{owner}/svc-fork" in [r.full_name for r in with_forks]
    if fake.flavor == "cloud":
        core = forge.discover(BitbucketSelector(workspace=owner, project="LIB"))
        assert [r.full_name for r in core] == [f"{owner}/lib"]
        with pytest.raises(ForgeError, match="needs `workspace`"):
            forge.discover(BitbucketSelector(project="LIB"))
    else:
        with pytest.raises(ForgeError, match="needs `project`"):
            forge.discover(BitbucketSelector(workspace=owner))
    with pytest.raises(ForgeError, match="not found"):
        forge.discover(BitbucketSelector(**{k: "nobody" for k in source}))


def test_the_selector_needs_a_source_and_knows_its_fields():
    with pytest.raises(ValidationError, match="workspace"):
        BitbucketSelector()
    with pytest.raises(ValidationError, match="topics"):
        BitbucketSelector(workspace="acme", topics=["x"])


def test_a_cloud_merge_finished_in_the_background_is_waited_for(tmp_path, clock):
    with FakeBitbucket("cloud", TOKEN, tmp_path / "bb") as fake:
        fake.add_repo("acme/app", FILES)
        forge = make_forge(fake, clock)
        open_pr(forge, fake, tmp_path)
        fake.merge_after_reads = 3  # 202 Accepted; merged by the third read after it
        merged = forge.merge_pull_request(fake.repo_url("acme/app"), 1)
        assert merged.state == "merged" and fake.pr("acme/app", 1).state == "MERGED"
        assert len(clock.sleeps) == 2  # two reads found it still open


def test_a_wait_ends_when_the_worker_is_cancelled(fake):
    from resources import cancel

    forge = BitbucketForge(fake.flavor, TOKEN, fake.base_url)  # the real, cancellable sleep
    fake.inject("429", methods={"GET"}, times=None, retry_after=50)
    scope = cancel.CancelScope()
    scope.cancel()
    with cancel.scope(scope), pytest.raises(ForgeError, match="Bitbucket: cancelled"):
        forge.resolve(app(fake)[1], None, BRANCH)


def test_threads_share_the_forge_each_with_its_own_session(fake, forge, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    owner = OWNER[fake.flavor]
    names = [f"{owner}/r{i}" for i in range(3)]
    for name in names:
        fake.add_repo(name, FILES)
    together = threading.Barrier(3)  # three threads at once, each its first request

    def resolve(name: str):
        together.wait(timeout=30)
        return forge.resolve(fake.repo_url(name), None, BRANCH)

    with ThreadPoolExecutor(3) as pool:
        resolved = list(pool.map(resolve, names))
    assert [r.base_sha for r in resolved] == [fake.refs(n)["main"] for n in names]
    assert len(forge.http._sessions) == 3


@pytest.mark.parametrize("verb", ["merge", "decline"])
def test_a_merge_or_close_whose_answer_was_lost_is_read_back(fake, forge, tmp_path, verb):
    name, url = app(fake)
    open_pr(forge, fake, tmp_path)
    fake.inject("502_after", methods={"POST"}, path=rf".*/{verb}")
    if verb == "merge":
        assert forge.merge_pull_request(url, 1).state == "merged"
    else:
        assert forge.close_pull_request(url, 1).state == "closed"
    assert fake.pr(name, 1).state == {"merge": "MERGED", "decline": "DECLINED"}[verb]


def test_a_rate_limit_pauses_every_thread_of_the_forge(fake):
    """Thread A is told to wait 5 s; thread B, starting meanwhile, waits too before asking."""
    now, sleeps, lock, calls_at = [1000.0], [], threading.Lock(), {}
    a_waits, b_done = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        name = threading.current_thread().name
        with lock:
            sleeps.append((name, seconds))
            calls_at[name] = len(fake.calls)
        if name == "A":
            a_waits.set()
            b_done.wait(30)
        with lock:
            now[0] += seconds

    forge = BitbucketForge(fake.flavor, TOKEN, fake.base_url, sleep=sleep, clock=lambda: now[0])
    url = app(fake)[1]
    fake.inject("429", methods={"GET"}, times=1, retry_after=5)

    def in_b() -> None:
        try:
            forge.resolve(url, None, BRANCH)
        finally:
            b_done.set()

    a = threading.Thread(target=forge.resolve, args=(url, None, BRANCH), name="A")
    a.start()
    assert a_waits.wait(30)
    calls_before_b = len(fake.calls)
    b = threading.Thread(target=in_b, name="B")
    b.start()
    b.join(30)
    a.join(30)
    assert ("A", 5.0) in sleeps and ("B", 5.0) in sleeps
    assert calls_at["B"] == calls_before_b  # B waited before asking anything
    assert len(fake.calls) > calls_before_b


def test_requests_per_fresh_target(fake, forge, tmp_path):
    """resolve, find, push and open: Cloud 5 API requests, Data Center 6 (its default branch
    is a request of its own); the push is git's and reuses what resolve read."""
    _, url = app(fake)
    with forge.counting() as tally:
        resolved = forge.resolve(url, None, BRANCH)
        assert forge.find_pull_request(url, BRANCH) is None
        work = tmp_path / "work"
        run_git(["clone", "--quiet", resolved.clone_url, str(work)], env=forge.git_env())
        (work / "app.py").write_text("GREETING = 'NEW'\n")
        run_git(["commit", "--quiet", "-am", "x"], work, env=author_env("Bot", "bot@example"))
        sha = run_git(["rev-parse", "HEAD"], work).strip()
        forge.push_branch(url, work, BRANCH, sha, None)
        forge.create_pull_request(url, draft())
    assert (tally.requests, tally.writes) == ({"cloud": 5, "dc": 6}[fake.flavor], 1)
