"""A whole campaign on a named Bitbucket forge, Cloud and Data Center: discovery, PRs created once
and updated in place, a PR a human declined left alone, a bulk merge, and the token in no stored
byte.

Bitbucket is tested against its API contract only: tests/fake_bitbucket.py answers the REST
endpoints the forge uses, as either flavour, and serves the repositories over git's smart HTTP,
requiring the token.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.conftest import CODEMOD, TEST, Platform
from tests.fake_bitbucket import FakeBitbucket
from tests.forge_helpers import assert_no_secret_stored, edit_campaign, report, write_campaign

pytestmark = pytest.mark.usefixtures("bwrap")

TOKEN = "bbtok_CANARY" + "2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b"
SECRETS = [TOKEN, base64.b64encode(f"x-token-auth:{TOKEN}".encode()).decode()]
OWNER = {"cloud": "acme", "dc": "ACME"}
REVIEWER = {"cloud": "557058:alice", "dc": "alice"}
KIND = {"cloud": "bitbucket_cloud", "dc": "bitbucket_dc"}


@pytest.fixture(params=["cloud", "dc"])
def bitbucket(request, platform: Platform):
    flavor = request.param
    with FakeBitbucket(flavor, TOKEN, platform.root / "bitbucket") as fake:
        files = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        owner = OWNER[flavor]
        fake.add_repo(f"{owner}/alpha", files)
        fake.add_repo(f"{owner}/beta", files)
        fake.add_repo(f"{owner}/docs", files)  # left out by the name pattern
        fake.add_user(REVIEWER[flavor])
        platform.use_forges(
            {"bb": {"kind": KIND[flavor], "base_url": fake.base_url, "token_env": "BB_TOKEN"}},
            env={"BB_TOKEN": TOKEN},
        )
        yield fake


def campaign(platform: Platform, fake: FakeBitbucket) -> Path:
    """The campaign, on the named forge bb: the owner's repositories named a* or b*."""
    owner = OWNER[fake.flavor]
    source = {"workspace": owner} if fake.flavor == "cloud" else {"project": owner}
    return write_campaign(
        platform,
        forge="bb",
        discover={"bitbucket": {**source, "name_pattern": "[ab]*"}},
        pull_request={"labels": ["campaign"], "reviewers": [REVIEWER[fake.flavor]]},
    )


def test_a_campaign_on_bitbucket_from_discovery_to_a_bulk_merge(platform: Platform, bitbucket):
    fake = bitbucket
    owner = OWNER[fake.flavor]
    alpha, beta = f"{owner}/alpha", f"{owner}/beta"
    path = campaign(platform, fake)
    first = platform.cli("run", "--file", str(path))
    assert "discovered 2 repositories" in first.stdout
    rows = report(platform)
    # Data Center's /projects/ACME/repos/alpha is the target acme__alpha, as Cloud's acme/alpha
    assert set(rows) == {"acme__alpha", "acme__beta"}
    assert {r["status"] for r in rows.values()} == {"pr_open"}
    pr = fake.pr(alpha, 1)
    assert (pr.source, pr.destination, pr.state) == ("campaign/rename", "main", "OPEN")
    assert pr.reviewers == [REVIEWER[fake.flavor]]
    assert "Rename OLD to NEW." in pr.description
    assert fake.refs(alpha)["main"] != fake.refs(alpha)["campaign/rename"]

    # Re-running finds the PRs and creates none; a changed description updates them in place.
    edit_campaign(path, description="Rename OLD to NEW, everywhere.")
    platform.cli("run", "--file", str(path))
    assert len(fake.calls_to("POST", r".*/pull-?requests")) == 2  # one per repository, ever
    assert len(fake.repos[alpha].pulls) == 1
    assert "everywhere" in fake.pr(alpha, 1).description

    # A human declines beta's PR: it is not reopened, nor is another opened.
    fake.decline_pr(beta, 1)
    platform.cli("run", "--file", str(path))
    assert fake.pr(beta, 1).state == "DECLINED" and len(fake.repos[beta].pulls) == 1

    # ... unless the campaign asks: Data Center reopens it; Cloud cannot, and says so.
    edit_campaign(path, pull_request={"reopen": True})
    again = platform.cli("run", "--file", str(path), check=False)
    if fake.flavor == "dc":
        assert fake.pr(beta, 1).state == "OPEN"
    else:
        assert fake.pr(beta, 1).state == "DECLINED" and len(fake.repos[beta].pulls) == 1
        row = report(platform)["acme__beta"]
        assert row["status"] == "pr_failed", again.stdout + again.stderr
        assert "Bitbucket Cloud cannot reopen a declined pull request" in row["reason"]

    # Bulk merge: the open ones merge, a declined one is left alone.
    merged = platform.cli("prs", "merge", "rename", "--yes")
    assert fake.pr(alpha, 1).state == "MERGED", merged.stdout + merged.stderr
    assert fake.pr(beta, 1).state == ("MERGED" if fake.flavor == "dc" else "DECLINED")
    assert "GREETING = 'NEW'" in _file_at(fake, alpha, "main", "app.py")

    # The token is in no byte the platform stored.
    assert_no_secret_stored(platform, SECRETS)


def _file_at(fake: FakeBitbucket, full_name: str, branch: str, rel: str) -> str:
    from resources.git import run_git

    bare = fake.repos[full_name].bare
    return run_git(["show", f"{branch}:{rel}"], bare)


def test_a_bad_bitbucket_selector_is_a_clear_error(platform: Platform, tmp_path):
    platform.use_forges(
        {"bb": {"kind": "bitbucket_cloud", "token_env": "BB_TOKEN"}}, env={"BB_TOKEN": TOKEN}
    )
    data = {
        "name": "rename",
        "description": "Rename.",
        "forge": "bb",
        "discover": {"bitbucket": {"workspace": "acme", "topics": ["python"]}},
        "transformation": {"kind": "deterministic", "command": CODEMOD},
    }
    path = tmp_path / "rename.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode != 0
    assert "topics" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    del data["discover"]["bitbucket"]["workspace"], data["discover"]["bitbucket"]["topics"]
    path.write_text(yaml.safe_dump(data))
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode != 0 and "workspace" in proc.stdout + proc.stderr
