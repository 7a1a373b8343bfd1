"""The benchmarks keep working (their timings are not asserted: machines are noisy)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), *args, "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.read_text())


@pytest.mark.usefixtures("bwrap")
def test_throughput_benchmark_runs_platform_and_baseline_on_the_same_fleet(tmp_path: Path):
    result = run(tmp_path, "--repos", "2", "--runs", "2", "--skip-backfill")
    assert {"repos", "platform_s", "baseline_s", "ratio", "overhead_per_target_s"} <= set(result)
    assert result["repos"] == 2 and result["prs"] == 2  # the platform really opened every PR
    rows = result["runs_detail"]
    assert len(rows) == 2 and all(r["prs"] == 2 for r in rows)  # fresh fleets each run
    for row in rows:  # each run's ratio is its own two sides', measured back to back
        assert row["ratio"] == round(row["platform_s"] / row["baseline_s"], 3)
        # CPU beside wall time: both sides ran ruff and pytest twice, which takes CPU.
        assert row["baseline_cpu_s"] > 0 and row["platform_cpu_s"] > 0
        assert row["cpu_ratio"] == round(row["platform_cpu_s"] / row["baseline_cpu_s"], 3)
    assert result["ratio"] == round(statistics.median(r["ratio"] for r in rows), 3)
    assert result["platform_s"] == round(statistics.median(r["platform_s"] for r in rows), 2)
    for i in range(2):
        baseline = sorted(
            (tmp_path / "work" / f"run{i}" / "fleet-baseline" / "fleet").glob("*.git")
        )
        assert len(baseline) == 2
        for repo in baseline:  # the baseline really pushed its change
            branches = subprocess.run(
                ["git", "-C", str(repo), "branch", "--list", "campaign/*"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert "campaign/baseline" in branches


def test_scale_benchmark_measures_discovery_report_and_memory(tmp_path: Path):
    result = run(tmp_path, "--scale", "40")
    assert result["targets"] == 40 and result["report_rows"] == 40
    assert result["report_statuses"] == {"pr_open": 36, "verification_failed": 4}
    for key in ("discovery_first_tick_s", "discovery_steady_tick_s", "report_s"):
        assert result[key] >= 0
    assert result["code_location_peak_mb"] > 0 and result["code_location_bare_mb"] > 0


@pytest.mark.usefixtures("bwrap")
def test_github_mode_runs_all_repos_and_the_platform_against_the_emulator(tmp_path: Path):
    from benchmarks.github_mode import PeerUnavailable, ensure_peer
    from tests.conftest import require

    try:
        ensure_peer()
    except PeerUnavailable as exc:
        require(False, f"the peer tool all-repos cannot be installed (.bench-venv): {exc}")
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "github_mode.py"), "--repos", "2",
         "--runs", "1", "--json", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert {"peer_s", "platform_s", "ratio", "peer", "platform", "all_repos_version"} <= set(result)
    assert result["ratio"] == round(result["platform_s"] / result["peer_s"], 3)
    assert result["peer_cpu_s"] > 0 and result["platform_cpu_s"] > 0
    # Both tools really opened a PR in each repository of the emulator.
    assert result["peer_prs"] == 2 and result["platform_prs"] == 2
    for tool in ("peer", "platform"):
        seen = result[tool]
        assert seen["api_per_target"] > 0 and seen["git_per_target"] > 0
        assert seen["pushes"] == 2 and seen["max_writes_per_60s"] >= 2
        # when the writes went out, counted from the tool's start: within its time
        (row,) = result["runs_detail"][tool]
        assert 0 < row["first_write_s"] <= row["last_write_s"] <= row["s"]


def test_github_mode_gives_the_time_a_run_would_have_taken_at_githubs_write_limit():
    """A tool that sent 100 PRs half a second apart kept to no limit: at 80 writes a minute its
    100th write could not have gone before 60 s after its 20th; one that waited is left as is."""
    from types import SimpleNamespace

    from benchmarks.github_mode import TimedCalls, measure, paced_time

    def run(write_times: list[float]) -> dict:
        calls = TimedCalls()
        for t in write_times:
            calls.append(SimpleNamespace(method="POST", path="/repos/o/r/pulls", status=201))
            calls.times[-1] = t
        calls.append(SimpleNamespace(method="GET", path="/git/o/r/info/refs", status=200))
        calls.times[-1] = 0.0  # git traffic is not an API write
        fake = SimpleNamespace(calls=calls, repos={}, max_writes_in_flight=1)
        return measure(fake, 100, "head", started=1000.0)

    eager = run([1010.0 + 0.5 * i for i in range(100)])  # writes from 10 s to 59.5 s
    assert eager["max_writes_per_60s"] == 100 and eager["writes_at_limit"] == 0
    assert (eager["first_write_s"], eager["last_write_s"]) == (10.0, 59.5)
    assert eager["last_write_floor_s"] == 10.0 + 0.5 * 19 + 60  # 60 s after the 20th
    assert paced_time(61.0, eager) == 61.0 - 59.5 + 79.5  # its 1.5 s after the last write kept
    # the first 80 at once, the rest as the window let them: already at the limit
    waited = run([1010.0] * 80 + [1070.5 + 0.01 * i for i in range(20)])
    assert waited["max_writes_per_60s"] == 80 and waited["writes_at_limit"] == 20
    assert paced_time(72.0, waited) == 72.0
    assert paced_time(5.0, run([1001.0, 1002.0])) == 5.0  # under 80 writes: no floor


@pytest.mark.usefixtures("bwrap")
def test_the_benchmarks_count_the_cpu_of_what_bubblewrap_runs():
    from benchmarks.cpu import CpuGroup
    from tests.conftest import require

    group = CpuGroup("test")
    require(group.path is not None, "no writable cgroup (cpuacct or v2) to count CPU with")
    # Half a second of CPU in a PID namespace, as the local sandbox runs a verifier: rusage of
    # the caller's children would count almost none of it.
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
            sys.executable, "-c", spin]  # fmt: skip
    try:
        subprocess.run(group.wrap(argv), check=True, timeout=60)
        assert group.seconds() >= 0.5
    finally:
        group.close()
    assert not group.path.exists()


STOPPED = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.cpu import cpu_group, exit_on_sigterm
exit_on_sigterm()
with cpu_group("stopped") as group:
    print(group.path, flush=True)
    subprocess.run(group.wrap(["sh", "-c", f"sleep 300 & echo $! > {sys.argv[2]}; sleep 300"]))
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stopped_benchmark_stops_everything_its_command_started(tmp_path: Path):
    """SIGTERM to a benchmark (its Python process only, as `kill` or a CI timeout sends it) ends
    what its timed command started, a grandchild in the background included: left running, it
    competed with the next run for the same cores."""
    import signal
    import time

    from benchmarks.cpu import cpu_method
    from tests.conftest import require

    require(cpu_method().startswith("cgroup"), "no writable cgroup to run the command in")
    pidfile = tmp_path / "background.pid"
    bench = subprocess.Popen([sys.executable, "-c", STOPPED, str(ROOT), str(pidfile)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    group = Path(bench.stdout.readline().strip())
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    background = int(pidfile.read_text())
    assert _running(background)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    assert not _running(background)
    assert not group.exists()  # and the group is removed
