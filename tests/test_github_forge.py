"""The GitHub forge and discovery against a fake GitHub that speaks REST, GraphQL and git HTTP."""

from __future__ import annotations

import base64
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from github import Auth, Github
from pydantic import ValidationError

from orchestrator_assets.spec.campaign import load_campaign
from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.github import (
    GitHubForge,
    GitHubPullRequestDraft,
    repo_full_name,
)
from resources.forges.github_discovery import GitHubSelector, discover
from resources.git import GitError, run_git
from tests.fake_github import FakeGitHub
from tests.forge_helpers import (
    FakeClock,
    assert_no_secret_in,
    clone,
    commit,
    every_verb_and_error,
    forge_fixtures,
)

TOKEN = "ghp_CANARY0f3b9c2d7e1a4f6b8c0d2e4f6a8b0c2d4"
TOKEN_B64 = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
WRONG = "ghp_CANARYwrong9c2d7e1a4f6b8c0d2e4f6a8b0c2"
BRANCH = "campaign/rename"
APP = "https://ghe.example.com/acme/app"  # the web host differs from the API host, as on GHE
FILES = {"app.py": "GREETING = 'OLD'\n"}


@pytest.fixture
def fake(tmp_path: Path):
    """A running fake GitHub with the organization acme."""
    with FakeGitHub(TOKEN, tmp_path / "github") as server:
        server.add_org("acme")
        yield server


def make_forge(fake: FakeGitHub, clock: FakeClock, **kw) -> GitHubForge:
    """A forge on the fake that waits on the fake clock."""
    kw.setdefault("backoff_s", 0.5)
    return GitHubForge(TOKEN, fake.base_url, sleep=clock.sleep, clock=clock.clock, **kw)


clock, forge = forge_fixtures(make_forge)


@pytest.fixture
def app(fake: FakeGitHub) -> str:
    """acme/app with a campaign branch one commit ahead of main."""
    fake.add_repo("acme/app", FILES, language="Python")
    fake.create_branch("acme/app", BRANCH, {"app.py": "GREETING = 'NEW'\n"})
    return APP


def draft(**kw) -> GitHubPullRequestDraft:
    """A pull request draft for the campaign branch."""
    fields = {"head": BRANCH, "base": "main", "title": "Rename OLD", "body": "Renames.", **kw}
    return GitHubPullRequestDraft(**fields)


def writes(fake: FakeGitHub) -> int:
    """How many write requests the fake has seen."""
    return sum(1 for c in fake.calls if c.method in ("POST", "PATCH", "PUT", "DELETE"))


# discovery ----------------------------------------------------------------------------------------


def fleet(fake: FakeGitHub) -> None:
    """25 repositories in acme: even ones Python with topics python+campaign, odd ones Go."""
    for i in range(25):
        even = i % 2 == 0
        fake.add_repo(
            f"acme/svc-{i:02d}",
            topics=["python", "campaign"] if even else ["go"],
            language="Python" if even else "Go",
            archived=i == 4,
            fork=i == 6,
        )


