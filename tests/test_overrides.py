"""Per-target overrides: verifiers added, replaced or skipped, and the PR's base branch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import create_repo
from orchestrator_assets.spec.campaign import parse_campaign
from orchestrator_assets.spec.errors import SpecError
from tests.conftest import CODEMOD, Platform, app_repo, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

FAIL = ["python", "-c", "raise SystemExit(1)"]
PYTEST = "python -m pytest -q -p no:cacheprovider"


def test_targets_add_replace_and_skip_verifiers_and_choose_the_pr_base(platform: Platform):
    repos = {n: create_repo(platform.fleet, app_repo(n, "GREETING = 'OLD'\n"))
             for n in ("plain", "skips", "adds", "replaces")}  # fmt: skip
    path = platform.write_campaign(
        "overrides",
        targets=[
            str(repos["plain"]),
            {"repo": str(repos["skips"]), "skip_verifiers": ["strict"], "pr_base": "develop"},
            {"repo": str(repos["adds"]), "skip_verifiers": ["strict"],
             "verifiers": [{"name": "extra", "command": FAIL}]},
            {"repo": str(repos["replaces"]),
             "verifiers": [{"name": "strict", "command": PYTEST}]},
        ],
        transformation={"kind": "deterministic", "command": CODEMOD},
        verifiers=[
            {"name": "test", "command": PYTEST},
            {"name": "strict", "command": FAIL},
        ],
    )  # fmt: skip
    outcome = platform.run(path)
    assert statuses(outcome.report) == {
        "acme__plain": "verification_failed",  # the campaign's strict verifier fails
        "acme__skips": "pr_open",  # ...but this target skips it
        "acme__adds": "verification_failed",  # its own extra verifier fails
        "acme__replaces": "pr_open",  # its strict is a different command
    }
    rows = outcome.report.set_index("target")
    assert rows.loc["acme__skips", "verifiers"] == "test:pass"  # what applied
    assert rows.loc["acme__adds", "verifiers"] == "test:pass, extra:fail"
    assert rows.loc["acme__replaces", "verifiers"] == "test:pass, strict:pass"
    pr = json.loads((repos["skips"] / "pulls" / "1.json").read_text())
    assert pr["base"] == "develop"


def test_skipping_an_unknown_verifier_is_a_spec_error(tmp_path: Path):
    data = {
        "name": "x",
        "targets": [{"repo": "/a/b", "skip_verifiers": ["lnt"]}],
        "transformation": {"kind": "deterministic", "command": "true"},
        "verifiers": [{"name": "lint", "command": "ruff"}],
    }
    with pytest.raises(SpecError) as info:
        parse_campaign(data, file="c.yaml", base_dir=tmp_path)
    assert "targets.0.skip_verifiers: 'lnt' is not a verifier of the campaign (known: lint)" in str(
        info.value
    )
