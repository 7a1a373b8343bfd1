"""Gates that fail closed: no sandbox means no run (unless a profile opts out by name), and
settings that cannot be honoured are refused rather than ignored."""

from __future__ import annotations

import pytest

from orchestrator_assets.assets import history
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.spec.errors import OrchestratorError
from resources.sandboxes import local
from resources.sandboxes.local import LocalSandboxProvider, SandboxUnavailable
from tests.conftest import Platform, statuses


def test_without_bubblewrap_the_local_sandbox_refuses_to_run(platform: Platform, monkeypatch):
    monkeypatch.setattr(local, "bwrap_path", lambda: None)
    with pytest.raises(SandboxUnavailable, match=r"apt-get install bubblewrap"):
        LocalSandboxProvider(platform.root / "sandboxes")

    path = platform.write_campaign()
    with pytest.raises(OrchestratorError) as refused:
        platform.run(path)
    message = str(refused.value)
    assert str(path) in message and "profile 'default'" in message
    assert "bubblewrap (bwrap) is not installed" in message and "isolation: none" in message
    # nothing ran: no target has a record, no branch or PR reached the forge
    alpha = platform.fleet / "acme" / "alpha.git"
    assert not list((alpha / "pulls").glob("*.json")) if (alpha / "pulls").exists() else True
    with platform.instance() as instance:
        assert instance.get_runs() == []


def test_a_profile_that_says_isolation_none_runs_on_the_host(platform: Platform, monkeypatch):
    monkeypatch.setattr(local, "bwrap_path", lambda: None)
    profiles = platform.root / "profiles.yaml"
    profiles.write_text("profiles:\n  plain:\n    isolation: none\n")
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(profiles))
    path = platform.write_campaign(profile="plain")
    outcome = platform.run(path)
    assert statuses(outcome.report)["acme__alpha"] == "pr_open"
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        changes = history.latest_changes(instance, spec)
    assert changes["acme__alpha"].isolation == "local:none"  # the record says how it ran


def test_isolation_none_is_refused_for_a_container_profile(platform: Platform):
    profiles = platform.root / "profiles.yaml"
    profiles.write_text("profiles:\n  odd:\n    provider: docker\n    isolation: none\n")
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(profiles))
    proc = platform.cli("validate", str(platform.write_campaign(profile="odd")), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "isolation: none is for the local provider only" in proc.stdout + proc.stderr


def test_a_branch_prefix_setting_is_refused_not_ignored(platform: Platform):
    platform.write_campaign()
    platform.env["ORCHESTRATOR_BRANCH_PREFIX"] = "bot/"
    proc = platform.cli("list", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ORCHESTRATOR_BRANCH_PREFIX is not a setting" in proc.stderr
    assert "'campaign/'" in proc.stderr


def test_a_transformation_that_touches_git_metadata_is_refused(platform: Platform):
    """Unisolated (isolation: none), a command can write the workspace's .git: anything there
    besides config (attributes, hooks) fails the change too, and nothing is pushed."""
    profiles = platform.root / "profiles.yaml"
    profiles.write_text("profiles:\n  plain:\n    isolation: none\n")
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(profiles))
    plant = (
        "python -c \"import pathlib; p = pathlib.Path('app.py'); "
        "p.write_text(p.read_text().replace('OLD', 'NEW')); "
        "pathlib.Path('.git/info').mkdir(exist_ok=True); "
        "pathlib.Path('.git/info/attributes').write_text('* filter=evil')\""
    )
    path = platform.write_campaign(
        profile="plain", transformation={"kind": "deterministic", "command": plant}
    )
    outcome = platform.run(path, ["acme__alpha"])
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["status"] == "change_failed"
    assert row["reason"] == "the transformation modified the workspace's .git"
    assert not (platform.fleet / "acme" / "alpha.git" / "pulls").exists() or not list(
        (platform.fleet / "acme" / "alpha.git" / "pulls").glob("*.json")
    )