def test_discover_an_org_follows_pagination_and_filters(fake, clock):
    fleet(fake)
    forge = make_forge(fake, clock, per_page=10)
    found = discover(forge, GitHubSelector(org="acme"))
    assert len(found) == 23  # archived svc-04 and fork svc-06 left out
    pages = fake.calls_to("GET", r"/orgs/acme/repos")
    assert [c.query.get("page") for c in pages] == [None, ["2"], ["3"]]
    assert all(c.query["type"] == ["all"] and c.query["per_page"] == ["10"] for c in pages)
    first = found[0]
    assert first.full_name == "acme/svc-00" and first.url == f"{fake.web}/acme/svc-00"
    assert first.clone_url == f"{fake.web}/git/acme/svc-00.git" and first.default_branch == "main"
    assert first.topics == ["python", "campaign"] and first.language == "Python"

    python = discover(forge, GitHubSelector(org="acme", topics=["campaign", "python"]))
    assert {r.full_name for r in python} == {f"acme/svc-{i:02d}" for i in range(0, 25, 2)} - {
        "acme/svc-04",
        "acme/svc-06",
    }
    teens = discover(forge, GitHubSelector(org="acme", name_pattern="SVC-1?", language="go"))
    assert [r.full_name for r in teens] == [f"acme/svc-{i}" for i in (11, 13, 15, 17, 19)]
    wide = GitHubSelector(
        org="acme",
        topics=["python"],
        include_archived=True,
        include_forks=True,
        name_pattern="acme/svc-0*",
    )
    both = discover(forge, wide)
    assert [r.full_name for r in both] == [f"acme/svc-0{i}" for i in (0, 2, 4, 6, 8)]
    assert [r.archived for r in both] == [False, False, True, False, False]
    assert forge.stats["api_calls"] == 12  # 4 listings x 3 pages, nothing fetched per repository


def test_discover_by_search_query_and_by_user(fake, forge):
    fleet(fake)
    fake.add_repo("octo/one", language="Rust")
    fake.add_repo("octo/two", language="Rust", fork=True)
    fake.add_repo("campaign-bot/mine", private=True)

    found = discover(forge, GitHubSelector(query="org:acme topic:python", name_pattern="svc-1*"))
    assert [r.full_name for r in found] == [f"acme/svc-{i}" for i in (10, 12, 14, 16, 18)]
    (search,) = fake.calls_to("GET", r"/search/repositories")
    assert search.query["q"] == ["org:acme topic:python"]
    forks = discover(forge, GitHubSelector(query="org:acme svc-0", include_forks=True))
    assert "acme/svc-06" in {r.full_name for r in forks}
    assert fake.calls_to("GET", r"/search/repositories")[-1].query["q"] == [
        "org:acme svc-0 fork:true"
    ]

    assert [r.full_name for r in discover(forge, GitHubSelector(user="octo"))] == ["octo/one"]
    mine = discover(forge, GitHubSelector(user="campaign-bot"))  # the token's own user
    assert [r.full_name for r in mine] == ["campaign-bot/mine"]  # private ones too: /user/repos
    assert fake.calls_to("GET", r"/user/repos")


def test_discover_accepts_a_plain_pygithub_client(fake):
    fleet(fake)
    gh = Github(
        auth=Auth.Token(TOKEN), base_url=fake.base_url, per_page=10, seconds_between_requests=None
    )
    found = discover(gh, GitHubSelector(org="acme", language="python"))
    assert len(found) == 11


def test_discover_an_unknown_org_is_a_forge_error(fake, forge):
    with pytest.raises(ForgeError, match="org nope: not found"):
        discover(forge, GitHubSelector(org="nope"))


@pytest.mark.parametrize(
    "fields",
    [{}, {"org": "a", "query": "x"}, {"org": "a", "user": "b"}, {"topics": ["python"]}],
)
def test_a_selector_needs_exactly_one_source(fields):
    with pytest.raises(ValidationError, match="exactly one of org, user or query"):
        GitHubSelector(**fields)


def test_a_selector_refuses_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        GitHubSelector(org="acme", topic="python")


# resolve -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "acme/app",
        "https://github.com/acme/app",
        "https://github.com/acme/app.git",
        "https://ghe.example.com/acme/app/",
        "git@github.com:acme/app.git",
        "https://user:secret@ghe.example.com/acme/app",
    ],
)
def test_repository_urls_map_to_owner_and_name(url):
    assert repo_full_name(url) == "acme/app"


@pytest.mark.parametrize("url", ["https://github.com/acme", "acme/app/tree/main", "a b/c", ""])
def test_other_urls_are_refused(url):
    with pytest.raises(ForgeError, match="not a GitHub repository"):
        repo_full_name(url)


