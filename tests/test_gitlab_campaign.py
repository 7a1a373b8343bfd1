"""A whole campaign on a named GitLab forge: discovery by group (with subgroups), merge requests
created once and updated in place, a merge request a human closed left alone, a bulk merge, and
the token in no stored byte.

GitLab is tested against its API contract only: tests/fake_gitlab.py answers the REST v4
endpoints the forge uses and serves the projects over git's smart HTTP, requiring the token.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from resources.git import run_git
from tests.conftest import CODEMOD, TEST, Platform
from tests.fake_gitlab import FakeGitLab

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
    data = {
        "name": "rename",
        "description": "Rename OLD to NEW.",
        "forge": "corp-gitlab",
        "discover": {"gitlab": {"group": "acme", "topics": ["python"]}},
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
        "pull_request": {"labels": ["campaign"], "reviewers": ["octocat"]},
    }
    path = platform.campaigns / "rename.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def report(platform: Platform) -> dict[str, dict]:
    rows = json.loads(platform.cli("report", "rename", "--output", "json").stdout)
    return {r["target"]: r for r in rows}


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
    data = yaml.safe_load(path.read_text())
    data["description"] = "Rename OLD to NEW, everywhere."
    path.write_text(yaml.safe_dump(data))
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
    for root in (Path(platform.env["DAGSTER_HOME"]), Path(platform.env["ORCHESTRATOR_DATA_DIR"])):
        for file in root.rglob("*"):
            if file.is_file():
                stored = file.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in stored, f"{secret[:12]}... found in {file}"


def test_gitlab_reviews_of_draft_merge_requests_are_the_review_decisions(
    platform: Platform, gitlab
):
    """A campaign that reviews in draft MRs: an approval on GitLab publishes the MR (its
    `Draft: ` title prefix goes); a reviewer's "requested changes" is recorded as a rejection
    with the reviewer's name, and the MR is closed."""
    from dagster import build_sensor_context

    from orchestrator_assets.assets.factory import build_campaign_definitions
    from orchestrator_assets.spec.catalog import load_one
    from orchestrator_assets.stages import review
    from resources.build import build_forge
    from sensors.review import build_review_sensor

    fake = gitlab
    path = campaign(platform)
    data = yaml.safe_load(path.read_text())
    data["review"] = {"policy": "required"}
    data["pull_request"]["draft"] = True
    path.write_text(yaml.safe_dump(data))
    platform.cli("run", "--file", str(path))
    assert {r["status"] for r in report(platform).values()} == {"awaiting_review"}
    assert fake.mr(ALPHA, 1).title.startswith("Draft: ") and fake.mr(BETA, 1).draft

    fake.approve(ALPHA, 1, "octocat")
    fake.set_reviewer_state(BETA, 1, "hubot", "requested_changes")
    fake.add_discussion(BETA, 1, "hubot", "keep the old name in docs")
    loaded = load_one(path, platform.settings())
    defs = build_campaign_definitions(loaded.spec, loaded.profile)
    job = next(j for j in defs.jobs if j.name == "rename_targets")
    sensor = build_review_sensor(
        loaded.spec, job, lambda: build_forge(platform.settings(), loaded.spec)
    )
    with platform.instance() as instance:
        result = sensor(build_sensor_context(instance=instance))
        made = {d.target: d for d in review.decisions_since(instance, loaded.spec, 0)[0]}
    alpha_key = next(k for k in made if k.endswith("alpha"))
    beta_key = next(k for k in made if k.endswith("beta"))
    assert {r.partition_key for r in result.run_requests} == {alpha_key, beta_key}
    assert (made[alpha_key].decision, made[alpha_key].actor) == ("approve", "octocat")
    assert (made[beta_key].decision, made[beta_key].actor) == ("reject", "hubot")

    platform.cli("run", "--file", str(path))
    rows = report(platform)
    assert rows[alpha_key]["status"] == "pr_open" and rows[beta_key]["status"] == "rejected"
    assert not fake.mr(ALPHA, 1).draft and not fake.mr(ALPHA, 1).title.startswith("Draft")
    assert fake.mr(BETA, 1).state == "closed"
