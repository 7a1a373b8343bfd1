"""Helpers the forge tests (tests/test_*_forge.py) and the whole-campaign forge tests
(tests/test_*_campaign.py) share: a fake clock the forges wait on, the campaign file they run,
the report they read, the review sensor's decisions, and the check that no token was stored."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.forges.base import ForgeError
from resources.git import GitError, author_env, run_git
from tests.conftest import CODEMOD, Platform


class FakeClock:
    """A clock that only moves when something sleeps on it: waiting costs no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        """The current fake time."""
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move the clock on by it, at once."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def forge_fixtures(make_forge: Callable[[Any, FakeClock], Any]) -> tuple[Any, Any]:
    """A forge test module's `clock` fixture (a `FakeClock`) and `forge` fixture (the forge
    `make_forge(fake, clock)` builds on the module's `fake` fixture, closed afterwards):
    `clock, forge = forge_fixtures(make_forge)`."""

    @pytest.fixture
    def clock() -> FakeClock:
        """The injected clock and sleep."""
        return FakeClock()

    @pytest.fixture
    def forge(fake, clock: FakeClock):
        """The forge under test."""
        with closing(make_forge(fake, clock)) as client:
            yield client

    return clock, forge


# a forge's verbs ---------------------------------------------------------------------------------


def clone(forge: Any, url: str, dest: Path) -> Path:
    """A workspace: a clone over HTTP with the forge's git environment (as a mirror would)."""
    run_git(["clone", "--quiet", url, str(dest)], env=forge.git_env())
    return dest


def commit(ws: Path, text: str) -> str:
    """Commit `text` as app.py in `ws`; returns the sha."""
    (ws / "app.py").write_text(text)
    run_git(["commit", "--quiet", "-am", text.strip()], ws, env=author_env("T", "t@example.com"))
    return run_git(["rev-parse", "HEAD"], ws).strip()


def every_verb_and_error(
    forge: Any, app: str, branch: str, draft: Callable[..., Any], ws: Path,
    discover: Callable[[], Any], wrong: Any,
) -> list[str]:  # fmt: skip
    """Drive `forge` through its verbs on `app` (discovery by `discover`, resolve, a clone at
    `ws`, a push to campaign/two, a pull request created, read and closed) and its errors (a
    stale lease, a push to main, a missing repository, a missing head branch, and `wrong`: the
    forge with a wrong token); returns the errors' messages, for tests that look for leaks."""
    messages: list[str] = []

    def expect_error(fn, *args) -> None:
        with pytest.raises((ForgeError, GitError)) as info:
            fn(*args)
        messages.append(str(info.value))

    discover()
    resolved = forge.resolve(app, None, branch)
    clone(forge, resolved.clone_url, ws)
    run_git(["checkout", "--quiet", "-b", "campaign/two"], ws)
    sha = commit(ws, "GREETING = 'TWO'\n")
    forge.push_branch(app, ws, "campaign/two", sha, None)
    forge.create_pull_request(app, draft(head="campaign/two", labels=["x"], reviewers=["al"]))
    forge.pull_request_status(app, 1)
    forge.close_pull_request(app, 1, "bye")
    newer = commit(ws, "GREETING = 'THREE'\n")
    expect_error(forge.push_branch, app, ws, "campaign/two", newer, "0" * 40)  # stale lease
    expect_error(forge.push_branch, app, ws, "main", sha, None)
    expect_error(forge.resolve, "acme/nope", None, branch)
    expect_error(forge.create_pull_request, app, draft(head="campaign/missing"))
    expect_error(wrong.resolve, app, None, branch)
    return messages


def assert_no_secret_in(haystacks: dict[str, str], secrets: list[str]) -> None:
    """None of `secrets` is in any of the texts (named by where they come from)."""
    for secret in secrets:
        for where, text in haystacks.items():
            assert secret not in text, f"the token leaked into {where}"


# whole campaigns ---------------------------------------------------------------------------------


def write_campaign(platform: Platform, discover: dict, pull_request: dict, **extra: Any) -> Path:
    """The campaign `rename` (OLD to NEW, verified by the tests) in the platform's campaigns
    folder, discovering with `discover` and opening pull requests as `pull_request` says;
    `extra` adds top-level fields (e.g. `forge`)."""
    data = {
        "name": "rename",
        "description": "Rename OLD to NEW.",
        **extra,
        "discover": discover,
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": "python -m pytest -q -p no:cacheprovider"}],
        "pull_request": pull_request,
    }
    path = platform.campaigns / "rename.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def edit_campaign(path: Path, **changes: Any) -> dict:
    """Change top-level fields of the campaign file (a dict value is merged into the field's);
    returns the new contents."""
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    path.write_text(yaml.safe_dump(data))
    return data


def report(platform: Platform) -> dict[str, dict]:
    """`report rename --output json`, by target."""
    rows = json.loads(platform.cli("report", "rename", "--output", "json").stdout)
    return {r["target"]: r for r in rows}


def assert_no_secret_stored(platform: Platform, secrets: list[str]) -> None:
    """None of `secrets` (a token and its encodings) is in any byte the platform stored."""
    for root in (Path(platform.env["DAGSTER_HOME"]), Path(platform.env["ORCHESTRATOR_DATA_DIR"])):
        for file in root.rglob("*"):
            if file.is_file():
                stored = file.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in stored, f"{secret[:12]}... found in {file}"


def review_sensor_tick(platform: Platform, path: Path, *, campaign_forge: bool) -> tuple:
    """One tick of the campaign's review sensor: (the partition keys it asks runs for, the
    review decisions recorded, by target). With `campaign_forge`, the sensor asks the
    campaign's forge router (as the definitions do); else the platform's default forge."""
    from dagster import build_sensor_context

    from orchestrator_assets.assets.factory import build_campaign_definitions
    from orchestrator_assets.spec.catalog import load_one
    from orchestrator_assets.stages import review
    from resources.build import build_forge
    from sensors.review import build_review_sensor

    loaded = load_one(path, platform.settings())
    defs = build_campaign_definitions(loaded.spec, loaded.profile)
    job = next(j for j in defs.jobs if j.name == "rename_targets")
    spec = loaded.spec if campaign_forge else None
    sensor = build_review_sensor(loaded.spec, job, lambda: build_forge(platform.settings(), spec))
    with platform.instance() as instance:
        result = sensor(build_sensor_context(instance=instance))
        made = {d.target: d for d in review.decisions_since(instance, loaded.spec, 0)[0]}
    return {r.partition_key for r in result.run_requests}, made