def test_resolve_reads_the_default_branch_and_shas_through_the_api(fake, forge):
    fake.add_repo("acme/app", FILES, branch="trunk")
    resolved = forge.resolve(APP + ".git", None, BRANCH)
    assert resolved.base_branch == "trunk"
    assert resolved.base_sha == fake.refs("acme/app")["trunk"]
    assert resolved.branch_sha is None
    assert resolved.clone_url == f"{fake.web}/git/acme/app.git"
    assert resolved.url == APP + ".git"

    sha = fake.create_branch("acme/app", BRANCH, {"b.txt": "b\n"})
    assert forge.resolve("acme/app", None, BRANCH).branch_sha == sha
    assert forge.resolve("acme/app", BRANCH, "campaign/other").base_sha == sha
    with pytest.raises(ForgeError, match="base branch 'nope' does not exist"):
        forge.resolve(APP, "nope", BRANCH)


def test_an_api_root_shaped_like_github_com(tmp_path, clock):
    with FakeGitHub(TOKEN, tmp_path, api_prefix="") as fake:
        fake.add_org("acme")
        fake.add_repo("acme/app", FILES)
        fake.create_branch("acme/app", BRANCH, {"b.txt": "b\n"})
        forge = make_forge(fake, clock)
        assert forge.resolve("https://github.com/acme/app", None, BRANCH).base_branch == "main"
        forge.create_pull_request(APP, draft(draft=True))
        assert forge.update_pull_request(APP, 1, draft()).draft is False
        assert fake.calls_to("POST", r"/graphql")


# push --------------------------------------------------------------------------------------------


def test_push_sends_a_campaign_branch_over_http_with_the_token(fake, forge, tmp_path):
    fake.add_repo("acme/app", FILES)
    resolved = forge.resolve(APP, None, BRANCH)
    ws = clone(forge, resolved.clone_url, tmp_path / "ws")
    first = commit(ws, "GREETING = 'NEW'\n")
    forge.push_branch(APP, ws, BRANCH, first, None)
    assert fake.refs("acme/app")[BRANCH] == first
    pushes = [c for c in fake.calls if c.path.endswith("/git-receive-pack")]
    assert pushes and all(c.headers["authorization"] == f"Basic {TOKEN_B64}" for c in pushes)
    assert all(TOKEN not in c.path + json.dumps(c.query) for c in fake.calls)

    second = commit(ws, "GREETING = 'NEWER'\n")
    with pytest.raises(ForgeError, match="push of campaign/rename failed"):
        forge.push_branch(APP, ws, BRANCH, second, None)  # stale lease: the branch exists
    assert fake.refs("acme/app")[BRANCH] == first
    forge.push_branch(APP, ws, BRANCH, second, first)
    assert fake.refs("acme/app")[BRANCH] == second

    for branch in ("main", "feature/x", "campaign"):
        with pytest.raises(ForgeError, match="not a campaign branch"):
            forge.push_branch(APP, ws, branch, second, None)
    assert fake.refs("acme/app")["main"] != second
    for path in (ws / ".git").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and TOKEN_B64.encode() not in data, path


def test_push_refuses_the_default_branch_even_under_campaign(fake, forge, tmp_path):
    fake.add_repo("acme/odd", FILES, branch="campaign/main")
    ws = clone(forge, f"{fake.web}/git/acme/odd.git", tmp_path / "ws")
    sha = commit(ws, "x = 1\n")
    with pytest.raises(ForgeError, match="the default branch"):
        forge.push_branch("acme/odd", ws, "campaign/main", sha, None)


