"""The whole path from YAML to pull-request records, through a real Dagster instance."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, AssetRecordsFilter

from orchestrator_assets.assets import history
from orchestrator_assets.assets.dagster_private import PartitionKeyFilter
from orchestrator_assets.assets.runner import campaign_definitions
from orchestrator_assets.spec.catalog import load_one
from resources.forges.local import LocalForge
from resources.git import run_git
from tests.conftest import Platform, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

BRANCH = "campaign/rename"


def pr_records(repo: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((repo / "pulls").glob("*.json"))]


def branch_sha(repo: Path, branch: str = BRANCH) -> str | None:
    out = run_git(["for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}"], repo)
    return out.strip() or None


def test_campaign_opens_prs_only_for_verified_changes(platform: Platform):
    path = platform.write_campaign()
    outcome = platform.run(path)
    assert outcome.failed_runs == []
    got = statuses(outcome.report)
    assert got == {
        "acme__alpha": "pr_open",
        "acme__beta": "pr_open",
        "acme__gamma": "no_change",
        "acme__delta": "change_failed",
        "acme__epsilon": "verification_failed",
    }
    rows = outcome.report.set_index("target")
    assert "exited with code 3" in rows.loc["acme__delta", "reason"]
    assert rows.loc["acme__epsilon", "failed_verifiers"] == "test"

    alpha = platform.fleet / "acme" / "alpha.git"
    (pr,) = pr_records(alpha)
    assert pr["state"] == "open" and pr["head"] == BRANCH and pr["base"] == "main"
    assert pr["head_sha"] == branch_sha(alpha) == rows.loc["acme__alpha", "head_sha"]
    assert "app.py" in pr["body"] and "| test | passed |" in pr["body"]
    # the change really is the codemod's, on top of the base branch
    assert run_git(["show", f"{BRANCH}:app.py"], alpha) == "GREETING = 'NEW'\n"
    assert run_git(["rev-parse", f"{BRANCH}~1"], alpha).strip() == branch_sha(alpha, "main")

    beta = platform.fleet / "acme" / "beta.git"
    assert pr_records(beta)[0]["base"] == "master"  # the repository's default branch
    # blocked and failed targets get no PR, and nothing unverified reaches the forge: the change
    # that fails its verifier is kept in the repository cache, its branch never pushed (a push
    # would start the target's CI with its secrets on unverified code)
    for name in ("gamma", "delta", "epsilon"):
        assert pr_records(platform.fleet / "acme" / f"{name}.git") == []
        assert branch_sha(platform.fleet / "acme" / f"{name}.git") is None

    # a re-run finds the unpublished change in the cache: it is not made again, still not pushed
    again = platform.run(path)
    rows = again.report.set_index("target")
    assert rows.loc["acme__epsilon", "status"] == "verification_failed"
    assert rows.loc["acme__epsilon", "head_sha"] == outcome.report.set_index("target").loc[
        "acme__epsilon", "head_sha"]  # fmt: skip
    assert branch_sha(platform.fleet / "acme" / "epsilon.git") is None
    assert rows.loc["acme__alpha", "head_sha"] == branch_sha(alpha)


def test_verifier_results_are_per_target_blocking_asset_checks(platform: Platform):
    path = platform.write_campaign()
    outcome = platform.run(path)  # one range run over all five targets
    heads = outcome.report.set_index("target")["head_sha"]
    check = AssetCheckKey(AssetKey(["rename", "verification"]), "test")
    defs = campaign_definitions(load_one(path, platform.settings()), platform.settings())
    (spec,) = [
        a.get_spec_for_check_key(check)
        for a in defs.resolve_asset_graph().assets_defs
        if check in a.check_keys
    ]
    assert spec.blocking  # what the UI shows beside the check
    with platform.instance() as instance:
        storage = instance.event_log_storage
        for target, passed in (("acme__alpha", True), ("acme__epsilon", False)):
            record = storage.get_latest_asset_check_execution_by_key(
                [check], partition_filter=PartitionKeyFilter(key=target)
            )[check]
            evaluation = record.event.dagster_event.event_specific_data
            # a failure is an ERROR for that target's partition (not the run summary's warning)
            assert evaluation.passed is passed and evaluation.partition == target
            assert evaluation.severity == AssetCheckSeverity.ERROR
            assert evaluation.metadata["head_sha"].value == heads[target]
            assert evaluation.metadata["exit_code"].value == (0 if passed else 1)
            assert "duration_s" in evaluation.metadata
            output = evaluation.metadata["output"].value
            assert ("1 passed" in output) if passed else ("AssertionError" in output)
        # and it blocks, in a range run too: that target's PR stage is held, the others go on
        prs = history.latest_materializations(instance, AssetKey(["rename", "pull_request"]),
                                              ["acme__alpha", "acme__epsilon"])  # fmt: skip
    assert pr_records(platform.fleet / "acme" / "epsilon.git") == []
    assert len(pr_records(platform.fleet / "acme" / "alpha.git")) == 1
    assert set(prs) == {"acme__alpha", "acme__epsilon"}
    blocked = outcome.report.set_index("target").loc["acme__epsilon", "reason"]
    assert blocked == "verifier failed: test"


def test_rerun_repeats_nothing_and_opens_no_duplicate_pr(platform: Platform):
    path = platform.write_campaign()
    first = platform.run(path)
    alpha = platform.fleet / "acme" / "alpha.git"
    head_before = branch_sha(alpha)
    pr_before = pr_records(alpha)

    second = platform.run(path)
    assert statuses(second.report) == statuses(first.report)
    assert branch_sha(alpha) == head_before  # no new commit, no push
    assert pr_records(alpha) == pr_before  # same single PR, untouched
    with platform.instance() as instance:
        record = instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey(["rename", "change"]), asset_partitions=["acme__alpha"]
            ),
            limit=1,
        ).records[0]
        assert record.asset_materialization.metadata["reused"].value is True


def test_rerun_retries_only_what_failed(platform: Platform):
    path = platform.write_campaign()
    platform.run(path)
    delta = platform.fleet / "acme" / "delta.git"
    # A human fixes delta's base branch; the re-run picks it up and leaves alpha alone.
    _commit_file(delta, "app.py", "GREETING = 'OLD'\n")
    alpha_head = branch_sha(platform.fleet / "acme" / "alpha.git")
    outcome = platform.run(path)
    got = statuses(outcome.report)
    assert got["acme__delta"] == "pr_open"
    assert got["acme__alpha"] == "pr_open"
    assert branch_sha(platform.fleet / "acme" / "alpha.git") == alpha_head
    assert len(pr_records(delta)) == 1


def test_base_moving_updates_the_existing_pr(platform: Platform):
    path = platform.write_campaign()
    platform.run(path)
    alpha = platform.fleet / "acme" / "alpha.git"
    (before,) = pr_records(alpha)
    _commit_file(alpha, "README.md", "new upstream work\n")
    outcome = platform.run(path, targets=["acme__alpha"])
    assert statuses(outcome.report)["acme__alpha"] == "pr_open"
    (after,) = pr_records(alpha)  # still one PR, now at the new head
    assert after["number"] == before["number"]
    assert after["head_sha"] != before["head_sha"]
    assert run_git(["rev-parse", f"{BRANCH}~1"], alpha).strip() == branch_sha(alpha, "main")


def test_pr_closed_by_a_human_is_not_reopened(platform: Platform):
    path = platform.write_campaign()
    platform.run(path)
    alpha = platform.fleet / "acme" / "alpha.git"
    LocalForge().close_pull_request(str(alpha), 1, "not now")
    outcome = platform.run(path)
    assert statuses(outcome.report)["acme__alpha"] == "closed"
    assert [pr["state"] for pr in pr_records(alpha)] == ["closed"]


def test_single_target_run_gates_like_a_range_run(platform: Platform):
    """A backfill run per partition (what the UI launches) does the same work as a range run."""
    path = platform.write_campaign()
    for target in ("acme__alpha", "acme__epsilon", "acme__gamma"):
        platform.run(path, targets=[target])  # one target: a single-partition run
    got = statuses(platform.run(path, targets=["acme__alpha"]).report)
    assert got["acme__alpha"] == "pr_open"
    assert got["acme__epsilon"] == "verification_failed"
    assert got["acme__gamma"] == "no_change"
    assert got["acme__delta"] == "pending"
    assert pr_records(platform.fleet / "acme" / "epsilon.git") == []


def _commit_file(bare: Path, name: str, text: str) -> None:
    """Commit a file on the default branch of a bare repository, as a developer would."""
    work = bare.parent / f"{bare.stem}-work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    (work / name).write_text(text)
    git = ["git", "-c", "user.name=Dev", "-c", "user.email=dev@localhost", "-C", str(work)]
    subprocess.run([*git, "add", name], check=True)
    subprocess.run([*git, "commit", "-qm", f"update {name}"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True)


def test_report_frame_is_stored_by_the_io_manager(platform: Platform):
    from orchestrator_assets.assets.runner import campaign_definitions
    from orchestrator_assets.spec.catalog import load_one

    path = platform.write_campaign()
    outcome = platform.run(path)
    defs = campaign_definitions(load_one(path, platform.settings()), platform.settings())
    with platform.instance() as instance:
        stored = defs.load_asset_value(AssetKey(["rename", "report"]), instance=instance)
        (event,) = instance.fetch_materializations(AssetKey(["rename", "report"]), limit=1).records
    assert statuses(stored) == statuses(outcome.report)
    assert list(stored.columns[:2]) == ["target", "status"]
    metadata = event.asset_materialization.metadata
    assert re.search(
        r"\|\s*acme__epsilon\s*\|\s*verification_failed\s*\|", metadata["report"].value
    )
    assert metadata["status_pr_open"].value == 2 and metadata["cost_usd"].value == 0.0
