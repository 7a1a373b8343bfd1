"""A whole campaign on the GitHub forge: discovery, PRs created once and updated, a human closing
one, a change that goes away, and the token in no stored byte.

GitHub is tested against its API contract: tests/fake_github.py answers the REST endpoints the
forge uses and serves the repositories over git's smart HTTP, requiring the token.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from orchestrator_assets.reports.metrics import EventLogCollector
from tests.conftest import TEST, Platform
from tests.fake_github import FakeGitHub
from tests.forge_helpers import (
    assert_no_secret_stored,
    edit_campaign,
    report,
    review_sensor_tick,
    write_campaign,
)

pytestmark = pytest.mark.usefixtures("bwrap")

TOKEN = "ghp_CANARY" + "7c1e9a5b3d2f4e6a8c0b1d3f5a7c9e2b4d6f"
SECRETS = [TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()]


@pytest.fixture
def github(platform: Platform):
    with FakeGitHub(TOKEN, platform.root / "github") as fake:
        fake.add_org("acme")
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        fake.add_repo("acme/alpha", files, topics=["python"], language="Python")
        fake.add_repo("acme/beta", files, topics=["python"], language="Python")
        fake.add_repo("acme/old", files, topics=["python"], language="Python", archived=True)
        fake.add_repo("acme/site", files, topics=["web"], language="JavaScript")
        platform.use_github(fake.base_url, TOKEN)
        yield fake


def campaign(platform: Platform) -> Path:
    """The campaign, on the platform's GitHub forge: acme's Python repositories."""
    return write_campaign(
        platform,
        discover={"github": {"org": "acme", "topics": ["python"]}},
        pull_request={"labels": ["campaign"], "reviewers": ["octocat"]},
    )


def test_a_campaign_on_github_from_discovery_to_pull_requests(platform: Platform, github):
    path = campaign(platform)
    first = platform.cli("run", "--file", str(path))
    assert "discovered 2 repositories" in first.stdout
    rows = report(platform)
    assert set(rows) == {"acme__alpha", "acme__beta"}  # archived and off-topic ones left out
    assert {r["status"] for r in rows.values()} == {"pr_open"}
    alpha = github.pr("acme/alpha", 1)
    assert alpha.head == "campaign/rename" and alpha.base == "main" and alpha.state == "open"
    assert alpha.labels == ["campaign"] and alpha.reviewers == ["octocat"]
    assert "Rename OLD to NEW." in (alpha.body or "")
    assert github.refs("acme/alpha")["main"] != github.refs("acme/alpha")["campaign/rename"]
    # The run counted its own code-host API calls for the metrics (discovery's are the CLI's).
    with platform.instance() as instance:
        collector = EventLogCollector(settings=platform.settings())
        collector.refresh(instance)
    labels = {"campaign": "rename", "forge": "github"}
    counted = collector.metrics.registry.get_sample_value("campaign_forge_api_calls_total", labels)
    assert 0 < counted < len(github.calls)

    # Re-running finds the PRs and creates none.
    platform.cli("run", "--file", str(path))
    assert len(github.calls_to("POST", "/repos/acme/alpha/pulls")) == 1
    assert len(github.repos["acme/alpha"].pulls) == 1

    # A human closes beta's PR: it is not reopened.
    github.close_pr("acme/beta", 1)
    platform.cli("run", "--file", str(path))
    assert github.pr("acme/beta", 1).state == "closed"
    assert len(github.repos["acme/beta"].pulls) == 1
    # ... unless the campaign asks for it.
    edit_campaign(path, pull_request={"reopen": True})
    platform.cli("run", "--file", str(path))
    assert github.pr("acme/beta", 1).state == "open"
    assert len(github.repos["acme/beta"].pulls) == 1

    # alpha's base gets the change by other means: its PR is closed with a comment.
    github.create_branch("acme/alpha", "main", {"app.py": "GREETING = 'NEW'\n"})
    platform.cli("run", "--file", str(path))
    assert github.pr("acme/alpha", 1).state == "closed"
    (comment,) = github.repos["acme/alpha"].comments[1]
    assert "no longer changes anything" in comment["body"]
    assert report(platform)["acme__alpha"]["status"] == "no_change"

    # The token is in no byte the platform stored.
    assert_no_secret_stored(platform, SECRETS)


def test_discovery_without_the_github_forge_is_a_clear_error(platform: Platform, monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_FORGE", raising=False)
    platform.env.pop("ORCHESTRATOR_FORGE", None)
    proc = platform.cli("run", "--file", str(campaign(platform)), check=False)
    assert proc.returncode == 2
    assert "`discover: github` needs the GitHub forge" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_discovery_sensor_turns_github_repositories_into_partitions(platform: Platform, github):
    from dagster import build_sensor_context

    from orchestrator_assets.spec.catalog import load_one
    from orchestrator_assets.spec.discovery import discovered_path
    from sensors.discovery import build_discovery_sensor

    spec = load_one(campaign(platform), platform.settings()).spec
    assert spec.targets == []  # nothing discovered yet: loading never calls GitHub
    sensor = build_discovery_sensor(spec)
    with platform.instance() as instance:
        result = sensor(build_sensor_context(instance=instance))
        (request,) = result.dynamic_partitions_requests
        assert sorted(request.partition_keys) == ["acme__alpha", "acme__beta"]
        instance.add_dynamic_partitions(spec.partitions_name, list(request.partition_keys))

        # A new repository gets the topic; once the stored answer is stale it becomes a target.
        github.add_repo("acme/gamma", {"app.py": "x = 1\n"}, topics=["python"])
        again = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
        assert not getattr(again, "dynamic_partitions_requests", None)  # still fresh
        stored = discovered_path(platform.settings(), spec)
        stored.write_text(json.dumps({**json.loads(stored.read_text()), "refreshed": 0}))
        later = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
        (request,) = later.dynamic_partitions_requests
        assert list(request.partition_keys) == ["acme__gamma"]


def test_github_reviews_of_draft_prs_are_the_review_decisions(platform: Platform, github):
    """A campaign that reviews in draft PRs: GitHub's approval publishes the PR; a change
    request (with its body) is recorded as the decision with the reviewer's login."""
    path = campaign(platform)
    edit_campaign(path, review={"policy": "required"}, pull_request={"draft": True})
    platform.cli("run", "--file", str(path))
    assert {r["status"] for r in report(platform).values()} == {"awaiting_review"}
    assert github.pr("acme/alpha", 1).draft and github.pr("acme/beta", 1).draft

    github.add_review("acme/alpha", 1, "octocat", "APPROVED", "ship it")
    github.add_review("acme/beta", 1, "hubot", "CHANGES_REQUESTED", "keep the old name in docs")
    asked, made = review_sensor_tick(platform, path, campaign_forge=False)
    assert asked == {"acme__alpha", "acme__beta"}
    assert (made["acme__alpha"].decision, made["acme__alpha"].actor) == ("approve", "octocat")
    beta = made["acme__beta"]
    assert (beta.decision, beta.actor, beta.source) == ("reject", "hubot", "github")

    platform.cli("run", "--file", str(path))
    rows = report(platform)
    assert rows["acme__alpha"]["status"] == "pr_open" and rows["acme__beta"]["status"] == "rejected"
    assert not github.pr("acme/alpha", 1).draft  # approved: published
    assert github.pr("acme/beta", 1).state == "closed"