def test_a_push_reads_the_repository_only_when_resolve_did_not(fake, clock, tmp_path):
    fake.add_repo("acme/app", FILES)
    forge = make_forge(fake, clock, repo_info_ttl_s=600)
    ws = clone(forge, f"{fake.web}/git/acme/app.git", tmp_path / "ws")
    run_git(["checkout", "--quiet", "-b", BRANCH], ws)
    forge.push_branch(APP, ws, BRANCH, commit(ws, "x = 1\n"), None)  # nothing known: one GET
    assert len(fake.calls_to("GET", r"/repos/acme/app")) == 1
    resolved = forge.resolve(APP, None, BRANCH)
    forge.push_branch(APP, ws, BRANCH, commit(ws, "x = 2\n"), resolved.branch_sha)
    assert len(fake.calls_to("GET", r"/repos/acme/app")) == 2  # resolve's only
    clock.sleep(601)  # what resolve read is old now: read again
    forge.push_branch(APP, ws, BRANCH, commit(ws, "x = 3\n"), fake.refs("acme/app")[BRANCH])
    assert len(fake.calls_to("GET", r"/repos/acme/app")) == 3
    assert fake.calls_to("GET", r"/repos/acme/app")[-1].status == 304  # unchanged: not counted


def test_git_without_the_token_is_turned_away(fake, forge, tmp_path):
    fake.add_repo("acme/app", FILES)
    with pytest.raises(GitError):
        run_git(["ls-remote", f"{fake.web}/git/acme/app.git"])
    assert "refs/heads/main" in run_git(
        ["ls-remote", f"{fake.web}/git/acme/app.git"], env=forge.git_env()
    )


# pull requests -----------------------------------------------------------------------------------


def test_create_then_create_again_updates_instead_of_duplicating(fake, forge, app):
    first = forge.create_pull_request(
        app, draft(labels=["campaign", "automated"], reviewers=["alice"], team_reviewers=["core"])
    )
    assert (first.number, first.state, first.draft) == (1, "open", False)
    assert first.url == f"{fake.web}/acme/app/pull/1"
    assert first.head_sha == fake.refs("acme/app")[BRANCH]
    assert first.labels == ["campaign", "automated"]
    state = fake.pr("acme/app", 1)
    assert state.labels == ["campaign", "automated"]
    assert (state.reviewers, state.teams) == (["alice"], ["core"])

    again = forge.create_pull_request(
        app, draft(title="Rename OLD to NEW", labels=["campaign", "extra"], reviewers=["alice"])
    )
    assert again.number == 1 and len(fake.repos["acme/app"].pulls) == 1
    assert again.title == "Rename OLD to NEW" and state.title == "Rename OLD to NEW"
    assert again.labels == ["campaign", "automated", "extra"]  # added, never removed
    assert len(fake.calls_to("POST", r"/repos/acme/app/pulls/1/requested_reviewers")) == 1

    before = writes(fake)
    same = forge.update_pull_request(
        app, 1, draft(title="Rename OLD to NEW", labels=["campaign", "extra"], reviewers=["alice"])
    )
    assert writes(fake) == before and same.updated_at == again.updated_at
    found = forge.find_pull_request(app, BRANCH)
    assert found is not None and (found.number, found.state) == (1, "open")
    assert forge.find_pull_request(app, "campaign/other") is None


def test_a_plain_draft_without_reviewers_works_too(fake, forge, app):
    pr = forge.create_pull_request(app, PullRequestDraft(head=BRANCH, base="main", title="t",
                                                         body="", labels=[]))  # fmt: skip
    assert pr.body == "" and pr.labels == []
    assert not fake.calls_to("POST", r".*/requested_reviewers")
    assert not fake.calls_to("POST", r".*/labels")


def test_reviewers_github_refuses_do_not_fail_the_pull_request(fake, forge, app, caplog):
    fake.repos["acme/app"].collaborators = {"alice"}
    pr = forge.create_pull_request(app, draft(reviewers=["mallory"]))
    assert pr.number == 1
    assert "reviewers not requested" in caplog.text and "not a collaborator" in caplog.text


