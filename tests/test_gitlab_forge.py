"""The GitLab forge and discovery against a fake GitLab that speaks REST v4 and git HTTP
(tests/fake_gitlab.py: GitLab's documented API contract, not a real GitLab)."""

from __future__ import annotations

import base64
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gitlab.utils
import pytest
from pydantic import ValidationError

from resources.forges.base import ForgeError, PullRequestDraft
from resources.forges.gitlab import GitLabForge, draft_title, split_title
from resources.forges.gitlab_discovery import GitLabSelector
from resources.forges.gitlab_names import project_path
from resources.git import GitError, run_git
from tests.fake_gitlab import FakeGitLab
from tests.forge_helpers import (
    FakeClock,
    assert_no_secret_in,
    clone,
    commit,
    every_verb_and_error,
    forge_fixtures,
)

TOKEN = "glpat-CANARY7d1e9a5b3c2f4e6a8c0b"
TOKEN_B64 = base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()
WRONG = "glpat-CANARYwrong9c2d7e1a4f6b8"
BRANCH = "campaign/rename"
PATH = "acme/web/app"  # a project in a subgroup
FILES = {"app.py": "GREETING = 'OLD'\n"}


@pytest.fixture(autouse=True)
def python_gitlab_never_sleeps(monkeypatch):
    """python-gitlab's own retry (time.sleep in gitlab.utils) must never run: waits are ours."""

    def refuse(seconds: float) -> None:
        raise AssertionError(f"python-gitlab slept {seconds} s on its own")

    monkeypatch.setattr(gitlab.utils, "time", SimpleNamespace(sleep=refuse, time=time.time))


@pytest.fixture
def fake(tmp_path: Path):
    """A running fake GitLab with the user octocat."""
    with FakeGitLab(TOKEN, tmp_path / "gitlab") as server:
        server.add_user("octocat")
        server.add_user("hubot")
        yield server


def make_forge(fake: FakeGitLab, clock: FakeClock, **kw) -> GitLabForge:
    """A forge on the fake that waits on the fake clock."""
    kw.setdefault("backoff_s", 0.5)
    return GitLabForge(TOKEN, fake.web, sleep=clock.sleep, clock=clock.clock, **kw)


clock, forge = forge_fixtures(make_forge)


@pytest.fixture
def app(fake: FakeGitLab) -> str:
    """acme/web/app with a campaign branch one commit ahead of main; its web URL."""
    fake.add_project(PATH, FILES)
    fake.commit(PATH, BRANCH, {"app.py": "GREETING = 'NEW'\n"})
    return f"{fake.web}/{PATH}"


def draft(**kw) -> PullRequestDraft:
    """A merge request draft for the campaign branch."""
    fields = {"head": BRANCH, "base": "main", "title": "Rename OLD", "body": "Renames.", **kw}
    return PullRequestDraft(**fields)


def writes(fake: FakeGitLab) -> int:
    """How many API writes the fake has seen."""
    return sum(1 for c in fake.calls if c.method in ("POST", "PUT") and "/api/v4/" in c.path)


# addressing --------------------------------------------------------------------------------------

ROOT = "https://gitlab.example.com"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://gitlab.example.com/acme/app", "acme/app"),
        ("https://gitlab.example.com/acme/web/deep/app.git", "acme/web/deep/app"),
        ("https://gitlab.example.com/acme/app/-/merge_requests/7", "acme/app"),
        ("https://oauth2:x@gitlab.example.com/acme/app.git", "acme/app"),
        ("git@gitlab.example.com:acme/web/app.git", "acme/web/app"),
        ("acme/web/app", "acme/web/app"),
        ("/acme/app/", "acme/app"),
    ],
)
def test_project_urls_map_to_their_path(url, path):
    assert project_path(url, ROOT) == path


def test_a_relative_root_is_part_of_the_web_root():
    root = "https://example.com/gitlab"
    assert project_path("https://example.com/gitlab/acme/app", root) == "acme/app"
    with pytest.raises(ForgeError, match="not under this GitLab's web root"):
        project_path("https://example.com/acme/app", root)


@pytest.mark.parametrize(
    "url",
    ["https://gitlab.com/acme/app", "app", "https://gitlab.example.com/acme", "acme/-bad/app"],
)
def test_other_addresses_are_refused(url):
    with pytest.raises(ForgeError, match=r"not on this GitLab|not a GitLab project"):
        project_path(url, ROOT)


