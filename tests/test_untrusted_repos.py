"""Target repositories are untrusted: their hooks, config and filters never run on the host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import create_repo
from tests.conftest import Platform, app_repo, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

HOOKS = (
    "pre-receive", "update", "post-receive", "post-update", "reference-transaction",
    "push-to-checkout", "post-checkout", "pre-commit", "commit-msg", "post-commit",
    "pre-push", "pre-auto-gc", "post-merge", "post-rewrite",
)  # fmt: skip


def hook_script(markers: Path) -> str:
    return f'#!/bin/sh\ntouch "{markers}/$(basename "$0")"\n'


def test_hooks_in_target_repositories_never_run(platform: Platform, tmp_path: Path):
    markers = tmp_path / "markers"
    markers.mkdir()
    script = hook_script(markers)
    bare = create_repo(
        platform.fleet, app_repo("hooked", "GREETING = 'OLD'\n", hooks=dict.fromkeys(HOOKS, script))
    )
    # A non-bare target whose own config would run code on any git command inside it.
    work = platform.fleet / "acme" / "worktree"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    for hook in HOOKS:
        (work / ".git" / "hooks" / hook).write_text(script)
        (work / ".git" / "hooks" / hook).chmod(0o755)
    with open(work / ".git" / "config", "a") as config:
        config.write(
            f'[core]\n\tfsmonitor = touch "{markers}/fsmonitor"\n'
            f'[filter "evil"]\n\tsmudge = touch "{markers}/smudge"\n'
            f'\tclean = touch "{markers}/clean"\n'
        )
    (work / ".gitattributes").write_text("* filter=evil\n")

    path = platform.write_campaign("hooks", targets=[str(bare), str(work)])
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__hooked": "pr_open", "acme__worktree": "pr_open"}
    assert sorted(p.name for p in markers.iterdir()) == []


def test_transformation_cannot_plant_a_hook_for_the_host(platform: Platform, tmp_path: Path):
    marker = tmp_path / "planted"
    plant = (
        "mkdir -p .git/hooks; "
        f"printf '#!/bin/sh\\ntouch {marker}\\n' > .git/hooks/pre-commit; "
        "chmod +x .git/hooks/pre-commit; "
        f"git config core.fsmonitor 'touch {marker}'; "
        "sed -i s/OLD/NEW/ app.py"
    )
    bare = create_repo(platform.fleet, app_repo("victim", "GREETING = 'OLD'\n"))
    path = platform.write_campaign(
        "plant", targets=[str(bare)],
        transformation={"kind": "deterministic", "command": ["sh", "-c", plant]},
    )  # fmt: skip
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__victim": "pr_open"}
    assert not marker.exists()