def test_the_draft_flag_flips_through_graphql(fake, forge, app):
    pr = forge.create_pull_request(app, draft(draft=True))
    assert pr.draft and fake.pr("acme/app", 1).draft
    assert forge.pull_request_status(app, 1).state == "draft"
    ready = forge.update_pull_request(app, 1, draft())
    assert ready.draft is False and fake.pr("acme/app", 1).draft is False
    (mutation,) = fake.calls_to("POST", r"/api/graphql")
    assert "markPullRequestReadyForReview" in mutation.json()["query"]
    assert forge.update_pull_request(app, 1, draft(draft=True)).draft is True


def test_without_draft_support_the_flag_is_left_with_a_warning(fake, forge, app, caplog):
    fake.repos["acme/app"].drafts_supported = False
    pr = forge.create_pull_request(app, draft(draft=True))
    assert pr.draft is False and "draft pull requests are not available" in caplog.text
    assert forge.update_pull_request(app, 1, draft(draft=True)).draft is False
    assert "cannot mark the pull request draft" in caplog.text


def test_a_pull_request_closed_or_merged_by_a_human_is_reported_so(fake, forge, app):
    forge.create_pull_request(app, draft())
    fake.close_pr("acme/app", 1)
    closed = forge.find_pull_request(app, BRANCH)
    assert closed is not None and closed.state == "closed"
    assert forge.pull_request_status(app, 1).state == "closed"

    fake.add_repo("acme/lib", FILES)
    fake.create_branch("acme/lib", BRANCH, {"lib.py": "x = 1\n"})
    forge.create_pull_request("acme/lib", draft())
    fake.merge_pr("acme/lib", 1)
    merged = forge.find_pull_request("acme/lib", BRANCH)
    assert merged is not None and merged.state == "merged"


def test_close_comments_first_then_closes_once(fake, forge, app):
    forge.create_pull_request(app, draft())
    closed = forge.close_pull_request(app, 1, "Superseded by a newer campaign.")
    assert closed.state == "closed" and fake.pr("acme/app", 1).state == "closed"
    assert [c["body"] for c in fake.repos["acme/app"].comments[1]] == [
        "Superseded by a newer campaign."
    ]
    order = [
        (c.method, c.path.rsplit("/", 1)[-1]) for c in fake.calls if c.method in ("POST", "PATCH")
    ]
    assert order[-2:] == [("POST", "comments"), ("PATCH", "1")]
    assert fake.calls_to("PATCH", r"/repos/acme/app/pulls/1")[-1].json() == {"state": "closed"}

    before = writes(fake)
    assert forge.close_pull_request(app, 1, "again").state == "closed"
    assert writes(fake) == before


def test_a_comment_retried_after_a_lost_answer_is_posted_once(fake, forge, app):
    forge.create_pull_request(app, draft())
    fake.inject("502_after", methods={"POST"}, path=r"/repos/acme/app/issues/1/comments", times=1)
    url = forge.comment(app, 1, "Rebased on main.")
    assert url.startswith(f"{fake.web}/acme/app/pull/1#issuecomment-")
    assert [c["body"] for c in fake.repos["acme/app"].comments[1]] == ["Rebased on main."]
    assert forge.stats["recovered_writes"] == 1 and forge.stats["retries"] == 0


