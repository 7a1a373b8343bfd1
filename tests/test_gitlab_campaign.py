"""A whole campaign on a named GitLab forge: discovery by group (with subgroups), merge requests
created once and updated in place, a merge request a human closed left alone, a bulk merge, and
the token in no stored byte.

GitLab is tested against its API contract only: tests/fake_gitlab.py answers the REST v4
endpoints the forge uses and serves the projects over git's smart HTTP, requiring the token.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from resources.git import run_git
from tests.conftest import TEST, Platform
from tests.fake_gitlab import FakeGitLab
from tests.forge_helpers import (
    assert_no_secret_stored,
    edit_campaign,
    report,
    review_sensor_tick,
    write_campaign,
)

pytestmark = pytest.mark.usefixtures("bwrap")

TOKEN = "glpat-CANARY" + "5e7a9c1b3d5f7e9a1c3b5d7f9e1a"
SECRETS = [TOKEN, base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()]
ALPHA, BETA = "acme/alpha", "acme/platform/beta"  # beta lives in a subgroup


@pytest.fixture
def gitlab(platform: Platform):
    with FakeGitLab(TOKEN, platform.root / "gitlab") as fake:
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        fake.add_project(ALPHA, files, topics=["python"])
        fake.add_project(BETA, files, topics=["python"])
        fake.add_project("acme/old", files, topics=["python"], archived=True)
        fake.add_project("acme/site", files, topics=["web"])
        fake.add_project("other/gamma", files, topics=["python"])  # another group
        fake.add_user("octocat")
        platform.use_forges(
            {"corp-gitlab": {"kind": "gitlab", "base_url": fake.web, "token_env": "GITLAB_TOKEN"}},
            env={"GITLAB_TOKEN": TOKEN},
        )
        yield fake


def campaign(platform: Platform) -> Path:
    """The campaign, on the named forge corp-gitlab: the group acme's Python projects."""
    return write_campaign(
        platform,
        forge="corp-gitlab",
        discover={"gitlab": {"group": "acme", "topics": ["python"]}},
        pull_request={"labels": ["campaign"], "reviewers": ["octocat"]},
    )


def test_a_campaign_on_gitlab_from_discovery_to_a_bulk_merge(platform: Platform, gitlab):
    fake = gitlab
    path = campaign(platform)
    first = platform.cli("run", "--file", str(path))
    assert "discovered 2 repositories" in first.stdout, first.stdout + first.stderr
    rows = report(platform)
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"pr_open"}
    host = fake.web.removeprefix("http://")
    assert {(r["forge"], r["host"]) for r in rows.values()} == {("corp-gitlab", host)}
    alpha = fake.mr(ALPHA, 1)
    assert (alpha.source_branch, alpha.target_branch, alpha.state) == (
        "campaign/rename",
        "main",
        "opened",
    )
    assert alpha.labels == ["campaign"] and list(alpha.reviewers) == ["octocat"]
    assert "Rename OLD to NEW." in alpha.description
    assert fake.mr(BETA, 1).state == "opened"  # the subgroup's project is a target too
    assert fake.refs(ALPHA)["main"] != fake.refs(ALPHA)["campaign/rename"]

    # Re-running finds the MRs and creates none; a changed description updates them in place.
    edit_campaign(path, description="Rename OLD to NEW, everywhere.")
    platform.cli("run", "--file", str(path))
    assert len(fake.calls_to("POST", r"/projects/[^/]+(/[^/]+)*/merge_requests")) == 2  # ever
    assert len(fake.projects[ALPHA].mrs) == 1
    assert "everywhere" in fake.mr(ALPHA, 1).description

    # A human closes beta's MR: it is not reopened, nor is another opened.
    fake.close_mr(BETA, 1)
    platform.cli("run", "--file", str(path))
    assert fake.mr(BETA, 1).state == "closed" and len(fake.projects[BETA].mrs) == 1

    # Bulk merge: the open one merges, the closed one is left alone.
    merged = platform.cli("prs", "merge", "rename", "--yes")
    assert fake.mr(ALPHA, 1).state == "merged", merged.stdout + merged.stderr
    assert fake.mr(BETA, 1).state == "closed"
    bare = fake.projects[ALPHA].bare
    assert "GREETING = 'NEW'" in run_git(["show", "main:app.py"], bare)

    # The token is in no byte the platform stored.
    assert_no_secret_stored(platform, SECRETS)


def test_gitlab_reviews_of_draft_merge_requests_are_the_review_decisions(
    platform: Platform, gitlab
):
    """A campaign that reviews in draft MRs: an approval on GitLab publishes the MR (its
    `Draft: ` title prefix goes); a reviewer's "requested changes" is recorded as a rejection
    with the reviewer's name, and the MR is closed."""
    fake = gitlab
    path = campaign(platform)
    edit_campaign(path, review={"policy": "required"}, pull_request={"draft": True})
    platform.cli("run", "--file", str(path))
    assert {r["status"] for r in report(platform).values()} == {"awaiting_review"}
    assert fake.mr(ALPHA, 1).title.startswith("Draft: ") and fake.mr(BETA, 1).draft

    fake.approve(ALPHA, 1, "octocat")
    fake.set_reviewer_state(BETA, 1, "hubot", "requested_changes")
    fake.add_discussion(BETA, 1, "hubot", "keep the old name in docs")
    asked, made = review_sensor_tick(platform, path, campaign_forge=True)
    alpha_key = next(k for k in made if k.endswith("alpha"))
    beta_key = next(k for k in made if k.endswith("beta"))
    assert asked == {alpha_key, beta_key}
    assert (made[alpha_key].decision, made[alpha_key].actor) == ("approve", "octocat")
    assert (made[beta_key].decision, made[beta_key].actor) == ("reject", "hubot")

    platform.cli("run", "--file", str(path))
    rows = report(platform)
    assert rows[alpha_key]["status"] == "pr_open" and rows[beta_key]["status"] == "rejected"
    assert not fake.mr(ALPHA, 1).draft and not fake.mr(ALPHA, 1).title.startswith("Draft")
    assert fake.mr(BETA, 1).state == "closed"
