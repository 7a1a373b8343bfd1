"""The scale run: one campaign with N (default 10,000) targets.

Measures the discovery sensor's tick (first tick adding every partition, then a steady tick),
building the report over N targets with 5 runs of history each (median of 3 builds), and the
peak memory of the code location loading the campaign (against the same process with no
campaign: the bare baseline).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child started by a big parent
# would report the parent's peak.
LOAD_DEFS = (
    "import re, sys; sys.path.insert(0, sys.argv[1]);"
    "from orchestrator_assets.definitions import build_definitions;"
    "defs = build_definitions(); defs.get_repository_def().get_all_jobs();"
    "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
)


def _code_location_kb(campaigns: Path) -> int:
    """Peak RSS (KB) of a fresh process that loads the code location over `campaigns`."""
    env = {**os.environ, "ORCHESTRATOR_CAMPAIGNS_DIR": str(campaigns)}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_DEFS, str(ROOT)], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return int(proc.stdout.split()[-1])


def _timed(fn):
    started = time.monotonic()
    value = fn()
    return value, round(time.monotonic() - started, 3)


HISTORY_RUNS = 5  # runs of history per target: each wrote a change, verification and PR record
SEED_BATCH = 3000  # materializations written per transaction while seeding


def _seed_history(instance, spec, keys: list[str], runs: int = HISTORY_RUNS) -> None:
    """Give every target `runs` runs of history: each run a change, verification and
    pull-request record per target, as a campaign run writes them (target after target).

    Only the last run's records are the current ones (the report must show them: 1 in 10
    targets failing verification, the others with an open PR); the earlier runs made other
    commits, so a report that picked an older record would show those targets as pending.
    Written in bulk into the event log's index (`store_runless_materializations`): one event at
    a time through the instance would take about 20 minutes at 10,000 targets.
    """
    import dagster as dg

    from orchestrator_assets.assets.dagster_private import store_runless_materializations
    from orchestrator_assets.assets.metadata import (
        change_metadata,
        pull_request_metadata,
        verification_metadata,
    )
    from orchestrator_assets.stages.records import (
        ChangeRecord,
        PullRequestRecord,
        VerificationRecord,
        VerifierResult,
    )
    from orchestrator_assets.stages.status import ChangeOutcome

    pending: list[dg.AssetMaterialization] = []
    for run in range(runs):
        last = run == runs - 1
        for i, key in enumerate(keys):
            head = f"{i:040x}" if last else f"{run + 1:02x}{i:038x}"
            passed = i % 10 != 0 if last else True
            change = ChangeRecord(
                outcome=ChangeOutcome.CHANGED, repo=f"/srv/fleet/{key}.git",
                branch=spec.branch_name, base_branch="main", base_sha="0" * 40, head_sha=head,
                files=["pkg/mod0.py"], insertions=2, deletions=2,
                diff="-from typing import List\n+\n" * 5,
                fingerprint=spec.transformation_fingerprint(), duration_s=0.4,
            )  # fmt: skip
            verification = VerificationRecord(
                head_sha=head,
                results=[VerifierResult(name="test", passed=passed, exit_code=0 if passed else 1,
                                        duration_s=0.3, output_tail="3 passed in 0.02s\n")],
            )  # fmt: skip
            pr = PullRequestRecord(outcome="opened" if run == 0 else "updated", number=1,
                                   url=f"file:///srv/{key}/pulls/1.json", state="open",
                                   head_sha=head)  # fmt: skip
            for stage, meta in (
                ("change", change_metadata(change)),
                ("verification", verification_metadata(verification)),
                ("pull_request", pull_request_metadata(pr)),
            ):
                pending.append(
                    dg.AssetMaterialization([spec.id, stage], partition=key, metadata=meta)
                )
            if len(pending) >= SEED_BATCH:
                store_runless_materializations(instance, pending)
                pending = []
        print(f"  seeded run {run + 1} of {runs} ({len(keys)} targets)", flush=True)
    store_runless_materializations(instance, pending)


def _median_timed(fn, times: int = 3):
    """The last value of `times` calls of `fn` and the median and each of their durations."""
    durations = []
    for _ in range(times):
        value, took = _timed(fn)
        durations.append(took)
    return value, statistics.median(durations), durations


def scale_run(n: int, work: Path, runs: int = HISTORY_RUNS) -> dict:
    """Run the scale measurements with `n` targets, `runs` runs of history each, under `work`."""
    home, campaigns = work / "dagster_home", work / "campaigns"
    campaigns.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        DAGSTER_HOME=str(home),
        ORCHESTRATOR_DATA_DIR=str(work / "data"),
        ORCHESTRATOR_CAMPAIGNS_DIR=str(campaigns),
    )
    sys.path.insert(0, str(ROOT))
    import dagster as dg

    from orchestrator_assets.reports.report import build_report
    from orchestrator_assets.spec.campaign import load_campaign
    from orchestrator_assets.spec.settings import Settings, ensure_dagster_home
    from sensors.discovery import build_discovery_sensor

    ensure_dagster_home(Settings())
    path = campaigns / "scale.yaml"
    spec_data = {
        "name": "scale",
        "targets": [f"/srv/fleet/repo{i:05d}.git" for i in range(n)],
        "transformation": {"kind": "deterministic", "command": "true"},
        "verifiers": [{"name": "test", "command": "true"}],
    }
    path.write_text(yaml.safe_dump(spec_data))
    result: dict = {"targets": n}
    spec, result["spec_load_s"] = _timed(lambda: load_campaign(path))
    keys = [t.key for t in spec.targets]
    with dg.DagsterInstance.get() as instance:
        sensor = build_discovery_sensor(spec)
        tick, result["discovery_first_tick_s"] = _timed(
            lambda: sensor(dg.build_sensor_context(instance=instance))
        )
        _, result["add_partitions_s"] = _timed(
            lambda: instance.add_dynamic_partitions(
                spec.partitions_name, tick.dynamic_partitions_requests[0].partition_keys
            )
        )
        _, result["discovery_steady_tick_s"] = _timed(
            lambda: sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor))
        )
        print(f"seeding {runs} runs of history for {n} targets (3 records a run) …", flush=True)
        _, result["seed_s"] = _timed(lambda: _seed_history(instance, spec, keys, runs))
        result["history_runs"] = runs
        result["materializations"] = 3 * runs * n
        frame, result["report_s"], result["report_runs_s"] = _median_timed(
            lambda: build_report(instance, spec)
        )
        result["report_rows"] = len(frame)
        result["report_statuses"] = frame["status"].value_counts().to_dict()
    peak = _code_location_kb(campaigns)
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    bare = _code_location_kb(empty)
    result["code_location_peak_mb"] = round(peak / 1024, 1)
    result["code_location_bare_mb"] = round(bare / 1024, 1)
    result["code_location_memory_ratio"] = round(peak / bare, 3)
    return result