def test_gitlab_com_and_self_managed_base_urls():
    assert GitLabForge(TOKEN).api_url == "https://gitlab.com/api/v4"
    managed = GitLabForge(TOKEN, "https://gitlab.example.com/api/v4/")  # an API root: its web root
    assert (managed.web_url, managed.api_url) == (
        "https://gitlab.example.com",
        "https://gitlab.example.com/api/v4",
    )
    relative = GitLabForge(TOKEN, "https://example.com/gitlab")
    assert relative.git_env()["GIT_CONFIG_KEY_0"] == "http.https://example.com/gitlab/.extraHeader"
    with pytest.raises(ForgeError, match="expected https://HOST"):
        GitLabForge(TOKEN, "gitlab.example.com")
    with pytest.raises(ForgeError, match="no token given"):
        GitLabForge("", "https://gitlab.example.com")


def test_draft_titles():
    assert draft_title("Rename", True) == "Draft: Rename"
    assert draft_title("Draft: Rename", False) == "Rename"
    assert split_title("[Draft] Rename") == ("Rename", True)
    assert split_title("Drafting rules") == ("Drafting rules", False)


# discovery ---------------------------------------------------------------------------------------


def fleet(fake: FakeGitLab) -> None:
    """24 projects: 12 in acme, 12 in acme/web/deep; even ones have topics python+campaign;
    svc-04 is archived, svc-06 a fork; and one project of another group."""
    for i in range(24):
        group = "acme" if i < 12 else "acme/web/deep"
        fake.add_project(
            f"{group}/svc-{i:02d}",
            topics=["python", "campaign"] if i % 2 == 0 else ["go"],
            archived=i == 4,
            forked_from="upstream/svc" if i == 6 else None,
        )
    fake.add_project("other/svc-99", topics=["python", "campaign"])


def test_discover_a_group_with_subgroups_follows_pagination_and_filters(fake, clock):
    fleet(fake)
    forge = make_forge(fake, clock, per_page=5)
    found = forge.discover(GitLabSelector(group="acme", topics=["python"]))
    names = [r.full_name for r in found]
    # even numbers, minus the archived 04 and the fork 06, from the group and its subgroups
    assert names == [f"acme/svc-{i:02d}" for i in (0, 2, 8, 10)] + [
        f"acme/web/deep/svc-{i:02d}" for i in (12, 14, 16, 18, 20, 22)
    ]
    first = found[0]
    assert first.url == f"{fake.web}/acme/svc-00"
    assert first.clone_url == f"{fake.web}/acme/svc-00.git"
    assert first.topics == ["python", "campaign"] and not first.archived and not first.fork
    listings = fake.calls_to("GET", r"/groups/acme/projects")
    assert len(listings) == 3  # 11 python projects (one archived) in pages of 5
    assert listings[0].query["include_subgroups"] == ["true"]
    assert listings[0].query["archived"] == ["false"]

    every = forge.discover({"group": "acme", "include_archived": True, "include_forks": True})
    assert len(every) == 24
    top = forge.discover(GitLabSelector(group="acme", include_subgroups=False))
    assert len(top) == 10 and all(r.full_name.count("/") == 1 for r in top)
    named = forge.discover(GitLabSelector(group="acme", name_pattern="acme/web/*/SVC-1?"))
    assert [r.full_name for r in named] == [f"acme/web/deep/svc-{i}" for i in range(12, 20)]
    subgroup = forge.discover({"group": "acme/web"})
    assert subgroup[0].full_name == "acme/web/deep/svc-12"


def test_discover_by_user_and_by_search(fake, forge):
    fleet(fake)
    fake.add_project("octocat/tool", topics=["python"])
    assert [r.full_name for r in forge.discover({"user": "octocat"})] == ["octocat/tool"]
    found = forge.discover({"search": "svc-9"})
    assert [r.full_name for r in found] == ["other/svc-99"]


def test_discover_an_unknown_group_is_a_forge_error(fake, forge):
    with pytest.raises(ForgeError, match=r"^group nope: not found on http://127"):
        forge.discover({"group": "nope"})


