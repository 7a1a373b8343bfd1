"""Throughput of the platform against a bare baseline, and a scale run at 10,000 targets.

    python benchmarks/throughput.py --repos 200 --json out.json
    python benchmarks/throughput.py --repos 200 --skip-backfill --runs 5
    python benchmarks/throughput.py --scale 10000 --json scale.json
    python benchmarks/throughput.py --github --repos 100 --jobs 2 --runs 3 --json github.json

The throughput run makes three identical fleets and, in one invocation, runs the same campaign
(ruff's UP codemod, pytest as verifier, commit, push, PR) through `orchestrator run`, through a
partition backfill launched via the webserver and executed by the daemon's run queue, and as a
bare shell pipeline with the same parallelism. With `--runs N` it does that N times on fresh
fleets, alternating whether the baseline or the platform goes first, and reports medians: the
ratio is the median of the runs' ratios, each measured back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_group, cpu_method, exit_on_sigterm  # noqa: E402
from benchmarks.fleet import CODEMOD, VERIFIER, make_fleet  # noqa: E402

BIN = Path(sys.executable).parent
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(message: str) -> None:
    print(message, flush=True)


def platform_env(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home / "dagster_home"),
        "ORCHESTRATOR_DATA_DIR": str(home / "data"),
        "ORCHESTRATOR_CAMPAIGNS_DIR": str(home / "campaigns"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # The instance as the platform writes it (its event log, queue and pools), as `make dev`
    # does before starting the webserver and daemon: not a plain copy of the project's file.
    prepare = (
        "from orchestrator_assets.spec.settings import Settings, ensure_dagster_home;"
        "ensure_dagster_home(Settings())"
    )
    subprocess.run([sys.executable, "-c", prepare], env=env, cwd=ROOT, check=True)
    return env


def write_campaign(home: Path, name: str, repos: list[Path], concurrency: int) -> Path:
    path = home / "campaigns" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": name,
        "description": "Benchmark: ruff UP codemod.",
        "targets": [str(r) for r in repos],
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": VERIFIER, "timeout": 300}],
        "concurrency": concurrency,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def count_prs(repos: list[Path]) -> int:
    return sum(1 for r in repos if (r / "pulls" / "1.json").exists())


class Timing(NamedTuple):
    """How long a timed command took, and the CPU it and every process it started used
    (`benchmarks/cpu.py`)."""

    wall_s: float
    cpu_s: float
    started: float  # time.monotonic() when the command was started


def time_orchestrator_run(path: Path, env: dict[str, str], log: Path | None = None) -> Timing:
    """How long `orchestrator run --file PATH` takes, as a user runs it; its output kept in `log`
    when given; a failed run ends the benchmark with its output."""
    with cpu_group("platform") as group:
        started = time.monotonic()
        proc = subprocess.run(
            group.wrap([str(BIN / "orchestrator"), "run", "--file", str(path), "--output", "json"]),
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        timing = Timing(time.monotonic() - started, group.seconds(), started)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"orchestrator run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return timing


def run_platform(home: Path, repos: list[Path], concurrency: int) -> Timing:
    env = platform_env(home)
    return time_orchestrator_run(write_campaign(home, "bench", repos, concurrency), env)


@contextmanager
def service(argv: list[str], env: dict[str, str], log: Path):
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def graphql(base: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with HTTP.open(request, timeout=120) as resp:
        return json.loads(resp.read())


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def run_backfill(home: Path, repos: list[Path], concurrency: int) -> float:
    """Launch a backfill of every partition as the UI does, and let the daemon run it."""
    env = platform_env(home)
    path = write_campaign(home, "bench_bf", repos, concurrency)
    # The discovery sensor's first tick, done directly: the partitions must exist to backfill.
    sync = (
        "import sys; sys.path.insert(0, sys.argv[2]);"
        "from dagster import DagsterInstance;"
        "from orchestrator_assets.spec.campaign import load_campaign;"
        "from orchestrator_assets.assets.partitions import sync_partitions;"
        "sync_partitions(DagsterInstance.get(), load_campaign(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", sync, str(path), str(ROOT)], env=env, check=True)
    port = 39000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    webserver = [str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with service(webserver, env, home / "webserver.log"):
        deadline = time.monotonic() + 120
        while True:
            try:
                with HTTP.open(f"{base}/server_info", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("webserver did not start") from None
                time.sleep(0.5)
        keys = [f"fleet__{r.stem}" for r in repos]
        selection = [{"path": ["bench_bf", s]} for s in ("change", "verification", "pull_request")]
        started = time.monotonic()
        answer = graphql(base, LAUNCH, {"params": {"assetSelection": selection,
                                                    "partitionNames": keys}})  # fmt: skip
        result = answer["data"]["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"backfill not launched: {result}")
        daemon = [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]
        with service(daemon, env, home / "daemon.log"):
            deadline = time.monotonic() + 3600
            while count_prs(repos) < len(repos) and time.monotonic() < deadline:
                time.sleep(0.5)
            return time.monotonic() - started


def run_baseline(repos: list[Path], concurrency: int) -> Timing:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with cpu_group("baseline") as group:
        started = time.monotonic()
        subprocess.run(
            group.wrap(["bash", str(ROOT / "benchmarks" / "baseline.sh"), str(concurrency),
                        CODEMOD, VERIFIER]),
            input="\n".join(str(r) for r in repos), text=True, env=env, check=True,
        )  # fmt: skip
        return Timing(time.monotonic() - started, group.seconds(), started)


def one_run(args: argparse.Namespace, work: Path, baseline_first: bool) -> dict:
    """One round on fresh fleets: the baseline and `orchestrator run` back to back (in the order
    given), then the backfill unless skipped; each side's wall and CPU seconds."""
    sides = ("platform", "baseline") if args.skip_backfill else ("platform", "backfill", "baseline")
    say(f"generating {len(sides)} fleets of {args.repos} repositories ({args.files} modules each) "
        f"in {work}")  # fmt: skip
    fleets = {k: make_fleet(work / f"fleet-{k}", args.repos, args.files) for k in sides}
    row: dict = {}

    def baseline() -> None:
        say("baseline (shell pipeline) …")
        timing = run_baseline(fleets["baseline"], args.concurrency)
        row["baseline_s"], row["baseline_cpu_s"] = round(timing.wall_s, 2), round(timing.cpu_s, 2)
        say(f"  {row['baseline_s']} s, CPU {row['baseline_cpu_s']} s")

    def platform() -> None:
        say("platform (orchestrator run) …")
        timing = run_platform(work / "p", fleets["platform"], args.concurrency)
        row["platform_s"], row["platform_cpu_s"] = round(timing.wall_s, 2), round(timing.cpu_s, 2)
        row["prs"] = count_prs(fleets["platform"])
        say(f"  {row['platform_s']} s, CPU {row['platform_cpu_s']} s, PRs: {row['prs']}")

    for side in (baseline, platform) if baseline_first else (platform, baseline):
        side()
    row["ratio"] = round(row["platform_s"] / row["baseline_s"], 3)
    row["cpu_ratio"] = round(row["platform_cpu_s"] / row["baseline_cpu_s"], 3)
    if not args.skip_backfill:
        say("platform (backfill through the daemon's run queue) …")
        row["backfill_s"] = round(
            run_backfill(work / "b", fleets["backfill"], args.concurrency), 2
        )  # wall time only: the webserver and daemon are not this process's waited children
        say(f"  {row['backfill_s']} s, PRs: {count_prs(fleets['backfill'])}")
        row["backfill_ratio"] = round(row["backfill_s"] / row["baseline_s"], 3)
    return row


