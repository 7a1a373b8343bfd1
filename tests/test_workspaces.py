"""Monorepo workspaces (`workspaces:`): each directory holding the marker file becomes a target
of its own, with its own partition, branch and pull request; its commands run in it and its
change may not leave it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import RepoSpec, create_fleet
from resources.git import run_git
from tests.conftest import STRICT_TEST, TEST, Platform

WORKSPACES = {"marker": "pyproject.toml", "under": "packages/*"}


def monorepo(name: str = "mono") -> RepoSpec:
    """Two Python sub-projects with a marker, one folder without, and a root app.py that a
    change run at the root would rename too."""
    files = {"app.py": "GREETING = 'OLD'\n", "README.md": "# mono\n"}
    for package in ("foo", "bar"):
        files[f"packages/{package}/pyproject.toml"] = f"[project]\nname = '{package}'\n"
        files[f"packages/{package}/app.py"] = "GREETING = 'OLD'\n"
        files[f"packages/{package}/tests/test_app.py"] = TEST
    files["packages/docs/index.md"] = "docs\n"  # no marker: not a workspace
    return RepoSpec(name, files)


def pulls(bare: Path) -> dict[str, dict]:
    """The local forge's PR records of a repository, by head branch."""
    records = [json.loads(p.read_text()) for p in (bare / "pulls").glob("*.json")]
    return {r["head"]: r for r in records}


@pytest.mark.usefixtures("bwrap")
def test_each_workspace_is_a_target_with_its_own_branch_and_pull_request(platform: Platform):
    (mono, flat) = create_fleet(platform.fleet, [monorepo(), RepoSpec("flat", {"a.txt": "x\n"})])
    path = platform.write_campaign(
        "mono-rename", targets=[str(mono), str(flat)], workspaces=WORKSPACES
    )
    proc = platform.cli("run", "--file", str(path))
    out = proc.stdout + proc.stderr
    assert "1 of 2 repositories selected" in out, out
    assert "not selected: acme__flat (no pyproject.toml under packages/*)" in out

    with platform.instance() as instance:
        assert sorted(instance.get_dynamic_partitions("mono_rename_targets")) == [
            "acme__mono__packages-bar",
            "acme__mono__packages-foo",
        ]
    report = json.loads(platform.cli("report", "mono-rename", "--output", "json").stdout)
    assert {r["target"]: r["status"] for r in report} == {
        "acme__mono__packages-bar": "pr_open",
        "acme__mono__packages-foo": "pr_open",
    }
    prs = pulls(mono)
    assert set(prs) == {"campaign/mono-rename/packages-bar", "campaign/mono-rename/packages-foo"}
    for package in ("foo", "bar"):
        branch = f"campaign/mono-rename/packages-{package}"
        # The transformation ran in the workspace's directory: only its app.py changed (the
        # root's app.py and the other package's are untouched), and its verifier ran there.
        changed = run_git(["diff", "--name-only", "main", branch], mono).split()
        assert changed == [f"packages/{package}/app.py"]
        assert prs[branch]["base"] == "main"
    logs = platform.cli("logs", "mono-rename", "acme__mono__packages-foo").stdout
    assert "verifier test passed" in logs


@pytest.mark.usefixtures("bwrap")
def test_a_change_outside_the_workspace_is_refused(platform: Platform):
    (mono,) = create_fleet(platform.fleet, [monorepo()])
    outside = "python -c \"open('../../ROOT.txt', 'w').write('x')\""
    path = platform.write_campaign(
        "escape",
        targets=[str(mono)],
        workspaces=WORKSPACES,
        transformation={"kind": "deterministic", "command": outside},
    )
    platform.cli("run", "--file", str(path))
    report = json.loads(platform.cli("report", "escape", "--output", "json").stdout)
    assert {r["status"] for r in report} == {"change_failed"}
    logs = platform.cli("logs", "escape", "acme__mono__packages-foo").stdout
    assert "outside the workspace packages/foo/ (refused): ROOT.txt" in logs
    assert not pulls(mono)