@pytest.mark.parametrize("fields", [{}, {"group": "a", "user": "b"}, {"topics": ["x"]}])
def test_a_selector_needs_exactly_one_source(fields):
    with pytest.raises(ValidationError, match="exactly one of group, user or search"):
        GitLabSelector(**fields)


def test_a_selector_refuses_unknown_fields():
    with pytest.raises(ValidationError, match="org"):
        GitLabSelector(group="acme", org="acme")


# repositories and pushes -------------------------------------------------------------------------


def test_resolve_reads_the_default_branch_and_shas(fake, forge, app):
    resolved = forge.resolve(app, None, BRANCH)
    refs = fake.refs(PATH)
    assert resolved.base_branch == "main" and resolved.base_sha == refs["main"]
    assert resolved.branch_sha == refs[BRANCH]
    assert resolved.clone_url == f"{fake.web}/{PATH}.git"
    assert forge.resolve(PATH, "main", "campaign/none").branch_sha is None  # path form
    with pytest.raises(ForgeError, match="base branch 'dev' does not exist"):
        forge.resolve(app, "dev", BRANCH)


def test_push_sends_a_campaign_branch_over_http_with_the_token(fake, forge, tmp_path, app):
    resolved = forge.resolve(app, None, BRANCH)
    ws = clone(forge, resolved.clone_url, tmp_path / "ws")
    run_git(["checkout", "--quiet", "-b", "campaign/two"], ws)
    first = commit(ws, "GREETING = 'TWO'\n")
    forge.push_branch(app, ws, "campaign/two", first, None)
    assert fake.refs(PATH)["campaign/two"] == first
    pushes = [c for c in fake.calls if c.path.endswith("/git-receive-pack")]
    assert pushes and all(c.headers["authorization"] == f"Basic {TOKEN_B64}" for c in pushes)

    second = commit(ws, "GREETING = 'THREE'\n")
    with pytest.raises(ForgeError, match="push of campaign/two failed"):
        forge.push_branch(app, ws, "campaign/two", second, None)  # stale lease: it exists
    forge.push_branch(app, ws, "campaign/two", second, first)
    assert fake.refs(PATH)["campaign/two"] == second
    for branch in ("main", "feature/x"):
        with pytest.raises(ForgeError, match="not a campaign branch"):
            forge.push_branch(app, ws, branch, second, None)
    assert fake.refs(PATH)["main"] != second
    config = (ws / ".git" / "config").read_text()
    assert TOKEN not in config and TOKEN_B64 not in config


def test_push_refuses_the_default_branch_even_under_campaign(fake, forge, tmp_path):
    fake.add_project("acme/odd", FILES, branch="campaign/main")
    ws = clone(forge, f"{fake.web}/acme/odd.git", tmp_path / "ws")
    with pytest.raises(ForgeError, match="the default branch"):
        forge.push_branch("acme/odd", ws, "campaign/main", commit(ws, "x = 1\n"), None)


def test_a_push_reads_the_project_only_when_resolve_did_not(fake, clock, tmp_path, app):
    forge = make_forge(fake, clock, default_branch_ttl_s=600)
    ws = clone(forge, f"{fake.web}/{PATH}.git", tmp_path / "ws")
    run_git(["checkout", "--quiet", "-b", "campaign/two"], ws)
    forge.push_branch(app, ws, "campaign/two", commit(ws, "x = 1\n"), None)
    assert len(fake.calls_to("GET", rf"/projects/{PATH}")) == 1  # nothing known: one GET
    resolved = forge.resolve(app, None, "campaign/two")
    forge.push_branch(app, ws, "campaign/two", commit(ws, "x = 2\n"), resolved.branch_sha)
    assert len(fake.calls_to("GET", rf"/projects/{PATH}")) == 2  # resolve's only
    clock.sleep(601)  # what resolve read is old now: read again
    forge.push_branch(
        app, ws, "campaign/two", commit(ws, "x = 3\n"), fake.refs(PATH)["campaign/two"]
    )
    assert len(fake.calls_to("GET", rf"/projects/{PATH}")) == 3


def test_git_credentials_are_scoped_to_the_web_root(fake, forge, app):
    with pytest.raises(GitError):
        run_git(["ls-remote", f"{fake.web}/{PATH}.git"])
    env = forge.git_env()
    assert env["GIT_CONFIG_KEY_0"] == f"http.{fake.web}/.extraHeader"
    assert env["GIT_CONFIG_KEY_1"] == "http.followRedirects"
    assert "refs/heads/main" in run_git(["ls-remote", f"{fake.web}/{PATH}.git"], env=env)


