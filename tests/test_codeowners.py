"""Owners as reviewers: `pull_request.reviewers_from: codeowners` asks the changed files' code
owners (from the target's CODEOWNERS at the change's base commit) besides the fixed reviewers,
teams and assignees; the PR's author is never asked."""

from __future__ import annotations

import json

import pytest
import yaml

from orchestrator_assets.demo_fleet import RepoSpec
from orchestrator_assets.spec.delivery import PullRequestTemplate
from orchestrator_assets.stages.owners import owners_of, parse_codeowners
from tests.conftest import CODEMOD, TEST, Platform
from tests.fake_github import FakeGitHub

CODEOWNERS = """\
# Default owners, then more specific rules: the last matching rule wins.
*                 @acme/everyone
*.py              @py-lead ops@example.com
/build/           @builder
docs/*            @writer
apps/             @acme/apps
app.py            @alice @acme/app-team @campaign-bot
vendor/
[GitLab section]
/tools/**/*.sh    @shell
"""


@pytest.mark.parametrize(
    ("path", "users", "teams"),
    [
        ("README.md", [], ["acme/everyone"]),
        ("lib/util.py", ["py-lead"], []),  # e-mail owner skipped
        ("app.py", ["alice", "campaign-bot"], ["acme/app-team"]),  # last rule wins
        ("src/app.py", ["alice", "campaign-bot"], ["acme/app-team"]),  # no slash: any depth
        ("build/out.txt", ["builder"], []),
        ("src/build/out.txt", [], ["acme/everyone"]),  # /build/ is anchored at the root
        ("docs/index.md", ["writer"], []),
        ("docs/api/index.md", [], ["acme/everyone"]),  # docs/* owns only docs' own files
        ("apps/web/main.js", [], ["acme/apps"]),
        ("vendor/lib.js", [], []),  # a rule without owners un-owns
        ("tools/ci/deep/run.sh", ["shell"], []),  # after a GitLab section header
    ],
)
def test_the_last_matching_rule_gives_each_files_owners(path, users, teams):
    owners = owners_of(parse_codeowners(CODEOWNERS), [path])
    assert (owners.users, owners.teams) == (users, teams)


def test_owners_of_several_files_are_merged_in_order_once_each():
    owners = owners_of(parse_codeowners(CODEOWNERS), ["app.py", "lib/x.py", "src/app.py"])
    assert owners.users == ["alice", "campaign-bot", "py-lead"]
    assert owners.teams == ["acme/app-team"]


def app_with_owners(name: str, owners_path: str, owners: str) -> RepoSpec:
    return RepoSpec(
        name,
        {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST, owners_path: owners},
    )


def test_local_prs_ask_the_code_owners_and_the_fixed_lists(platform: Platform, bwrap: None):
    fleet = [
        app_with_owners("alpha", ".github/CODEOWNERS", CODEOWNERS),
        app_with_owners("beta", "docs/CODEOWNERS", "*.py @bob\n"),
        RepoSpec("gamma", {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}),
    ]
    targets = [str(p) for p in platform.make_fleet(fleet)]
    platform.set_env("ORCHESTRATOR_ACTOR", "alice")  # who opens the PRs: never asked
    path = platform.write_campaign(
        "owners",
        targets=targets,
        pull_request={
            "reviewers_from": "codeowners",
            "reviewers": ["carol"],
            "team_reviewers": ["acme/platform"],
            "assignees": ["dave"],
        },
    )
    platform.cli("run", "--file", str(path))

    def pr(repo: str) -> dict:
        return json.loads(
            (platform.fleet / "acme" / f"{repo}.git" / "pulls" / "1.json").read_text()
        )

    alpha = pr("alpha")  # changes app.py: alice (the author), campaign-bot and acme/app-team
    assert alpha["reviewers"] == ["carol", "campaign-bot"]
    assert alpha["team_reviewers"] == ["acme/platform", "acme/app-team"]
    assert alpha["assignees"] == ["dave"]
    assert pr("beta")["reviewers"] == ["carol", "bob"]  # docs/CODEOWNERS
    gamma = pr("gamma")  # no CODEOWNERS: the fixed lists only
    assert (gamma["reviewers"], gamma["team_reviewers"]) == (["carol"], ["acme/platform"])


def test_bad_reviewers_from_names_the_field(platform: Platform):
    path = platform.write_campaign(
        "owners", targets=["/tmp/nowhere"], pull_request={"reviewers_from": "maintainers"}
    )
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1
    assert "pull_request.reviewers_from" in proc.stderr


TOKEN = "ghp_OWNERS" + "0" * 30


def test_github_prs_ask_owners_by_login_and_team_slug_and_assign(platform: Platform, bwrap: None):
    with FakeGitHub(TOKEN, platform.root / "github") as github:
        github.add_org("acme")
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST,
                 "CODEOWNERS": CODEOWNERS}  # fmt: skip
        github.add_repo("acme/alpha", files)
        platform.use_github(github.base_url, TOKEN)
        data = {
            "name": "owners",
            "description": "Rename OLD to NEW.",
            "targets": [f"{github.web}/acme/alpha"],
            "transformation": {"kind": "deterministic", "command": CODEMOD},
            "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
            "pull_request": {"reviewers_from": "codeowners", "assignees": ["dave"]},
        }
        path = platform.campaigns / "owners.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        platform.cli("run", "--file", str(path))
        pr = github.pr("acme/alpha", 1)
        # campaign-bot is the token's login, the PR's author: GitHub refuses to ask it.
        assert pr.reviewers == ["alice"]
        assert pr.teams == ["app-team"]  # GitHub takes the team's slug
        assert pr.assignees == ["dave"]
        # Running again asks and assigns nobody twice.
        platform.cli("run", "--file", str(path), "--no-cache")
        pr = github.pr("acme/alpha", 1)
        assert (pr.reviewers, pr.teams, pr.assignees) == (["alice"], ["app-team"], ["dave"])


def test_reviewer_names_are_checked_and_a_leading_at_is_dropped(platform: Platform):
    path = platform.write_campaign(
        "owners", targets=["/tmp/nowhere"], pull_request={"reviewers": ["acme/app-team"]}
    )
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1
    assert "pull_request.reviewers" in proc.stderr and "team_reviewers" in proc.stderr
    template = PullRequestTemplate(reviewers=["@alice", "alice"], team_reviewers=["@acme/x"])
    assert (template.reviewers, template.team_reviewers) == (["alice"], ["acme/x"])