def throughput(args: argparse.Namespace, work: Path) -> dict:
    """`args.runs` rounds, alternating which side goes first (a machine that drifts during the
    invocation then weighs on both); the medians, and the ratio as the median of the rounds'
    ratios (each round's two sides measured back to back)."""
    rows = []
    for i in range(args.runs):
        say(f"run {i + 1}/{args.runs}")
        rows.append(one_run(args, work / f"run{i}", baseline_first=i % 2 == 0))
        say(f"  ratio {rows[-1]['ratio']}, CPU ratio {rows[-1]['cpu_ratio']}")

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    result: dict = {"repos": args.repos, "files": args.files, "concurrency": args.concurrency,
                    "runs": args.runs, "cpu_method": cpu_method()}  # fmt: skip
    for key in ("baseline_s", "baseline_cpu_s", "platform_s", "platform_cpu_s"):
        result[key] = round(median(key), 2)
    result["ratio"], result["cpu_ratio"] = round(median("ratio"), 3), round(median("cpu_ratio"), 3)
    if not args.skip_backfill:
        result["backfill_s"], result["backfill_ratio"] = (
            round(median("backfill_s"), 2),
            round(median("backfill_ratio"), 3),
        )
    result["overhead_per_target_s"] = round(
        (result["platform_s"] - result["baseline_s"]) / args.repos, 4
    )
    result["prs"] = min(r["prs"] for r in rows)
    result["runs_detail"] = rows
    return result


def main() -> None:
    exit_on_sigterm()  # a stopped benchmark stops what it started (benchmarks/cpu.py)
    if "--github" in sys.argv[1:]:  # the GitHub-forge mode has its own options
        from benchmarks.github_mode import main as github_main

        github_main([a for a in sys.argv[1:] if a != "--github"])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=200, help="fleet size (default 200)")
    parser.add_argument("--files", type=int, default=3, help="modules per repository")
    parser.add_argument("--concurrency", type=int, default=4, help="targets at once (both sides)")
    parser.add_argument("--skip-backfill", action="store_true", help="only orchestrator run")
    parser.add_argument("--runs", type=int, default=1,
                        help="rounds on fresh fleets, alternating which side goes first; "
                        "medians (default 1)")  # fmt: skip
    parser.add_argument("--scale", type=int, default=0, help="run the scale run with N targets")
    parser.add_argument("--github", action="store_true",
                        help="platform vs all-repos on a GitHub API emulator: "
                        "see benchmarks/github_mode.py --help")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep generated data here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    if args.scale:
        from benchmarks.scale import scale_run

        result = scale_run(args.scale, work)
    else:
        result = throughput(args, work)
    say(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    say(
        f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
    )


if __name__ == "__main__":
    main()