# merge requests ----------------------------------------------------------------------------------


def test_create_with_labels_reviewers_and_draft_then_again_adopts_it(fake, forge, app):
    first = forge.create_pull_request(
        app, draft(labels=["campaign", "automated"], reviewers=["octocat", "nobody"], draft=True)
    )
    assert (first.number, first.state, first.draft, first.title) == (1, "open", True, "Rename OLD")
    assert first.url == f"{fake.web}/{PATH}/-/merge_requests/1"
    assert first.head_sha == fake.refs(PATH)[BRANCH]
    mr = fake.mr(PATH, 1)
    assert mr.title == "Draft: Rename OLD" and mr.labels == ["campaign", "automated"]
    assert list(mr.reviewers) == ["octocat"]  # an unknown user is left out, not an error

    # a second create (a retry, another worker) meets GitLab's 409 and updates the open MR
    again = forge.create_pull_request(
        app, draft(title="Rename OLD to NEW", labels=["extra"], reviewers=["hubot"])
    )
    assert again.number == 1 and len(fake.projects[PATH].mrs) == 1
    assert [c.status for c in fake.calls_to("POST", rf"/projects/{PATH}/merge_requests")] == [
        201,
        409,
    ]
    assert mr.title == "Rename OLD to NEW" and not again.draft  # ready now
    assert mr.labels == ["campaign", "automated", "extra"]  # added, never removed
    assert list(mr.reviewers) == ["octocat", "hubot"]  # added to those asked before


def test_team_reviewers_are_ignored_with_a_warning(fake, forge, app, caplog):
    forge.create_pull_request(app, draft(team_reviewers=["core"]))
    assert "GitLab has no team reviewers; core not asked" in caplog.text
    assert fake.mr(PATH, 1).reviewers == {}


def test_update_rewrites_in_place_and_writes_nothing_when_equal(fake, forge, app):
    forge.create_pull_request(app, draft(labels=["campaign"], reviewers=["octocat"]))
    fake.mr(PATH, 1).labels.append("human-label")
    before = writes(fake)
    same = forge.update_pull_request(app, 1, draft(labels=["campaign"], reviewers=["octocat"]))
    assert writes(fake) == before and same.labels == ["campaign", "human-label"]
    updated = forge.update_pull_request(
        app, 1, draft(body="New body.", draft=True, assignees=["hubot"])
    )
    assert updated.body == "New body." and updated.draft
    mr = fake.mr(PATH, 1)
    assert mr.title == "Draft: Rename OLD" and mr.assignees == ["hubot"]
    assert mr.labels == ["campaign", "human-label"] and list(mr.reviewers) == ["octocat"]
    assert writes(fake) == before + 1  # one PUT carries every change
    found = forge.find_pull_request(app, BRANCH)
    assert found is not None and found.number == 1 and found.draft
    assert forge.find_pull_request(app, "campaign/other") is None


def test_a_lost_answer_to_a_create_does_not_make_a_second_merge_request(fake, forge, app):
    fake.inject("502_after", methods={"POST"}, path=rf"/projects/{PATH}/merge_requests", times=1)
    pr = forge.create_pull_request(app, draft(labels=["campaign"]))
    assert pr.number == 1 and len(fake.projects[PATH].mrs) == 1
    statuses = [c.status for c in fake.calls_to("POST", rf"/projects/{PATH}/merge_requests")]
    assert statuses == [502, 409]  # the retry met the MR the lost answer had made
    assert forge.stats["server_errors"] >= 1


def test_a_comment_retried_after_a_lost_answer_is_posted_once(fake, forge, app):
    forge.create_pull_request(app, draft())
    fake.inject("502_after", methods={"POST"}, path=r".*/notes", times=1)
    url = forge.comment(app, 1, "Looks good.")
    (note,) = fake.mr(PATH, 1).notes
    assert url == f"{fake.web}/{PATH}/-/merge_requests/1#note_{note['id']}"
    assert forge.stats["recovered_writes"] == 1