def test_pull_request_status_follows_checks_reviews_and_merge(fake, forge, app):
    forge.create_pull_request(app, draft(draft=True))
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.review) == ("draft", "none", "none")
    forge.update_pull_request(app, 1, draft())
    sha = fake.refs("acme/app")[BRANCH]

    fake.set_status("acme/app", sha, "ci/build", "pending")
    fake.add_check_run("acme/app", sha, "lint", "in_progress")
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.head_sha) == ("open", "pending", sha)
    assert sorted(status.pending_checks) == ["ci/build", "lint"]

    fake.set_status("acme/app", sha, "ci/build", "success")
    fake.add_check_run("acme/app", sha, "lint", "completed", "success")
    fake.add_check_run("acme/app", sha, "docs", "completed", "skipped")
    status = forge.pull_request_status(app, 1)
    assert (status.checks, status.mergeable, status.mergeable_state) == ("success", True, "clean")

    fake.add_check_run("acme/app", sha, "tests", "completed", "failure")
    status = forge.pull_request_status(app, 1)
    assert (status.checks, status.failing_checks) == ("failure", ["tests"])
    assert status.mergeable_state == "unstable"
    fake.add_check_run("acme/app", sha, "tests", "completed", "success")

    def review() -> tuple[str, dict]:
        status = forge.pull_request_status(app, 1)
        return status.review, status.reviews

    fake.add_review("acme/app", 1, "alice", "COMMENTED")
    assert review() == ("commented", {"alice": "commented"})
    fake.add_review("acme/app", 1, "bob", "APPROVED")
    assert review()[0] == "approved"
    comments = [("app.py", 3, "keep the old name here"), ("README.md", 1, "typo")]
    fake.add_review("acme/app", 1, "alice", "CHANGES_REQUESTED", "not like this", comments)
    assert review()[0] == "changes_requested"
    # what the change request asks for, with its line comments: the steer prompt's text
    assert forge.pull_request_status(app, 1).review_notes == [
        "alice: not like this\n  app.py:3: keep the old name here\n  README.md:1: typo"
    ]
    fake.add_review("acme/app", 1, "alice", "APPROVED")
    fake.add_review("acme/app", 1, "alice", "COMMENTED")  # a later comment keeps the approval
    assert review() == ("approved", {"alice": "approved", "bob": "approved"})

    forge.merge_pull_request(app, 1)
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.review) == ("merged", "success", "approved")


def test_a_404_on_one_reviews_comments_keeps_the_rest_of_the_status(fake, forge, app):
    forge.create_pull_request(app, draft())
    sha = fake.refs("acme/app")[BRANCH]
    fake.set_status("acme/app", sha, "ci/build", "failure")
    fake.add_review("acme/app", 1, "bob", "APPROVED")
    lost = fake.add_review(
        "acme/app", 1, "alice", "CHANGES_REQUESTED", "not like this", [("app.py", 3, "keep it")]
    )
    fake.add_review(
        "acme/app", 1, "carol", "CHANGES_REQUESTED", "tests please", [("app.py", 1, "a test")]
    )
    # GitHub answers 404 for the line comments of alice's review alone (deleted meanwhile)
    fake.inject("404", methods={"GET"}, path=rf"/repos/acme/app/pulls/1/reviews/{lost}/comments")
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.failing_checks) == ("open", "failure", ["ci/build"])
    assert status.review == "changes_requested"
    assert status.reviews == {
        "bob": "approved", "alice": "changes_requested", "carol": "changes_requested"
    }  # fmt: skip
    # what could be read is there; what could not is said, in the text a steer prompt gets
    assert status.review_notes == [
        f"alice: not like this\n  (the line comments of review {lost} could not be read: "
        "GitHub answered 404 Not Found)",
        "carol: tests please\n  app.py:1: a test",
    ]
    assert fake.fault_log == [("404", "GET", f"/repos/acme/app/pulls/1/reviews/{lost}/comments")]


def test_an_owner_name_target_is_the_forges_repository(fake, forge, app, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_FORGE", "github")
    monkeypatch.setenv("ORCHESTRATOR_GITHUB_API_URL", fake.base_url)
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: rename\ntargets: [acme/app]\n"
        "transformation: {kind: deterministic, command: 'sed -i s/OLD/NEW/ app.py'}\n"
    )
    (target,) = load_campaign(path).targets
    assert (target.repo, target.key) == (f"{fake.web}/acme/app", "acme__app")
    resolved = forge.resolve(target.repo, None, BRANCH)
    assert (resolved.base_branch, resolved.base_sha) == ("main", fake.refs("acme/app")["main"])
    assert resolved.branch_sha == fake.refs("acme/app")[BRANCH]


