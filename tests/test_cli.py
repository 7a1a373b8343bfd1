"""The `orchestrator` command as a user runs it: validate, ad-hoc run, report and list."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import CODEMOD, Platform


def test_validate_reports_every_problem_without_a_traceback(platform: Platform):
    bad = platform.campaigns / "bad.yaml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("name: Bad\ntargets: []\ntransformation: {kind: deterministic}\nextra: 1\n")
    good = platform.write_campaign("good", targets=["/srv/acme/x.git"])
    proc = platform.cli("validate", str(good), str(bad), check=False)
    assert proc.returncode == 1
    assert f"✓ {good}: campaign 'good', 1 target(s)" in proc.stdout
    assert f"{bad}: name: 'Bad' is not a valid campaign name" in proc.stderr
    assert f"{bad}: targets: List should have at least 1 item" in proc.stderr
    assert (
        f"{bad}: transformation.deterministic: a deterministic transformation needs a `command` "
        "or an `image`" in proc.stderr
    )
    assert f"{bad}: extra: unknown field" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_validate_names_an_unknown_profile(platform: Platform):
    path = platform.write_campaign("p", targets=["/srv/acme/x.git"], profile="gpu")
    proc = platform.cli("validate", str(path), check=False)
    assert proc.returncode == 1
    assert f"{path}: profile: unknown profile 'gpu'; known: default" in proc.stderr


@pytest.mark.usefixtures("bwrap")
def test_adhoc_run_writes_the_campaign_and_reports_json(platform: Platform):
    repos = [str(p) for p in platform.make_fleet()[:3]]  # alpha, beta, gamma
    args = ["run", "--name", "adhoc", "--command", CODEMOD, "--verifier",
            "test:python -m pytest -q -p no:cacheprovider", "--output", "json"]  # fmt: skip
    for repo in repos:
        args += ["--repo", repo]
    proc = platform.cli(*args)
    written = platform.campaigns / "adhoc.yaml"
    spec = yaml.safe_load(written.read_text())
    assert spec["name"] == "adhoc" and [t["repo"] for t in spec["targets"]] == repos
    assert spec["verifiers"] == [
        {"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}
    ]
    # progress per target while it works, then the report as JSON
    assert "acme__alpha: changed 1 file(s)" in proc.stdout
    report = json.loads(proc.stdout[proc.stdout.index("[\n") :])
    by_target = {row["target"]: row for row in report}
    assert by_target["acme__alpha"]["status"] == "pr_open"
    assert by_target["acme__alpha"]["pr_url"].startswith("file://")
    assert by_target["acme__gamma"]["status"] == "no_change"
    assert {"target", "status", "pr_url", "cost_usd"} <= set(report[0])

    # the same command again is fine; a different one for the same name is refused
    platform.cli(*args)
    other = platform.cli("run", "--name", "adhoc", "--repo", repos[0], "--command", "true",
                         check=False)  # fmt: skip
    assert other.returncode == 2 and "already exists with a different campaign" in other.stderr

    listed = json.loads(platform.cli("list", "--output", "json").stdout)
    assert listed == [
        {
            "campaign": "adhoc",
            "file": str(written),
            "targets": 3,
            "statuses": {"no_change": 1, "pr_open": 2},
            "cost_usd": 0.0,
        }
    ]
    table = platform.cli("report", "adhoc").stdout
    assert "acme__beta" in table and "pr_open" in table and "3 targets" in table


def test_user_mistakes_are_one_clear_line(platform: Platform):
    proc = platform.cli("report", "nope", check=False)
    assert proc.returncode == 2
    assert "error: no campaign named 'nope'" in proc.stderr and "Traceback" not in proc.stderr

    proc = platform.cli("run", "--name", "x", "--repo", "/r", "--command", "true",
                        "--verifier", "no-colon", check=False)  # fmt: skip
    assert proc.returncode == 2 and "--verifier 'no-colon': expected NAME:COMMAND" in proc.stderr

    path = platform.write_campaign("agent", targets=["/srv/acme/x.git"],
                                   transformation={"kind": "agentic", "prompt": "hi"})  # fmt: skip
    platform.env["CLAUDE_BIN"] = str(platform.root / "no-claude-here")
    proc = platform.cli("run", "--file", str(path), check=False)
    assert proc.returncode == 2 and "agentic campaigns need the Claude Code CLI" in proc.stderr
    assert "make agent-cli" in proc.stderr

    path = platform.write_campaign("one", targets=["/srv/acme/x.git"])
    proc = platform.cli("run", "--file", str(path), "--target", "acme__nope", check=False)
    assert proc.returncode == 2 and "unknown target(s) acme__nope; known: acme__x" in proc.stderr


@pytest.mark.usefixtures("bwrap")
def test_missing_repository_is_a_per_target_failure(platform: Platform):
    alpha = str(platform.make_fleet()[0])
    path = platform.write_campaign("partial", targets=[alpha, str(platform.root / "gone/x.git")])
    proc = platform.cli("run", "--file", str(path), "--output", "json")
    report = {r["target"]: r for r in json.loads(proc.stdout[proc.stdout.index("[\n") :])}
    assert report["acme__alpha"]["status"] == "pr_open"
    assert report["gone__x"]["status"] == "change_failed"
    assert "repository not found" in report["gone__x"]["reason"]