def test_close_comments_first_then_closes_once_and_reopen(fake, forge, app):
    forge.create_pull_request(app, draft())
    closed = forge.close_pull_request(app, 1, "No longer needed.")
    assert closed.state == "closed" and fake.mr(PATH, 1).state == "closed"
    assert [n["body"] for n in fake.mr(PATH, 1).notes] == ["No longer needed."]
    before = writes(fake)
    assert forge.close_pull_request(app, 1, "again").state == "closed"  # a no-op
    assert writes(fake) == before and len(fake.mr(PATH, 1).notes) == 1
    with pytest.raises(ForgeError, match="!1 is closed, not open"):
        forge.merge_pull_request(app, 1)
    assert forge.reopen_pull_request(app, 1).state == "open"
    assert forge.reopen_pull_request(app, 1).state == "open"  # a no-op
    fake.merge_mr(PATH, 1)
    with pytest.raises(ForgeError, match="is merged and cannot be closed"):
        forge.close_pull_request(app, 1)
    with pytest.raises(ForgeError, match="is merged and cannot be reopened"):
        forge.reopen_pull_request(app, 1)
    assert forge.merge_pull_request(app, 1).state == "merged"  # merged stays merged


def test_a_merge_request_a_human_closed_is_reported_closed(fake, forge, app):
    forge.create_pull_request(app, draft())
    fake.close_mr(PATH, 1)
    found = forge.find_pull_request(app, BRANCH)
    assert found is not None and found.state == "closed"


# merging -----------------------------------------------------------------------------------------


def parents(fake: FakeGitLab, ref: str) -> list[str]:
    """The parents of the commit at `ref` of the project."""
    out = run_git(["rev-list", "--parents", "-n", "1", ref], fake.projects[PATH].bare)
    return out.split()[1:]


def test_merge_squash_and_rebase_methods(fake, forge, app):
    forge.create_pull_request(app, draft())
    merged = forge.merge_pull_request(app, 1, "merge")
    assert merged.state == "merged" and len(parents(fake, "main")) == 2

    fake.commit(PATH, "campaign/b", {"b.txt": "b\n"})
    forge.create_pull_request(app, draft(head="campaign/b"))
    assert forge.merge_pull_request(app, 2, method="squash").state == "merged"
    assert len(parents(fake, "main")) == 1 and fake.mr(PATH, 2).squash

    fake.commit(PATH, "campaign/c", {"c.txt": "c\n"}, parent=fake.refs(PATH)["main"])
    fake.commit(PATH, "main", {"other.txt": "moved on\n"})  # the MR is behind its target
    forge.create_pull_request(app, draft(head="campaign/c"))
    rebased = forge.merge_pull_request(app, 3, method="rebase")
    assert rebased.state == "merged"
    assert fake.calls_to("PUT", rf"/projects/{PATH}/merge_requests/3/rebase")
    assert forge._clock() > 1000.0  # the rebase was polled for, on the injected clock

    with pytest.raises(ForgeError, match="unknown merge method 'fast-forward'"):
        forge.merge_pull_request(app, 3, method="fast-forward")


def test_a_rebase_that_does_not_finish_merges_nothing(fake, clock, app):
    forge = make_forge(fake, clock, rebase_wait_s=10, rebase_poll_s=2)
    forge.create_pull_request(app, draft())
    fake.rebase_polls = 100  # GitLab keeps saying the rebase is in progress
    with pytest.raises(ForgeError, match="rebase did not finish in 10 s; not merged"):
        forge.merge_pull_request(app, 1, method="rebase")
    assert fake.mr(PATH, 1).state == "opened" and clock.sleeps == [2, 2, 2, 2, 2]


def test_merge_when_the_pipeline_succeeds(fake, forge, app):
    forge.create_pull_request(app, draft())
    head = fake.refs(PATH)[BRANCH]
    fake.add_pipeline(PATH, head, "running", [{"name": "test", "status": "running"}])
    waiting = forge.merge_pull_request(app, 1, when_checks_pass=True)
    assert waiting.state == "open" and fake.mr(PATH, 1).merge_when_pipeline_succeeds
    fake.add_pipeline(PATH, head, "success", [{"name": "test", "status": "success"}])
    assert fake.mr(PATH, 1).state == "merged"  # GitLab merged it once the pipeline passed


