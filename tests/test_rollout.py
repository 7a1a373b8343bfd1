"""Rollout waves: a campaign publishes its first wave, holds the rest unpushed, and the rollout
sensor opens the next wave once the first is merged (or halts the rollout when it fails) —
against real PRs on the local forge, the real CLI and a real Dagster instance."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from orchestrator_assets.assets.runner import campaign_definitions
from orchestrator_assets.reports import report
from orchestrator_assets.spec.catalog import load_one
from orchestrator_assets.spec.errors import SpecError
from resources.forges.local import LocalForge
from resources.git import run_git
from resources.notify import NotifierResource
from sensors.pr_status import build_pr_status_sensor
from sensors.rollout import build_rollout_sensor
from tests.conftest import Platform, app_repo, statuses
from tests.test_review import slack  # noqa: F401 (the Slack receiver fixture)

FLEET = [
    app_repo("alpha", "GREETING = 'OLD'\n"),
    app_repo("beta", "GREETING = 'OLD'\n"),
    app_repo("zeta", "GREETING = 'OLD'\n"),
]
KEYS = ["acme__alpha", "acme__beta", "acme__zeta"]


def bare(platform: Platform, name: str) -> Path:
    return platform.fleet / "acme" / f"{name}.git"


def tick(sensor, instance, cursor: str | None) -> dg.SensorResult:
    """Evaluate a sensor and write its events to the instance, as the daemon does."""
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def launch(platform: Platform, path: Path, request: dg.RunRequest) -> None:
    """Run what a sensor requested, as the daemon would: the targets job for its partition."""
    campaign = load_one(path, platform.settings())
    job = campaign_definitions(campaign, platform.settings()).resolve_job_def(
        f"{campaign.spec.id}_targets"
    )
    with platform.instance() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
    assert result.success


@pytest.fixture
def rollout_campaign(platform: Platform, bwrap: None):
    targets = [str(p) for p in platform.make_fleet(FLEET)]
    return platform.write_campaign(
        "waves",
        targets=targets,
        rollout={"waves": [1, "all"], "wait_for": "merged", "halt_failure_rate": 0.2},
    )


def test_first_wave_publishes_the_rest_waits_and_opens_once_it_merged(platform, rollout_campaign):
    path = rollout_campaign
    out = platform.cli("run", "--file", str(path))
    assert "rollout: wave 1 of 2 open" in out.stdout
    frame = report.build_report(platform.instance(), load_one(path, platform.settings()).spec)
    assert statuses(frame) == {"acme__alpha": "pr_open", "acme__beta": "pending",
                               "acme__zeta": "pending"}  # fmt: skip
    rows = {r["target"]: r for r in frame.to_dict("records")}
    assert [rows[k]["wave"] for k in KEYS] == [1, 2, 2]
    assert rows["acme__beta"]["reason"] == "waiting for wave 2"
    # held before publishing: no branch pushed, no PR
    for name in ("beta", "zeta"):
        assert not (bare(platform, name) / "pulls").exists() or not list(
            (bare(platform, name) / "pulls").glob("*.json")
        )
        refs = run_git(["for-each-ref", "--format=%(refname)"], bare(platform, name))
        assert "refs/heads/campaign/" not in refs

    spec = load_one(path, platform.settings()).spec
    noted: list[tuple[str, str]] = []
    waves = build_rollout_sensor(spec, _job(platform, path), notifier_getter=lambda: _note(noted))
    status = build_pr_status_sensor(spec, lambda: LocalForge())
    with platform.instance() as instance:
        first = tick(waves, instance, None)
        assert not first.run_requests  # wave 1 is not merged yet
        LocalForge().merge_pull_request(str(bare(platform, "alpha")), 1)
        tick(status, instance, None)  # the PR status sensor sees it merged
        second = tick(waves, instance, first.cursor)
        requested = {r.partition_key: r for r in second.run_requests}
        assert set(requested) == {"acme__beta", "acme__zeta"}
        assert requested["acme__beta"].run_key == "wave2:acme__beta"
        assert [k for k, _ in noted] == ["rollout_wave"]
        # a later tick asks for nothing new (Dagster would also drop a repeated run key)
        assert json.loads(second.cursor)["open_wave"] == 2

    for request in second.run_requests:
        launch(platform, path, request)
    with platform.instance() as instance:
        frame = report.build_report(instance, spec)
        assert statuses(frame) == {"acme__alpha": "merged", "acme__beta": "pr_open",
                                   "acme__zeta": "pr_open"}  # fmt: skip
        assert frame.attrs["rollout"].startswith("wave 2 of 2 open")


def test_a_failing_wave_halts_the_rollout_with_a_notification(platform, rollout_campaign, slack):  # noqa: F811
    path = rollout_campaign
    platform.run(path)
    spec = load_one(path, platform.settings()).spec
    record = bare(platform, "alpha") / "pulls" / "1.json"
    record.write_text(json.dumps(json.loads(record.read_text()) | {"checks": "failure"}))
    noted: list[tuple[str, str]] = []
    waves = build_rollout_sensor(spec, _job(platform, path), notifier_getter=lambda: _note(noted))
    posted = build_rollout_sensor(
        spec, _job(platform, path), notifier_getter=NotifierResource().get
    )
    with platform.instance() as instance:
        tick(build_pr_status_sensor(spec, lambda: LocalForge()), instance, None)
        result = tick(waves, instance, None)
        assert not result.run_requests
        assert [k for k, _ in noted] == ["rollout_halted"]
        assert "wave 1 failure rate 100% > 20%" in noted[0][1]
        again = tick(waves, instance, result.cursor)  # notified once
        assert len(noted) == 1 and not again.run_requests
        tick(posted, instance, None)  # the same through the Slack notifier
        (text,) = slack.texts("rollout_halted")
        assert "*waves*: rollout halted: wave 1 failure rate 100% > 20%" in text
    # a run now holds the later wave with the halt as its reason
    outcome = platform.run(path, ["acme__beta"])
    row = outcome.report.set_index("target").loc["acme__beta"]
    assert row["status"] == "pending" and row["reason"].startswith("rollout halted: wave 1")
    assert "halted" in outcome.report.attrs["rollout"]


def test_rollout_spec_errors_name_the_field(platform: Platform):
    path = platform.write_campaign("bad", targets=["/nowhere/x"], rollout={"waves": [10, 5, "all"]})
    with pytest.raises(SpecError, match=r"rollout\.waves.*must increase"):
        load_one(path, platform.settings())
    path = platform.write_campaign("bad", targets=["/nowhere/x"], rollout={"waves": ["all", 3]})
    with pytest.raises(SpecError, match=r"`all` can only be the last wave"):
        load_one(path, platform.settings())
    path = platform.write_campaign(
        "bad", targets=["/nowhere/x"], rollout={"waves": [1], "wait_for": "tuesday"}
    )
    with pytest.raises(SpecError, match=r"rollout\.wait_for"):
        load_one(path, platform.settings())


def test_max_prs_per_hour_uses_the_pull_request_limiter(platform: Platform, bwrap: None):
    targets = [str(p) for p in platform.make_fleet(FLEET)]
    path = platform.write_campaign(
        "paced", targets=targets, rollout={"waves": ["all"], "max_prs_per_hour": 2}
    )
    # the limiter waits up to 5 minutes for a slot: the third PR's slot is an hour away
    outcome = platform.run(path)
    got = statuses(outcome.report)
    assert sorted(got.values()) == ["pending", "pr_open", "pr_open"]
    held = outcome.report.set_index("target").loc[next(k for k, v in got.items() if v == "pending")]
    assert "PR rate limit" in held["reason"] and "max_per_hour: 2" in held["reason"]


def _job(platform: Platform, path: Path):
    campaign = load_one(path, platform.settings())
    return campaign_definitions(campaign, platform.settings()).resolve_job_def(
        f"{campaign.spec.id}_targets"
    )


def _note(noted: list):
    return lambda kind, message: noted.append((kind, message))


def test_the_examples_validate_and_only_they_get_the_rollout_and_watch_sensors(platform):
    project = Path(__file__).resolve().parents[1] / "campaigns"
    examples = [project / "modernize-python-waves.yaml", project / "add-docstrings-ci-repair.yaml"]
    proc = platform.cli("validate", *map(str, examples))
    assert proc.stdout.count("✓") == 2, proc.stdout
    waves = load_one(examples[0], platform.settings())
    assert [len(w) for w in _waves(waves.spec)] == [1, 2, 3]
    sensors = {s.name for s in campaign_definitions(waves, platform.settings()).sensors}
    assert {"modernize_python_waves_rollout", "modernize_python_waves_post_merge"} <= sensors
    plain = load_one(project / "modernize-python.yaml", platform.settings())
    sensors = {s.name for s in campaign_definitions(plain, platform.settings()).sensors}
    assert not any(s.endswith(("_rollout", "_post_merge")) for s in sensors)


def _waves(spec):
    from orchestrator_assets.stages.rollout import waves_of

    return waves_of(spec.rollout, [t.key for t in spec.targets])


def test_waves_open_on_checks_green_and_settled_targets_count_as_done():
    from orchestrator_assets.spec.campaign import parse_campaign
    from orchestrator_assets.stages.rollout import TargetState, standing

    spec = parse_campaign(
        {
            "name": "w",
            "targets": [f"/r/{n}" for n in "abcdef"],
            "transformation": {"kind": "deterministic", "command": "true"},
            "rollout": {"waves": [2, 4], "wait_for": "checks_green", "halt_failure_rate": 0.5},
        },
        file="w.yaml",
        base_dir=Path("/"),
    )
    keys = [t.key for t in spec.targets]

    def states(**by_key):
        return {keys[int(k[1:])]: TargetState(*v) for k, v in by_key.items()}

    # wave 1: one PR green, one needs no change -> wave 2 opens; its PRs are pending
    now = standing(spec, states(t0=("pr_open", "success"), t1=("no_change", None),
                                t2=("pr_open", "pending")))  # fmt: skip
    assert now.open_wave == 2 and now.halted is None
    assert [len(w.targets) for w in now.waves] == [2, 2, 2]  # the rest is a final wave
    assert now.hold_reason(keys[3]) is None and now.hold_reason(keys[4]) == "waiting for wave 3"
    # one failed of two in wave 2 is not more than 50%: still open, waiting for the other
    now = standing(spec, states(t0=("merged", None), t1=("no_change", None),
                                t2=("pr_open", "failure"), t3=("pr_open", "success")))  # fmt: skip
    assert now.open_wave == 2 and now.halted is None and now.waves[1].failed == 1
    # both failed: halted, and wave 3 is held with the reason
    now = standing(spec, states(t0=("merged", None), t1=("no_change", None),
                                t2=("pr_open", "failure"), t3=("closed", None)))  # fmt: skip
    assert now.halted.startswith("wave 2 failure rate 100% > 50%")
    assert now.hold_reason(keys[5]).startswith("rollout halted: wave 2")
    assert "halted" in now.describe().splitlines()[0]
