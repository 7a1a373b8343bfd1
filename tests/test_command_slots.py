"""Command slots: a run wider than the machine's cores overlaps its clones, pushes and forge
requests, but runs at most `command_slots` transformation and verifier commands at once (by
default the cores, for sandboxes on this machine), so more concurrency never means more commands
contending for the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator_assets.spec.errors import SpecError
from orchestrator_assets.spec.profiles import Profile, load_profiles
from resources.cores import cpu_quota, usable_cores
from tests.conftest import Platform, app_repo

# Each verifier run appends when it began and ended (host processes: isolation none).
VERIFIER = (
    'sh -c \'echo "$(date +%s.%N) 1" >> {log}; sleep 0.6; echo "$(date +%s.%N) -1" >> {log}\''
)


def most_at_once(log: Path) -> tuple[int, int]:
    """The most verifier runs in progress at one moment, and how many ran."""
    events = sorted(
        (float(t), int(d)) for t, d in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak, sum(1 for _, d in events if d > 0)


def run_with_slots(platform: Platform, slots: int, name: str) -> tuple[int, int, dict]:
    profiles = platform.root / f"profiles-{name}.yaml"
    profiles.write_text(f"profiles:\n  default:\n    isolation: none\n    command_slots: {slots}\n")
    platform.set_env("ORCHESTRATOR_PROFILES_FILE", str(profiles))
    fleet = platform.make_fleet([app_repo(f"{name}{i}", "GREETING = 'OLD'\n") for i in range(4)])
    log = platform.root / f"{name}.log"
    path = platform.write_campaign(
        name,
        targets=[str(p) for p in fleet],
        concurrency=4,
        verifiers=[{"name": "overlap", "command": VERIFIER.format(log=log)}],
    )
    outcome = platform.run(path)
    peak, runs = most_at_once(log)
    return peak, runs, dict(zip(outcome.report["target"], outcome.report["status"], strict=True))


def test_a_run_wider_than_its_command_slots_runs_that_many_commands_at_once(platform: Platform):
    peak, runs, statuses = run_with_slots(platform, 1, "narrow")
    assert runs == 4 and set(statuses.values()) == {"pr_open"}, statuses  # all done, in turn
    assert peak == 1
    # the same run with room for all four overlaps them (the four workers do start together)
    peak, runs, statuses = run_with_slots(platform, 4, "wide")
    assert runs == 4 and set(statuses.values()) == {"pr_open"}, statuses
    assert peak > 1


def test_command_slots_default_to_the_cores_on_this_machine_and_to_none_on_a_cluster():
    cores = usable_cores()
    assert Profile().host_command_slots() == cores
    assert Profile(provider="docker").host_command_slots() == cores
    assert Profile(provider="kubernetes").host_command_slots() is None
    assert Profile(provider="agent-sandbox").host_command_slots() is None
    assert Profile(provider="kubernetes", command_slots=3).host_command_slots() == 3


def test_zero_command_slots_is_refused_naming_the_file_and_the_field(tmp_path: Path):
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  fast:\n    command_slots: 0\n")
    with pytest.raises(SpecError) as raised:
        load_profiles(path)
    message = str(raised.value)
    assert str(path) in message and "command_slots" in message and "fast" in message


def test_the_cores_are_the_affinity_lowered_by_a_containers_cpu_quota(tmp_path: Path):
    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")  # no quota
    assert cpu_quota(v2) is None and usable_cores(v2) == affinity
    (v2 / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one slot
    assert cpu_quota(v2) == 0.5 and usable_cores(v2) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1) is None and usable_cores(v1) == affinity
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cores(v1) == 1
    assert usable_cores(tmp_path / "none") == affinity  # nothing readable: the affinity