def test_auto_merge_and_the_checks_of_a_branch(fake, forge, app):
    forge.create_pull_request(app, draft())
    head = fake.refs(PATH)[BRANCH]
    assert forge.branch_checks(app, BRANCH).state == "none"
    fake.add_pipeline(PATH, head, "pending", [{"name": "test", "status": "pending"}])
    assert forge.enable_auto_merge(app, 1, "squash").state == "open"
    fake.add_pipeline(PATH, head, "failed", [{"name": "test", "status": "failed"}])
    checks = forge.branch_checks(app, BRANCH)
    assert (checks.sha, checks.state, checks.failing) == (head, "failure", ["test"])
    assert fake.mr(PATH, 1).state == "opened"  # a failed pipeline merges nothing
    fake.add_pipeline(PATH, head, "success", [{"name": "test", "status": "success"}])
    assert fake.mr(PATH, 1).state == "merged" and fake.mr(PATH, 1).squash
    assert forge.branch_checks(app, "main").state == "none"
    with pytest.raises(ForgeError, match="branch 'nope' does not exist"):
        forge.branch_checks(app, "nope")


def test_merge_once_even_when_the_answer_is_lost(fake, forge, app):
    forge.create_pull_request(app, draft())
    before = fake.refs(PATH)["main"]
    fake.inject("502_after", methods={"PUT"}, path=r".*/merge", times=1)
    assert forge.merge_pull_request(app, 1).state == "merged"
    assert parents(fake, "main")[0] == before  # one merge commit on top, not two


def test_merge_refusals_are_forge_errors(fake, forge, app):
    forge.create_pull_request(app, draft(draft=True))
    with pytest.raises(ForgeError, match=r"!1 cannot be merged now .*draft_status"):
        forge.merge_pull_request(app, 1)
    forge.update_pull_request(app, 1, draft())
    fake.commit(PATH, "main", {"app.py": "GREETING = 'CONFLICT'\n"})
    with pytest.raises(ForgeError, match=r"!1 cannot be merged now \(conflict\)"):
        forge.merge_pull_request(app, 1)
    assert fake.mr(PATH, 1).state == "opened"


# status ------------------------------------------------------------------------------------------


def test_status_follows_the_pipeline_approvals_and_reviews(fake, forge, app):
    forge.create_pull_request(app, draft(reviewers=["octocat", "hubot"], draft=True))
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.review) == ("draft", "none", "none")
    assert status.mergeable is True and status.mergeable_state == "draft_status"
    forge.update_pull_request(app, 1, draft())

    head = fake.refs(PATH)[BRANCH]
    jobs = [
        {"name": "lint", "status": "success"},
        {"name": "test", "status": "running"},
        {"name": "deploy", "status": "created"},
    ]
    fake.add_pipeline(PATH, head, "running", jobs)
    status = forge.pull_request_status(app, 1)
    assert (status.state, status.checks, status.pending_checks) == (
        "open",
        "pending",
        ["test", "deploy"],
    )
    assert status.head_sha == head
    jobs = [
        {"name": "lint", "status": "failed", "allow_failure": True},
        {"name": "test", "status": "failed", "trace": "collected 3\n" + "x" * 5000 + "\nFAILED"},
        {"name": "docs", "status": "success"},
    ]
    fake.add_pipeline(PATH, head, "failed", jobs)
    status = forge.pull_request_status(app, 1)
    assert (status.checks, status.failing_checks) == ("failure", ["test"])
    logs = forge.failed_check_logs(app, 1)
    assert list(logs) == ["test"] and logs["test"].endswith("FAILED")
    assert len(logs["test"]) == 4000
    fake.add_pipeline(PATH, head, "success", [{"name": "test", "status": "success"}])
    assert forge.pull_request_status(app, 1).checks == "success"
    assert forge.failed_check_logs(app, 1) == {}

    fake.set_reviewer_state(PATH, 1, "hubot", "reviewed")
    status = forge.pull_request_status(app, 1)
    assert (status.review, status.reviews) == ("commented", {"hubot": "commented"})
    fake.approve(PATH, 1, "octocat")
    status = forge.pull_request_status(app, 1)
    assert status.review == "approved" and status.reviews["octocat"] == "approved"

    fake.set_reviewer_state(PATH, 1, "hubot", "requested_changes")
    fake.add_discussion(PATH, 1, "hubot", "keep the old name in docs")
    fake.add_discussion(PATH, 1, "hubot", "use NEW here", position=("app.py", 1))
    fake.add_discussion(PATH, 1, "hubot", "done already", resolved=True)
    fake.add_discussion(PATH, 1, "octocat", "a question")
    status = forge.pull_request_status(app, 1)
    assert status.review == "changes_requested" and status.reviews["hubot"] == "changes_requested"
    assert status.review_notes == [
        "hubot: keep the old name in docs",
        "hubot:\n  app.py:1: use NEW here",
    ]
    assert status.mergeable_state == "requested_changes" and status.mergeable is True

    fake.commit(PATH, "main", {"app.py": "GREETING = 'CONFLICT'\n"})
    status = forge.pull_request_status(app, 1)
    assert status.mergeable is False and status.mergeable_state == "conflict"
    fake.close_mr(PATH, 1)
    assert forge.pull_request_status(app, 1).state == "closed"