def test_merge_merges_once_even_when_the_answer_is_lost(fake, forge, app):
    forge.create_pull_request(app, draft())
    head = fake.refs("acme/app")[BRANCH]
    fake.inject("502_after", methods={"PUT"}, path=r"/repos/acme/app/pulls/1/merge", times=1)
    merged = forge.merge_pull_request(app, 1)
    assert merged.state == "merged" and fake.pr("acme/app", 1).merged
    main = fake.refs("acme/app")["main"]
    bare = fake.repos["acme/app"].bare
    run_git(["merge-base", "--is-ancestor", head, main], bare)  # raises when not merged
    assert fake.calls_to("PUT", r"/repos/acme/app/pulls/1/merge")[-1].json()["sha"] == head

    puts = len(fake.calls_to("PUT", r".*/merge"))
    assert forge.merge_pull_request(app, 1).state == "merged"
    assert len(fake.calls_to("PUT", r".*/merge")) == puts
    with pytest.raises(ForgeError, match="is merged and cannot be closed"):
        forge.close_pull_request(app, 1)


def test_merge_refusals_are_forge_errors(fake, forge, app):
    forge.create_pull_request(app, draft(draft=True))
    with pytest.raises(ForgeError, match="cannot be merged: Pull Request is still a draft"):
        forge.merge_pull_request(app, 1)
    forge.close_pull_request(app, 1)
    with pytest.raises(ForgeError, match="#1 is closed, not open"):
        forge.merge_pull_request(app, 1)


# rate limits and failures ------------------------------------------------------------------------


def test_a_rate_limit_storm_creates_every_pull_request_exactly_once(fake, clock):
    jobs = []
    for r in range(10):
        fake.add_repo(f"acme/r{r}", FILES)
        for b in range(3):
            fake.create_branch(f"acme/r{r}", f"campaign/c{b}", {f"f{b}.txt": f"{b}\n"})
            jobs.append((f"https://github.com/acme/r{r}", f"campaign/c{b}"))
    fake.write_latency_s = 0.005
    # the first three PR creations land but their answers are lost; then ~40% of writes fail
    fake.inject("502_after", methods={"POST"}, path=r"/repos/[^/]+/[^/]+/pulls", times=3)
    fake.inject("secondary", probability=0.2, per_request=3, retry_after=2)
    fake.inject("502_after", probability=0.25, per_request=3)
    forge = make_forge(fake, clock, write_concurrency=4, max_retries=10)

    def create(job: tuple[str, str]):
        url, head = job
        return forge.create_pull_request(url, draft(head=head, labels=["campaign"]))

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, jobs))
    elapsed = time.monotonic() - started

    for (url, head), pr in zip(jobs, results, strict=True):
        pulls = [p for p in fake.repos[repo_full_name(url)].pulls.values() if p.head == head]
        assert len(pulls) == 1, (url, head)
        assert pulls[0].number == pr.number and pulls[0].labels == ["campaign"]
    kinds = {kind for kind, _, _ in fake.fault_log}
    assert kinds == {"secondary", "502_after"}
    duplicates = [c for c in fake.calls_to("POST", r"/repos/[^/]+/[^/]+/pulls") if c.status == 422]
    assert len(duplicates) >= 3  # retried creates that had landed, adopted instead of duplicated
    stats = forge.stats
    assert stats["retries"] >= len(fake.fault_log) and stats["rate_limited"] > 0
    assert stats["server_errors"] > 0 and stats["rate_limit_wait_s"] >= 2
    assert 2 in clock.sleeps  # Retry-After honoured, on the injected clock
    assert fake.max_writes_in_flight <= 4
    assert elapsed < 20