def test_a_first_run_asks_the_api_for_no_branch_and_fetches_each_repository_once(
    platform: Platform, github
):
    path = campaign(platform)
    platform.cli("run", "--file", str(path))
    assert {r["status"] for r in report(platform).values()} == {"pr_open"}
    # The base and campaign branches come from the mirror's fetch, which the checkout needs
    # anyway, not from two API reads per target.
    assert github.calls_to("GET", r"/repos/.*/branches/.*") == []
    for name in ("acme/alpha", "acme/beta"):
        # One transport session per repository (the mirror's clone): the verifier's checkout
        # takes the kept change from the mirror instead of fetching again.
        sessions = [
            c
            for c in github.calls
            if c.method == "GET"
            and c.path == f"/git/{name}.git/info/refs"
            and c.query.get("service") == ["git-upload-pack"]
        ]
        assert len(sessions) == 1, [(c.method, c.path, c.query) for c in github.calls]
    # Nor is a repository read again: discovery's listing said where it is and its default
    # branch. What is left per target: the PR lookup (a re-run's safety), creating it, its
    # labels and reviewers.
    assert github.calls_to("GET", r"/repos/acme/[^/]+") == []
    alpha = [(c.method, github.api_path(c.path)) for c in github.calls
             if github.api_path(c.path).startswith("/repos/acme/alpha")]  # fmt: skip
    assert alpha == [
        ("GET", "/repos/acme/alpha/pulls"),
        ("POST", "/repos/acme/alpha/pulls"),
        ("POST", "/repos/acme/alpha/issues/1/labels"),
        ("POST", "/repos/acme/alpha/pulls/1/requested_reviewers"),
    ]
    # A re-run of the unchanged target asks only for its pull request (found up to date) and
    # the reviews it asked for, and fetches its mirror once.
    before = len(github.calls)
    platform.cli("run", "--file", str(path))
    again = github.calls[before:]
    alpha = [(c.method, github.api_path(c.path)) for c in again
             if github.api_path(c.path).startswith("/repos/acme/alpha")]  # fmt: skip
    assert alpha == [
        ("GET", "/repos/acme/alpha/pulls"),
        ("GET", "/repos/acme/alpha/pulls/1/reviews"),
    ]
    sessions = [c.path for c in again if c.method == "GET" and "alpha" in c.path
                and c.query.get("service") == ["git-upload-pack"]]  # fmt: skip
    assert sessions == ["/git/acme/alpha.git/info/refs"]