# failures ----------------------------------------------------------------------------------------


def test_429_honours_retry_after_and_ratelimit_reset(fake, forge, clock, app):
    fake.inject("429", methods={"GET"}, path=rf"/projects/{PATH}", times=1, retry_after=3)
    fake.inject("429_reset", methods={"GET"}, path=r".*/branches/.*", times=1, reset_in=5)
    assert forge.resolve(app, None, BRANCH).base_sha
    assert forge.stats["rate_limited"] == 2
    assert 3 in clock.sleeps  # Retry-After, on the injected clock
    # then the reset, 5 s away in whole seconds, plus a second
    assert 3 + 4 <= forge.stats["rate_limit_wait_s"] <= 3 + 6.5


def test_concurrent_creates_under_faults_make_each_merge_request_once(fake, clock):
    jobs = []
    for r in range(4):
        fake.add_project(f"acme/r{r}", FILES)
        for b in range(3):
            fake.commit(f"acme/r{r}", f"campaign/c{b}", {f"f{b}.txt": f"{b}\n"})
            jobs.append((f"acme/r{r}", f"campaign/c{b}"))
    # the first three creations land but their answers are lost; rate limits and 500s meanwhile
    fake.inject("502_after", methods={"POST"}, path=r".*/merge_requests", times=3)
    fake.inject("429", methods={"GET", "POST", "PUT"}, path=r".*/merge_requests", times=4)
    fake.inject("500", methods={"GET"}, path=r"/users", times=2)
    forge = make_forge(fake, clock, write_concurrency=3)

    def create(job: tuple[str, str]):
        path, head = job
        return forge.create_pull_request(
            f"{fake.web}/{path}", draft(head=head, labels=["campaign"], reviewers=["octocat"])
        )

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, jobs))
    for (path, head), pr in zip(jobs, results, strict=True):
        mrs = [m for m in fake.projects[path].mrs.values() if m.source_branch == head]
        assert len(mrs) == 1, (path, head)
        assert mrs[0].iid == pr.number and mrs[0].labels == ["campaign"]
        assert list(mrs[0].reviewers) == ["octocat"]
    assert {kind for kind, _, _ in fake.fault_log} == {"502_after", "429", "500"}
    conflicts = [c for c in fake.calls_to("POST", r".*/merge_requests") if c.status == 409]
    assert conflicts  # retried creates that had landed: adopted (a retry may be lost too)
    assert forge.stats["rate_limited"] == 4 and forge.stats["server_errors"] >= 5
    assert len(fake.calls_to("GET", r"/users")) == 3  # octocat's id looked up once (+2 retries)


def test_a_workers_requests_are_counted(fake, forge, app):
    from resources.forges.base import counting_requests

    with counting_requests(forge) as tally:
        forge.resolve(app, None, BRANCH)
        forge.create_pull_request(app, draft())
    assert (tally.requests, tally.writes) == (4, 1)  # project, 2 branches, the create
    assert forge.stats["api_calls"] == 4


def test_a_rate_limit_far_away_fails_fast(fake, forge, clock, app):
    fake.inject("429_reset", methods={"GET"}, reset_in=3600)
    with pytest.raises(ForgeError, match=r"rate limit exhausted until .* not waiting"):
        forge.resolve(app, None, BRANCH)
    assert clock.sleeps == []