def test_a_primary_rate_limit_waits_for_the_reset(fake, forge, clock, app):
    fake.inject("primary", methods={"GET"}, path=r"/repos/acme/app", times=1, reset_in=5)
    assert forge.resolve(app, None, BRANCH).base_branch == "main"
    assert forge.stats["rate_limited"] == 1
    assert 4 <= forge.stats["rate_limit_wait_s"] <= 7


def test_a_primary_rate_limit_far_away_fails_fast(fake, forge, clock, app):
    fake.inject("primary", methods={"GET"}, reset_in=3600)
    with pytest.raises(ForgeError, match="rate limit exhausted until"):
        forge.resolve(app, None, BRANCH)
    assert clock.sleeps == []


def test_429_and_server_errors_are_retried_then_given_up(fake, forge, clock, app):
    fake.inject("429", methods={"GET"}, path=r"/repos/acme/app", times=1, retry_after=3)
    fake.inject("502", methods={"GET"}, path=r"/repos/acme/app/branches/.*", times=2)
    assert forge.resolve(app, None, BRANCH).base_sha
    assert forge.stats["retries"] == 3 and 3 in clock.sleeps

    fake.inject("502", methods={"GET"}, path=r"/repos/acme/app/pulls")
    with pytest.raises(ForgeError, match="HTTP 502"):
        forge.find_pull_request(app, BRANCH)
    assert forge.stats["retries"] == 3 + forge.max_retries


def test_404_and_422_are_clear_forge_errors(fake, forge, app):
    with pytest.raises(ForgeError, match=r"^acme/nope: repository not found \(or the token"):
        forge.resolve("https://github.com/acme/nope", None, BRANCH)
    with pytest.raises(ForgeError, match="repository not found"):
        forge.create_pull_request("acme/nope", draft())
    with pytest.raises(ForgeError, match="pull request #7 not found"):
        forge.update_pull_request(app, 7, draft())
    main = fake.refs("acme/app")["main"]
    run_git(["update-ref", "refs/heads/campaign/nothing", main], fake.repos["acme/app"].bare)
    with pytest.raises(ForgeError, match=r"422 Validation Failed.*No commits between main and"):
        forge.create_pull_request(app, draft(head="campaign/nothing"))
    with pytest.raises(ForgeError, match=r"422 Validation Failed.*PullRequest head invalid"):
        forge.create_pull_request(app, draft(head="campaign/missing"))


def test_a_bad_token_is_a_forge_error(fake, clock, app):
    forge = GitHubForge(WRONG, fake.base_url, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(ForgeError, match=r"GitHub rejected the token \(401 Bad credentials\)"):
        forge.resolve(app, None, BRANCH)


# the token ---------------------------------------------------------------------------------------


def test_the_token_never_leaks(fake, forge, clock, app, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("github", "urllib3", "resources"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    fake.inject("secondary", times=1)
    fake.inject("502_after", methods={"POST"}, path=r".*/pulls", times=1)
    ws = tmp_path / "ws"
    messages = every_verb_and_error(
        forge, app, BRANCH, draft, ws, lambda: discover(forge, GitHubSelector(org="acme")),
        GitHubForge(WRONG, fake.base_url),
    )  # fmt: skip

    records = [r.getMessage() + str(r.exc_text or "") for r in caplog.records]
    assert any(r.name.startswith("github") for r in caplog.records)
    assert any(r.name.startswith("urllib3") for r in caplog.records)
    assert any("retry" in m for m in records)
    config = (ws / ".git" / "config").read_text()
    haystacks = {
        "exception messages": "\n".join(messages),
        "log records": "\n".join(records),
        ".git/config": config,
        "stats": json.dumps(forge.stats),
        "repr": repr(forge),
    }
    assert_no_secret_in(
        haystacks, [TOKEN, TOKEN_B64, base64.b64encode(TOKEN.encode()).decode(), WRONG]
    )
    assert forge.redact(f"a {TOKEN} b {TOKEN_B64}") == "a *** b ***"
    assert TOKEN not in json.dumps(forge.git_env())
