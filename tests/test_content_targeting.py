"""Targeting by content (`select:`): only the repositories whose base branch holds the files or
text asked for become targets; the answers are cached by base commit and evaluated again when a
base branch moves (by `orchestrator run` and by the discovery sensor)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from orchestrator_assets.demo_fleet import create_fleet
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.spec.selection import Selector
from orchestrator_assets.stages import selection
from resources.git import author_env, run_git
from resources.repo_cache import RepoCache
from sensors.discovery import build_discovery_sensor
from tests.conftest import TEST, Platform, app_repo

OLD_DJANGO = "django==3.2.25\nrequests\n"
NEW_DJANGO = "django==4.2.11\nrequests\n"
SELECT = {"contains": {"path": "requirements*.txt", "pattern": r"^django[=<]=?3\."}}


def make_repos(platform: Platform) -> dict[str, str]:
    """Three repositories: one on Django 3, one on Django 4, one without requirements."""
    old = app_repo("old", "GREETING = 'OLD'\n")
    old.files["requirements.txt"] = OLD_DJANGO
    new = app_repo("new", "GREETING = 'OLD'\n")
    new.files["requirements-prod.txt"] = NEW_DJANGO
    bare = app_repo("bare", "GREETING = 'OLD'\n")
    paths = create_fleet(platform.fleet, [old, new, bare])
    return {p.name.removesuffix(".git"): str(p) for p in paths}


def commit_to(bare: str, files: dict[str, str], branch: str = "main") -> None:
    """Push a commit with `files` to the default branch of the bare repository `bare`."""
    env = author_env("Someone", "someone@localhost")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        run_git(["clone", "--quiet", bare, str(work)])
        for rel, text in files.items():
            (work / rel).write_text(text)
        run_git(["commit", "--quiet", "-am", "change requirements"], work, env=env)
        run_git(["push", "--quiet", "origin", f"HEAD:{branch}"], work)


def answers_file(platform: Platform) -> Path:
    (found,) = (Path(platform.env["ORCHESTRATOR_DATA_DIR"]) / "selection" / "answers").glob("*")
    return found


@pytest.mark.usefixtures("bwrap")
def test_run_works_only_on_selected_repositories_and_caches_by_base_commit(platform: Platform):
    repos = make_repos(platform)
    path = platform.write_campaign("django", targets=list(repos.values()), select=SELECT)

    first = platform.cli("run", "--file", str(path))
    out = first.stdout + first.stderr
    assert "1 of 3 repositories selected (3 evaluated, 0 from the cache)" in out, out
    # the header does not count targets the selection has yet to choose
    assert "(targets chosen as the run begins)" in out and "(0 targets)" not in out
    assert "not selected: acme__new (no requirements*.txt matches" in out
    assert "not selected: acme__bare" in out
    with platform.instance() as instance:
        # Unselected repositories get no partition: nothing is done to them, not even a row.
        assert instance.get_dynamic_partitions("django_targets") == ["acme__old"]
    report = json.loads(platform.cli("report", "django", "--output", "json").stdout)
    assert [row["target"] for row in report] == ["acme__old"]
    assert report[0]["status"] == "pr_open"

    # No base moved: every answer comes from the cache (git grep is not run again).
    cached_before = json.loads(answers_file(platform).read_text())
    second = platform.cli("run", "--file", str(path))
    assert "1 of 3 repositories selected (0 evaluated, 3 from the cache)" in second.stdout
    assert json.loads(answers_file(platform).read_text()) == cached_before

    # `new` goes back to Django 3 on its base branch: it is evaluated again, and selected.
    commit_to(repos["new"], {"requirements-prod.txt": OLD_DJANGO})
    third = platform.cli("run", "--file", str(path))
    assert "2 of 3 repositories selected (1 evaluated, 2 from the cache)" in third.stdout
    report = json.loads(platform.cli("report", "django", "--output", "json").stdout)
    assert {row["target"]: row["status"] for row in report} == {
        "acme__old": "pr_open",
        "acme__new": "pr_open",
    }


def test_validate_checks_the_selector(platform: Platform):
    path = platform.write_campaign(
        "bad-select",
        targets=["/srv/acme/a.git"],
        select={"contains": [{"path": "requirements*.txt", "pattern": "django<(4"}]},
    )
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1
    assert "select.contains.0.pattern" in proc.stderr
    assert "'django<(4' is not a valid regular expression" in proc.stderr
    assert "Traceback" not in proc.stderr

    platform.write_campaign("bad-select", targets=["/srv/acme/a.git"], select={"match": "any"})
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1 and "a selector needs a condition" in proc.stderr

    platform.write_campaign("bad-select", targets=["/srv/acme/a.git"], select={"paths": ["../x"]})
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1 and "select.paths" in proc.stderr


def test_paths_and_any(platform: Platform, tmp_path: Path):
    repos = make_repos(platform)
    cache = RepoCache(tmp_path / "cache")

    def chosen(select: dict) -> set[str]:
        selector = Selector.model_validate(select)
        found = set()
        for name, url in repos.items():
            cache.mirror(url)
            head = run_git(["rev-parse", "HEAD"], Path(url)).strip()
            if selection.evaluate(selector, None, cache, url, head).selected:
                found.add(name)
        return found

    assert chosen({"paths": ["requirements*.txt"]}) == {"old", "new"}
    assert chosen({"paths": ["requirements-*.txt"]}) == {"new"}
    assert chosen({"paths": ["**/test_app.py"]}) == {"old", "new", "bare"}
    assert chosen({"paths": ["test_app.py"]}) == set()  # `*`/no `**`: from the root only
    assert chosen({"paths": ["requirements.txt"], **SELECT}) == {"old"}
    both = {"paths": ["requirements-prod.txt"], **SELECT, "match": "any"}
    assert chosen(both) == {"old", "new"}


def test_discovery_sensor_evaluates_again_when_a_base_branch_moves(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(selection, "RESELECT_AFTER_S", 0.0)  # evaluate on every tick
    repos = make_repos(platform)
    path = platform.write_campaign("django", targets=list(repos.values()), select=SELECT)
    spec = load_one(path, platform.settings()).spec
    assert spec.targets == []  # never evaluated: nothing is a target yet
    with platform.instance() as instance:
        first = build_discovery_sensor(spec)(dg.build_sensor_context(instance=instance))
        (request,) = first.dynamic_partitions_requests
        assert request.partition_keys == ["acme__old"]
        instance.add_dynamic_partitions(spec.partitions_name, request.partition_keys)
        answers = json.loads(answers_file(platform).read_text())
        assert len(answers) == 3  # one answer per base commit seen

        commit_to(repos["new"], {"requirements-prod.txt": OLD_DJANGO})
        second = build_discovery_sensor(spec)(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert second.dynamic_partitions_requests[0].partition_keys == ["acme__new"]
        # Only the moved base was evaluated: one new answer.
        assert len(json.loads(answers_file(platform).read_text())) == 4
        instance.add_dynamic_partitions(spec.partitions_name, ["acme__new"])

        # `old` moves to Django 4: it leaves the campaign (marked removed, its history kept).
        commit_to(repos["old"], {"requirements.txt": NEW_DJANGO})
        third = build_discovery_sensor(spec)(
            dg.build_sensor_context(instance=instance, cursor=second.cursor)
        )
        (mark,) = third.asset_events
        assert mark.partition == "acme__old"


def test_the_examples_validate(platform: Platform):
    project = Path(__file__).resolve().parents[1] / "campaigns"
    examples = [project / "typing-generics-selected.yaml", project / "package-docstrings.yaml"]
    proc = platform.cli("validate", *map(str, examples))
    assert proc.stdout.count("chosen by select/workspaces") == 2, proc.stdout


@pytest.mark.usefixtures("bwrap")
def test_on_github_discovered_repositories_are_selected_by_content(platform: Platform):
    from tests.fake_github import FakeGitHub

    token = "ghp_" + "5" * 36
    with FakeGitHub(token, platform.root / "github") as github:
        github.add_org("acme")
        app = {"app.py": "GREETING = 'OLD'\n", "tests/test_app.py": TEST}
        github.add_repo("acme/old", {**app, "requirements.txt": OLD_DJANGO})
        github.add_repo("acme/new", {**app, "requirements.txt": NEW_DJANGO})
        platform.use_github(github.base_url, token)
        path = platform.write_campaign(
            "django", targets=[], discover={"github": {"org": "acme"}}, select=SELECT
        )
        first = platform.cli("run", "--file", str(path))
        assert "discovered 2 repositories" in first.stdout
        assert "1 of 2 repositories selected (2 evaluated, 0 from the cache)" in first.stdout
        assert github.pr("acme/old", 1).head == "campaign/django"
        assert "campaign/django" not in github.refs("acme/new")

        # `new`'s base moves back to Django 3: only it is fetched and read again.
        github.create_branch("acme/new", "main", {"requirements.txt": OLD_DJANGO})
        second = platform.cli("run", "--file", str(path))
        assert "2 of 2 repositories selected (1 evaluated, 1 from the cache)" in second.stdout
        assert github.pr("acme/new", 1).head == "campaign/django"
        assert token not in second.stdout + second.stderr


def test_a_time_budget_defers_repositories_and_keeps_their_last_answers(platform: Platform):
    repos = make_repos(platform)
    path = platform.write_campaign("django", targets=list(repos.values()), select=SELECT)
    settings = platform.settings()
    spec = load_one(path, settings).spec
    full, found = selection.reselect(spec, settings)
    assert [t.key for t in full.targets] == ["acme__old"] and found.evaluated == 3
    commit_to(repos["new"], {"requirements-prod.txt": OLD_DJANGO})
    # No time left: nothing is looked at, the last answers stand, and it says so.
    same, found = selection.reselect(full, settings, budget_s=0)
    assert [t.key for t in same.targets] == ["acme__old"]
    assert (found.deferred, found.evaluated, found.cached) == (3, 0, 0)
    assert "3 left for the next evaluation (time budget)" in found.summary()
    later, found = selection.reselect(same, settings)
    assert {t.key for t in later.targets} == {"acme__old", "acme__new"}
    assert (found.evaluated, found.cached) == (1, 2)