def test_a_rate_limit_wait_ends_when_the_worker_is_cancelled(fake, app):
    from resources import cancel

    fake.inject("429", methods={"GET"}, retry_after=50)  # within max_wait_s: it would wait
    forge = GitLabForge(TOKEN, fake.web)  # the real, cancellable sleep
    scope = cancel.CancelScope()
    scope.cancel()
    with cancel.scope(scope), pytest.raises(ForgeError, match="GitLab: cancelled"):
        forge.resolve(app, None, BRANCH)
    assert forge.stats["rate_limited"] == 1
    forge.budget.pause_until = 0.0  # the pause is the process's for this host and token


def test_server_errors_are_retried_then_given_up(fake, forge, clock, app):
    fake.inject("500", methods={"GET"}, path=rf"/projects/{PATH}", times=2)
    assert forge.resolve(app, None, BRANCH).base_sha
    assert forge.stats["retries"] == 2 and len(clock.sleeps) == 2
    fake.inject("502", methods={"GET"}, path=r".*/merge_requests")
    with pytest.raises(ForgeError, match=r"looking up the merge request .* failed: HTTP 502$"):
        forge.find_pull_request(app, BRANCH)  # not the proxy's HTML page
    assert forge.stats["retries"] == 2 + forge.max_retries


def test_404_409_and_422_are_clear_forge_errors(fake, forge, app):
    with pytest.raises(ForgeError, match=r"^acme/nope: project not found on http://127.*token"):
        forge.resolve(f"{fake.web}/acme/nope", None, BRANCH)
    with pytest.raises(ForgeError, match="acme/nope: project not found"):
        forge.create_pull_request("acme/nope", draft())
    with pytest.raises(ForgeError, match=r"acme/web/app: merge request !7 not found"):
        forge.update_pull_request(app, 7, draft())
    with pytest.raises(ForgeError, match=r"rejected by GitLab \(422 You can't use same project"):
        forge.create_pull_request(app, draft(head="main"))
    with pytest.raises(ForgeError, match=r"422 base: Branch \"campaign/missing\" does not exist"):
        forge.create_pull_request(app, draft(head="campaign/missing"))
    # a 409 that is not "an MR exists" (here: reopening beside a newer open MR) is reported
    forge.create_pull_request(app, draft())
    forge.close_pull_request(app, 1)
    forge.create_pull_request(app, draft())
    with pytest.raises(ForgeError, match=r"reopen of merge request !1 rejected by GitLab \(409"):
        forge.reopen_pull_request(app, 1)


def test_a_bad_token_is_a_forge_error(fake, clock, app):
    forge = GitLabForge(WRONG, fake.web, sleep=clock.sleep, clock=clock.clock)
    with pytest.raises(ForgeError, match=r"GitLab rejected the token \(401 Unauthorized\)"):
        forge.resolve(app, None, BRANCH)


def test_the_token_never_leaks(fake, forge, clock, app, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("gitlab", "urllib3", "resources"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    fake.inject("429", times=1)
    fake.inject("502_after", methods={"POST"}, path=r".*/merge_requests", times=1)
    ws = tmp_path / "ws"
    messages = every_verb_and_error(
        forge, app, BRANCH, draft, ws, lambda: forge.discover({"group": "acme"}),
        GitLabForge(WRONG, fake.web),
    )  # fmt: skip

    records = [r.getMessage() + str(r.exc_text or "") for r in caplog.records]
    assert any(r.name.startswith("urllib3") for r in caplog.records)
    assert any("retry" in m for m in records)
    haystacks = {
        "exception messages": "\n".join(messages),
        "log records": "\n".join(records),
        ".git/config": (ws / ".git" / "config").read_text(),
        "stats": json.dumps(forge.stats),
        "repr": repr(forge),
    }
    assert_no_secret_in(
        haystacks, [TOKEN, TOKEN_B64, base64.b64encode(TOKEN.encode()).decode(), WRONG]
    )
    assert forge.redact(f"a {TOKEN} b {TOKEN_B64}") == "a *** b ***"
    assert all(c.headers.get("authorization") == f"Bearer {TOKEN}" for c in fake.calls
               if c.path.startswith("/api/v4/") and c.status != 401)  # fmt: skip
    assert all(TOKEN not in c.path + json.dumps(c.query) for c in fake.calls)
