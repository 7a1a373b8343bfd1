"""Preview before publish: `orchestrator run --preview` (or `preview: true`) verifies each change
and publishes nothing; `orchestrator publish` pushes exactly the previewed commits and opens
their PRs without transforming or verifying again, and refuses changes that moved since."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestrator_assets.assets import history
from orchestrator_assets.assets.factory import build_campaign_definitions
from orchestrator_assets.spec.catalog import load_one
from sensors.review import build_review_sensor
from tests.conftest import CODEMOD, TEST, Platform, app_repo
from tests.fake_github import FakeGitHub

pytestmark = pytest.mark.usefixtures("bwrap")

FLEET = [
    app_repo("alpha", "GREETING = 'OLD'\n"),  # previewed, then published
    app_repo("omega", "GREETING = 'OLD'\n"),  # the same, in the same run as alpha
    app_repo("beta", "GREETING = 'OLD'\n"),  # previewed; its base moves before publish
    app_repo("gamma", "GREETING = 'NEW'\n"),  # nothing to change
]


def pulls(platform: Platform, repo: str) -> list[dict]:
    folder = platform.fleet / "acme" / f"{repo}.git" / "pulls"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def branch_sha(platform: Platform, repo: str, branch: str) -> str | None:
    out = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=platform.fleet / "acme" / f"{repo}.git", capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip() or None


def commit_file(bare: Path, name: str, text: str) -> None:
    """A developer commits on the default branch of a bare repository."""
    work = bare.parent / f"{bare.stem}-work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    (work / name).write_text(text)
    git = ["git", "-c", "user.name=Dev", "-c", "user.email=dev@localhost", "-C", str(work)]
    subprocess.run([*git, "add", name], check=True)
    subprocess.run([*git, "commit", "-qm", f"update {name}"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True)


def rows(platform: Platform, name: str) -> dict[str, dict]:
    report = platform.cli("report", name, "--output", "json").stdout
    return {r["target"]: r for r in json.loads(report)}


def materializations(platform: Platform, path: Path, stage: str, key: str) -> int:
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(history.asset_key(spec, stage), asset_partitions=[key]),
            limit=100,
        )
    return len(found.records)


def test_preview_publishes_nothing_and_publish_opens_exactly_the_previewed_changes(platform):
    targets = [str(p) for p in platform.make_fleet(FLEET)]
    path = platform.write_campaign("preview", targets=targets)

    out = platform.cli("run", "--file", str(path), "--preview").stdout
    assert "previewed: 3" in out and "no_change: 1" in out
    got = rows(platform, "preview")
    assert {k: r["status"] for k, r in got.items()} == {
        "acme__alpha": "previewed", "acme__omega": "previewed", "acme__beta": "previewed",
        "acme__gamma": "no_change",
    }  # fmt: skip
    assert "would publish" in got["acme__alpha"]["reason"]
    # Nothing reached the forge: no campaign branch, no pull request.
    for repo in ("alpha", "beta"):
        assert branch_sha(platform, repo, "campaign/preview") is None
        assert pulls(platform, repo) == []
    previewed_head = got["acme__alpha"]["head_sha"]
    # What would be published, as a diff.
    diff = platform.cli("diff", "preview", "acme__alpha").stdout
    assert "+GREETING = 'NEW'" in diff
    # Without a target: every previewed change, each under its target, and the counts.
    every = platform.cli("diff", "preview").stdout
    assert [line.split()[1] for line in every.splitlines() if line.startswith("=== ")] == [
        "acme__alpha", "acme__beta", "acme__omega",
    ]  # fmt: skip
    assert every.count("+GREETING = 'NEW'") == 3
    assert "3 previewed change(s) to publish; targets: 1 no_change, 3 previewed" in every
    assert "app.py +1 -1" in platform.cli("diff", "preview", "--stat").stdout

    dry = platform.cli("publish", "preview", "--dry-run").stdout
    assert "acme__alpha: would publish" in dry and "1 file(s) (+1 -1): app.py" in dry
    assert pulls(platform, "alpha") == []

    # beta's base moves after its preview: its change is not what would be merged any more.
    commit_file(platform.fleet / "acme" / "beta.git", "README.md", "moved\n")
    proc = platform.cli("publish", "preview", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "acme__alpha: published" in proc.stdout and "acme__omega: published" in proc.stdout
    assert "publishes acme__alpha … acme__omega" in proc.stdout  # one run for both
    assert "acme__beta: the base moved since the preview" in proc.stdout
    assert "acme__gamma: not previewed" in proc.stdout
    (alpha_pr,) = pulls(platform, "alpha")
    assert alpha_pr["state"] == "open" and alpha_pr["head_sha"] == previewed_head
    assert branch_sha(platform, "alpha", "campaign/preview") == previewed_head
    assert pulls(platform, "beta") == []
    assert branch_sha(platform, "beta", "campaign/preview") is None
    after = rows(platform, "preview")
    assert after["acme__alpha"]["status"] == "pr_open"
    assert after["acme__omega"]["status"] == "pr_open"
    assert len(pulls(platform, "omega")) == 1
    assert after["acme__beta"]["status"] == "previewed"
    # Published without transforming or verifying again: one change and one verification.
    assert materializations(platform, path, "change", "acme__alpha") == 1
    assert materializations(platform, path, "verification", "acme__alpha") == 1
    # The publish is in the audit trail as an approval of the previewed head.
    audit = platform.cli("audit", "preview", "--output", "json").stdout.splitlines()
    actions = [(e["target"], e["action"]) for e in map(json.loads, audit)]
    assert ("acme__alpha", "approve (publish)") in actions
    # The review sensor leaves publish decisions alone: publish ran the PR stage already.
    campaign = load_one(path, platform.settings())
    defs = build_campaign_definitions(campaign.spec, campaign.profile)
    job = next(j for j in defs.jobs if j.name == f"{campaign.spec.id}_targets")
    sensor = build_review_sensor(campaign.spec, job, lambda: None)  # type: ignore[arg-type, return-value]
    with platform.instance() as instance:
        assert sensor(dg.build_sensor_context(instance=instance)).run_requests == []

    # Publishing again publishes nothing twice.
    again = platform.cli("publish", "preview", "--target", "acme__alpha", "--output", "json")
    (result,) = json.loads(again.stdout)["targets"]
    assert result["verdict"] == "published" and "already published #1" in result["message"]
    assert len(pulls(platform, "alpha")) == 1


def test_a_preview_campaign_whose_spec_changed_is_not_published(platform):
    targets = [str(p) for p in platform.make_fleet(FLEET[:1])]
    path = platform.write_campaign("previewed", targets=targets, preview=True)
    platform.cli("run", "--file", str(path))
    assert rows(platform, "previewed")["acme__alpha"]["status"] == "previewed"
    assert pulls(platform, "alpha") == []

    data = yaml.safe_load(path.read_text())
    data["verifiers"][0]["command"] += " -x"  # the preview was verified by another command
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = platform.cli("publish", "previewed", check=False)
    assert proc.returncode == 1
    assert "acme__alpha: the campaign's verifiers changed since the preview" in proc.stdout
    data["pull_request"] = {"title": "Another title"}  # part of the change's fingerprint
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = platform.cli("publish", "previewed", check=False)
    assert proc.returncode == 1
    assert "acme__alpha: the campaign changed since the preview" in proc.stdout
    assert pulls(platform, "alpha") == []

    # A later run previews the new change (preview: true); publish then opens it.
    platform.cli("run", "--file", str(path))
    assert rows(platform, "previewed")["acme__alpha"]["status"] == "previewed"
    platform.cli("publish", "previewed")
    (pr,) = pulls(platform, "alpha")
    assert pr["title"] == "Another title"
    # With the campaign previewing, a further run keeps the published PR (no re-preview).
    platform.cli("run", "--file", str(path))
    assert rows(platform, "previewed")["acme__alpha"]["status"] == "pr_open"


def test_publish_with_nothing_previewed_says_so(platform):
    targets = [str(p) for p in platform.make_fleet(FLEET[3:])]
    path = platform.write_campaign("quiet", targets=targets)
    platform.cli("run", "--file", str(path), "--preview")
    proc = platform.cli("publish", "quiet", check=False)
    assert proc.returncode == 0
    assert "nothing to publish" in proc.stderr
    bad = platform.cli("publish", "quiet", "--target", "acme__nope", check=False)
    assert bad.returncode == 2 and "acme__nope" in bad.stderr


def test_the_example_validates(platform):
    example = Path(__file__).resolve().parents[1] / "campaigns" / "modernize-python-preview.yaml"
    proc = platform.cli("validate", str(example))
    assert "✓" in proc.stdout
    spec = load_one(example, platform.settings()).spec
    assert spec.preview and spec.merge is not None and spec.merge.method == "squash"
    assert spec.pull_request.reviewers_from == "codeowners"


def test_a_change_already_published_is_not_held_by_a_later_preview(platform):
    targets = [str(p) for p in platform.make_fleet(FLEET[:1])]
    path = platform.write_campaign("again", targets=targets)
    platform.cli("run", "--file", str(path))
    assert rows(platform, "again")["acme__alpha"]["status"] == "pr_open"
    platform.cli("run", "--file", str(path), "--preview")
    assert rows(platform, "again")["acme__alpha"]["status"] == "pr_open"
    assert len(pulls(platform, "alpha")) == 1


TOKEN = "ghp_PREVIEW" + "0" * 29


def test_on_github_a_preview_pushes_nothing_and_publish_pushes_the_previewed_commit(platform):
    with FakeGitHub(TOKEN, platform.root / "github") as github:
        github.add_org("acme")
        github.add_repo("acme/alpha", {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST})
        platform.use_github(github.base_url, TOKEN)
        data = {
            "name": "preview",
            "description": "Rename OLD to NEW.",
            "targets": [f"{github.web}/acme/alpha"],
            "transformation": {"kind": "deterministic", "command": CODEMOD},
            "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
            "preview": True,
        }
        path = platform.campaigns / "preview.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        platform.cli("run", "--file", str(path))
        row = rows(platform, "preview")["acme__alpha"]
        assert row["status"] == "previewed"
        assert "campaign/preview" not in github.refs("acme/alpha")
        assert not [c for c in github.calls if c.method == "POST" and c.path.endswith("/pulls")]

        platform.cli("publish", "preview")
        assert github.refs("acme/alpha")["campaign/preview"] == row["head_sha"]
        pr = github.pr("acme/alpha", 1)
        assert pr.state == "open" and pr.head == "campaign/preview"
        assert rows(platform, "preview")["acme__alpha"]["status"] == "pr_open"