def test_validate_checks_workspaces(platform: Platform):
    def validate(workspaces: dict) -> str:
        path = platform.write_campaign("ws", targets=["/srv/acme/a.git"], workspaces=workspaces)
        proc = platform.cli("validate", str(path), check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        return proc.stderr

    assert "workspaces.marker" in validate({"marker": "packages/pyproject.toml"})
    assert "workspaces.under" in validate({"marker": "package.json", "under": "../x"})
    assert "workspaces.pull_requests" in validate(
        {"marker": "package.json", "pull_requests": "per_package"}
    )
    combined = {"marker": "package.json", "pull_requests": "per_repository"}
    path = platform.write_campaign("ws", targets=["/srv/acme/a.git"], workspaces=combined,
                                   ci_repairs=2, rollout={"waves": [1, "all"]})  # fmt: skip
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "per_repository cannot be combined with ci_repairs and rollout" in proc.stderr


@pytest.mark.usefixtures("bwrap")
def test_on_github_each_workspace_gets_its_own_pull_request(platform: Platform):
    from tests.fake_github import FakeGitHub

    token = "ghp_" + "6" * 36
    with FakeGitHub(token, platform.root / "github") as github:
        github.add_repo("acme/mono", monorepo().files)
        platform.use_github(github.base_url, token)
        path = platform.write_campaign("mono-rename", targets=["acme/mono"], workspaces=WORKSPACES)
        platform.cli("run", "--file", str(path))
        heads = {github.pr("acme/mono", n).head for n in (1, 2)}
        assert heads == {"campaign/mono-rename/packages-bar", "campaign/mono-rename/packages-foo"}
        refs = github.refs("acme/mono")
        changed = run_git(
            ["diff", "--name-only", refs["main"], refs["campaign/mono-rename/packages-foo"]],
            github.repos["acme/mono"].bare,
        ).split()
        assert changed == ["packages/foo/app.py"]


@pytest.mark.usefixtures("bwrap")
def test_a_listed_target_can_name_its_directory(platform: Platform):
    (mono,) = create_fleet(platform.fleet, [monorepo()])
    path = platform.write_campaign(
        "one-package", targets=[{"repo": str(mono), "path": "packages/bar"}]
    )
    platform.cli("run", "--file", str(path))
    report = json.loads(platform.cli("report", "one-package", "--output", "json").stdout)
    assert {r["target"]: r["status"] for r in report} == {"acme__mono__packages-bar": "pr_open"}
    changed = run_git(["diff", "--name-only", "main", "campaign/one-package/packages-bar"], mono)
    assert changed.split() == ["packages/bar/app.py"]


def test_select_decides_on_the_repository_then_workspaces_split_it(platform: Platform):
    from orchestrator_assets.spec.selection import Selector
    from orchestrator_assets.spec.workspaces import Workspaces
    from orchestrator_assets.stages.selection import evaluate
    from resources.repo_cache import RepoCache

    (mono,) = create_fleet(platform.fleet, [monorepo()])
    cache = RepoCache(platform.root / "cache")
    cache.mirror(str(mono))
    head = run_git(["rev-parse", "main"], mono).strip()
    split = Workspaces.model_validate(WORKSPACES)

    def answer(select: dict, workspaces: Workspaces = split):
        return evaluate(Selector.model_validate(select), workspaces, cache, str(mono), head)

    found = answer({"paths": ["README.md"]})
    assert found.selected and found.workspaces == ["packages/bar", "packages/foo"]
    assert not answer({"paths": ["Cargo.toml"]}).selected
    assert answer({"paths": ["README.md"]}, Workspaces(marker="index.md", under="packages/*")) \
        .workspaces == ["packages/docs"]  # fmt: skip
    nothing = answer({"paths": ["README.md"]}, Workspaces(marker="package.json"))
    assert not nothing.selected and nothing.why == "no package.json under *"


@pytest.mark.usefixtures("bwrap")
def test_per_repository_one_pull_request_combines_the_workspaces_that_passed(platform: Platform):
    repo = monorepo()
    repo.files["packages/baz/pyproject.toml"] = "[project]\nname = 'baz'\n"
    repo.files["packages/baz/app.py"] = "GREETING = 'OLD'\n"
    repo.files["packages/baz/tests/test_app.py"] = TEST
    repo.files["packages/bar/tests/test_app.py"] = STRICT_TEST  # the rename breaks bar's test
    (mono,) = create_fleet(platform.fleet, [repo])
    path = platform.write_campaign(
        "combined", targets=[str(mono)],
        workspaces={**WORKSPACES, "pull_requests": "per_repository"},
        review={"policy": "required"}, pull_request={"draft": True},  # reviewed on a draft PR
    )  # fmt: skip
    platform.cli("run", "--file", str(path))
    report = json.loads(platform.cli("report", "combined", "--output", "json").stdout)
    assert {r["target"]: r["status"] for r in report} == {
        "acme__mono__packages-bar": "verification_failed",
        "acme__mono__packages-baz": "awaiting_review",
        "acme__mono__packages-foo": "awaiting_review",
    }
    # One branch and one PR for the repository, holding the changes that passed (not bar's).
    prs = pulls(mono)
    assert list(prs) == ["campaign/combined"]
    assert "`packages/baz/`" in prs["campaign/combined"]["body"]
    assert "`packages/foo/`" in prs["campaign/combined"]["body"]
    changed = run_git(["diff", "--name-only", "main", "campaign/combined"], mono).split()
    assert changed == ["packages/baz/app.py", "packages/foo/app.py"]
    assert run_git(["rev-list", "--count", "main..campaign/combined"], mono).strip() == "1"
    assert len({r["pr_number"] for r in report if r["status"] == "awaiting_review"}) == 1

    # Running again changes nothing on the forge (the same combined commit).
    pushed = run_git(["rev-parse", "campaign/combined"], mono)
    platform.cli("run", "--file", str(path))
    assert run_git(["rev-parse", "campaign/combined"], mono) == pushed

    # foo is approved, baz rejected: baz leaves the combined branch, the PR stays with foo's.
    platform.cli("approve", "combined", "acme__mono__packages-foo")
    platform.cli("reject", "combined", "acme__mono__packages-baz", "--reason", "not baz")
    platform.cli("run", "--file", str(path))
    report = json.loads(platform.cli("report", "combined", "--output", "json").stdout)
    statuses = {r["target"]: r["status"] for r in report}
    assert statuses["acme__mono__packages-baz"] == "rejected"
    assert statuses["acme__mono__packages-foo"] == "pr_open"
    assert pulls(mono)["campaign/combined"]["state"] == "open"
    changed = run_git(["diff", "--name-only", "main", "campaign/combined"], mono).split()
    assert changed == ["packages/foo/app.py"]


@pytest.mark.usefixtures("bwrap")
def test_a_previewed_monorepo_is_published_as_one_combined_pull_request(platform: Platform):
    (mono,) = create_fleet(platform.fleet, [monorepo()])
    path = platform.write_campaign(
        "combined", targets=[str(mono)],
        workspaces={**WORKSPACES, "pull_requests": "per_repository"},
    )  # fmt: skip
    out = platform.cli("run", "--file", str(path), "--preview").stdout
    assert "previewed: 2" in out, out
    assert not pulls(mono)
    published = platform.cli("publish", "combined").stdout
    assert "acme__mono__packages-foo: published" in published, published
    assert "acme__mono__packages-bar: published" in published
    assert list(pulls(mono)) == ["campaign/combined"]
    changed = run_git(["diff", "--name-only", "main", "campaign/combined"], mono).split()
    assert changed == ["packages/bar/app.py", "packages/foo/app.py"]


@pytest.mark.usefixtures("bwrap")
def test_a_workspace_whose_change_went_away_leaves_the_combined_pull_request(platform: Platform):
    (mono,) = create_fleet(platform.fleet, [monorepo()])
    split = {**WORKSPACES, "pull_requests": "per_repository"}
    path = platform.write_campaign("combined", targets=[str(mono)], workspaces=split)
    platform.cli("run", "--file", str(path))
    changed = run_git(["diff", "--name-only", "main", "campaign/combined"], mono).split()
    assert changed == ["packages/bar/app.py", "packages/foo/app.py"]

    # The campaign now changes foo only: bar has nothing to propose and leaves the PR.
    only_foo = (
        "python -c \"import pathlib; p = pathlib.Path('app.py'); "
        "pathlib.Path.cwd().name == 'foo' and p.write_text(p.read_text().replace('OLD', 'NEW'))\""
    )
    platform.write_campaign(
        "combined", targets=[str(mono)], workspaces=split,
        transformation={"kind": "deterministic", "command": only_foo},
    )  # fmt: skip
    platform.cli("run", "--file", str(path))
    report = json.loads(platform.cli("report", "combined", "--output", "json").stdout)
    assert {r["target"]: r["status"] for r in report} == {
        "acme__mono__packages-bar": "no_change",
        "acme__mono__packages-foo": "pr_open",
    }
    assert pulls(mono)["campaign/combined"]["state"] == "open"
    changed = run_git(["diff", "--name-only", "main", "campaign/combined"], mono).split()
    assert changed == ["packages/foo/app.py"]


@pytest.mark.usefixtures("bwrap")
def test_on_github_per_repository_opens_one_combined_pull_request(platform: Platform):
    from tests.fake_github import FakeGitHub

    token = "ghp_" + "7" * 36
    with FakeGitHub(token, platform.root / "github") as github:
        github.add_repo("acme/mono", monorepo().files)
        platform.use_github(github.base_url, token)
        path = platform.write_campaign(
            "mono-rename", targets=["acme/mono"],
            workspaces={**WORKSPACES, "pull_requests": "per_repository"},
        )  # fmt: skip
        platform.cli("run", "--file", str(path))
        assert github.pr("acme/mono", 1).head == "campaign/mono-rename"
        assert len(github.repos["acme/mono"].pulls) == 1
        refs = github.refs("acme/mono")
        changed = run_git(
            ["diff", "--name-only", refs["main"], refs["campaign/mono-rename"]],
            github.repos["acme/mono"].bare,
        ).split()
        assert changed == ["packages/bar/app.py", "packages/foo/app.py"]
