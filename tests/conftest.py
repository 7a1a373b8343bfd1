"""Shared fixtures: a fleet of real git repositories, a platform with its own Dagster home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator_assets.demo_fleet import RepoSpec, create_fleet

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def require(condition: bool, reason: str) -> None:
    """Skip locally (loudly) when a real part is missing; under CI=true that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(f"SKIPPED, NOT TESTED: {reason}")


# Modules that share one Docker engine and check that no platform container is left behind:
# with `pytest -n` (pytest-xdist, `--dist loadgroup`) they run on one worker, one after another,
# so that one module's containers are never taken for another's leftovers.
ONE_ENGINE = {"test_docker", "test_gvisor", "test_images_deploy", "test_sandbox_parity"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the modules that share the Docker engine in one xdist group."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in ONE_ENGINE:
            item.add_marker(pytest.mark.xdist_group("docker-engine"))


@pytest.fixture(autouse=True)
def no_inherited_defs_state_storage():
    """Each test starts without Dagster's "current definitions-state storage".

    Dagster keeps it in a context variable that entering an instance sets; one left behind by
    an earlier test points at a closed instance, and resolving definitions then fails with
    "Attempted to resolve undefined DagsterInstance weakref" (seen only in full-suite runs).
    """
    from orchestrator_assets.assets.dagster_private import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def bwrap() -> None:
    """Tests that need bubblewrap for sandbox isolation."""
    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")


# A codemod every test fleet shares: rename OLD to NEW in app.py; exit 3 when app.py says BROKEN.
CODEMOD = (
    "python -c \"import pathlib, sys; p = pathlib.Path('app.py'); s = p.read_text(); "
    "sys.exit(3) if 'BROKEN' in s else p.write_text(s.replace('OLD', 'NEW'))\""
)
TEST = "from app import GREETING\n\n\ndef test_greeting():\n    assert GREETING in ('OLD', 'NEW')\n"
STRICT_TEST = "from app import GREETING\n\n\ndef test_greeting():\n    assert GREETING == 'OLD'\n"


def app_repo(name: str, app: str, test: str = TEST, branch: str = "main", **kw) -> RepoSpec:
    """A tiny Python repository with app.py and a test."""
    return RepoSpec(name, {"app.py": app, "tests/test_app.py": test}, branch=branch, **kw)


FLEET = [
    app_repo("alpha", "GREETING = 'OLD'\n"),  # changed, verified -> PR
    app_repo("beta", "GREETING = 'OLD'\n", branch="master"),  # default branch is master
    app_repo("gamma", "GREETING = 'NEW'\n"),  # nothing to change
    app_repo("delta", "GREETING = 'OLD'  # BROKEN\n"),  # the codemod fails here
    app_repo("epsilon", "GREETING = 'OLD'\n", STRICT_TEST),  # the change breaks its test
]


@dataclass
class Platform:
    """A platform installation in a temporary directory: campaigns, data and Dagster home."""

    root: Path
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch

    def set_env(self, key: str, value: str) -> None:
        """Set a variable for this test's CLI subprocesses and its in-process runs alike
        (undone when the test ends)."""
        self.env[key] = value
        self.monkeypatch.setenv(key, value)

    def use_github(self, api_url: str, token: str) -> None:
        """Point this platform at a GitHub API server (the fake one on loopback), unpaced."""
        for key, value in {
            "ORCHESTRATOR_FORGE": "github",
            "ORCHESTRATOR_GITHUB_API_URL": api_url,
            "ORCHESTRATOR_GITHUB_WRITE_INTERVAL_S": "0",
            "GITHUB_TOKEN": token,
        }.items():
            self.set_env(key, value)

    def use_forges(self, forges: dict, env: dict[str, str] | None = None) -> Path:
        """Give this platform named forges: write a forges file (`{"corp-gitlab": {"kind":
        "gitlab", ...}}` becomes its `forges:`), point ORCHESTRATOR_FORGES at it and set `env`
        (the forges' token variables). Returns the file."""
        path = self.root / "forges.yaml"
        path.write_text(yaml.safe_dump({"forges": forges}, sort_keys=False))
        self.set_env("ORCHESTRATOR_FORGES", str(path))
        for key, value in (env or {}).items():
            self.set_env(key, value)
        return path

    @property
    def campaigns(self) -> Path:
        return self.root / "campaigns"

    @property
    def fleet(self) -> Path:
        return self.root / "fleet"

    def make_fleet(self, repos: list[RepoSpec] = FLEET) -> list[Path]:
        return create_fleet(self.fleet, repos)

    def write_campaign(self, name: str = "rename", targets: list | None = None, **fields) -> Path:
        data = {
            "name": name,
            "description": "Rename OLD to NEW.",
            "targets": targets if targets is not None else [str(p) for p in self.make_fleet()],
            "transformation": {"kind": "deterministic", "command": CODEMOD},
            "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
            **fields,
        }
        path = self.campaigns / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [ORCHESTRATOR, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"orchestrator {args} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def instance(self):
        from dagster import DagsterInstance

        return DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def settings(self):
        from orchestrator_assets.spec.settings import Settings

        return Settings()

    def run(self, path: Path, targets: list[str] | None = None):
        from orchestrator_assets.assets.runner import run_campaign
        from orchestrator_assets.spec.catalog import load_one

        settings = self.settings()
        campaign = load_one(path, settings)
        with self.instance() as instance:
            return run_campaign(campaign, instance, settings, targets)


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """A fresh platform: its own campaigns folder, data folder and DAGSTER_HOME."""
    from orchestrator_assets.spec.settings import Settings, ensure_dagster_home

    env = {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        "ORCHESTRATOR_CAMPAIGNS_DIR": str(tmp_path / "campaigns"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The CLI's output is read from a pipe, as a user's script reads it; a terminal width that
    # the test runner exports (pytest-xdist's workers have COLUMNS) would size its tables.
    for key in ("COLUMNS", "LINES"):
        monkeypatch.delenv(key, raising=False)
    ensure_dagster_home(Settings())
    return Platform(root=tmp_path, env={**os.environ, **env}, monkeypatch=monkeypatch)


def statuses(frame) -> dict[str, str]:
    """target -> status of a report frame."""
    return dict(zip(frame["target"], frame["status"], strict=True))


# The session's PostgreSQL server and a platform on it (tests/postgres.py), for every test module.
from tests.postgres import pg_platform, postgres  # noqa: E402, F401
