"""The same campaign on a GitHub API emulator: the platform's GitHub forge against all-repos.

    python benchmarks/github_mode.py --repos 100 --jobs 2 --runs 3 --json github.json
    python benchmarks/throughput.py --github --repos 100 --jobs 8 --runs 1

Each run serves a fresh copy of the benchmark fleet (benchmarks/fleet.py) as N repositories of
one organization on tests/fake_github.py (REST API + git smart HTTP on loopback), then does the
campaign — ruff's UP codemod, pytest as the verifier, commit, push, open a PR — either with the
peer tool all-repos (`all-repos-clone`, then an autofixer built on `all_repos.autofix_lib` that
pushes through `all_repos.push.github_pull_request`) or with `orchestrator run` on the GitHub
forge, alternating the two. The emulator's recorded requests give the requests per target and
the pacing each tool used (content-creating requests in the busiest 60 s window), when its
first and last writes went out, and what each run would have taken at least had it kept to
GitHub's 80 writes a minute (`paced_s`, computed from its own write times; `peer_paced_s` and
`ratio_to_paced_peer` in the summary).

all-repos is installed into the benchmark's own virtualenv (.bench-venv/), never the project's.
The same script, run by that virtualenv's Python as `github_mode.py peer-autofix …`, is the
peer's autofixer: that is why this module imports only the standard library at the top.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = Path(os.environ.get("BENCH_VENV", ROOT / ".bench-venv"))
ALL_REPOS = "all-repos==1.33.0"
ORG = "bench"
TOKEN = "ghp_bench" + "0" * 31
PEER_BRANCH = "ruff-up"  # all-repos pushes all-repos_autofix_<this>
COMMIT_MESSAGE = "Apply ruff's UP fixes"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}
WINDOW_S = 60.0  # GitHub's secondary limit counts content-creating requests per minute
GITHUB_WRITES_PER_MINUTE = 80  # ... at most this many (the documented secondary limit)


def say(message: str) -> None:
    """Progress on stdout, unbuffered (the runs take minutes)."""
    print(message, flush=True)


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the peer's virtualenv ------------------------------------------------------------------------


class PeerUnavailable(Exception):
    """all-repos could not be installed into the benchmark's virtualenv (the message says why)."""


def ensure_peer(venv: Path = BENCH_VENV) -> str:
    """Make `venv` with all-repos installed (once; later calls reuse it); returns its version."""
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may share the checkout: one creates the venv, the others wait.
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = _peer_version(python)
        if version is None:
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "-q", ALL_REPOS],
            ]
            for argv in steps:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise PeerUnavailable(
                        f"`{shlex.join(argv)}` failed: {(proc.stderr or proc.stdout)[-1500:]}"
                    )
            version = _peer_version(python)
            if version is None:
                raise PeerUnavailable(f"{ALL_REPOS} installed into {venv} but not importable")
    return version


def _peer_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m, all_repos.autofix_lib; print(m.version('all-repos'))"
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


# --- the emulator ---------------------------------------------------------------------------------


class TimedCalls(list):
    """FakeGitHub's `calls` list, also noting when each request arrived (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, call: Any) -> None:
        """Record the request and its arrival time."""
        self.times.append(time.monotonic())
        super().append(call)


def _project_importable() -> None:
    # Run as a script, sys.path starts at benchmarks/: the project's packages are one level up.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def serve_fleet(work: Path, repos: int, files: int):
    """A started FakeGitHub whose organization ORG holds a fresh benchmark fleet."""
    _project_importable()
    from benchmarks.fleet import make_fleet
    from tests.fake_github import FakeGitHub

    fake = FakeGitHub(TOKEN, work / "github")
    fake.calls = TimedCalls()
    fake.add_org(ORG)
    # The fleet's bare repositories are made where the emulator's git http-backend serves them
    # (git_root/OWNER/NAME.git), then registered: no per-repository commit through the emulator.
    for bare in make_fleet(fake.git_root, repos, files, owner=ORG):
        fake.add_repo(f"{ORG}/{bare.name.removesuffix('.git')}", bare=bare, language="Python")
    return fake.start()


def measure(fake, repos: int, head: str, started: float) -> dict:
    """What the emulator saw: requests per target, the pacing of writes, and the PRs opened.

    `started` is the monotonic moment the tool was started: the first and last writes are given
    in seconds after it, so a run's time splits into before, during and after its writes.
    """
    calls = list(fake.calls)
    times = list(fake.calls.times)
    git = [c for c in calls if c.path.startswith("/git/")]
    api = [c for c in calls if not c.path.startswith("/git/")]
    writes = sorted(t for c, t in zip(calls, times, strict=True)
                    if c.method in WRITES and not c.path.startswith("/git/"))  # fmt: skip
    busiest, start = 0, 0
    for end, t in enumerate(writes):
        while t - writes[start] > WINDOW_S:
            start += 1
        busiest = max(busiest, end - start + 1)
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    # writes that went out as soon as GitHub's 80-a-minute limit allowed (a slot comes back 60 s
    # after its write, plus the forge's margin): the tool was waiting for the limit, not working
    limit = GITHUB_WRITES_PER_MINUTE
    at_limit = sum(1 for i in range(limit, len(writes))
                   if WINDOW_S <= writes[i] - writes[i - limit] < WINDOW_S + 2.5)  # fmt: skip
    prs = sum(1 for r in fake.repos.values() for p in r.pulls.values() if p.head == head)
    return {
        "prs": prs,
        "api_requests": len(api),
        "git_requests": len(git),
        "api_per_target": round(len(api) / repos, 2),
        "git_per_target": round(len(git) / repos, 2),
        "writes_per_target": round(len(writes) / repos, 2),
        "pushes": sum(1 for c in git if c.path.endswith("/git-receive-pack")),
        # 4xx/5xx answers, expected ones included (a 404 for a branch not pushed yet, the 401 a
        # git client gets before it sends credentials)
        "error_answers": sum(1 for c in calls if c.status >= 400),
        "max_writes_per_60s": busiest,
        "writes_at_limit": at_limit,
        "median_write_gap_s": round(statistics.median(gaps), 3) if gaps else None,
        "first_write_s": round(writes[0] - started, 2) if writes else None,
        "last_write_s": round(writes[-1] - started, 2) if writes else None,
        # The earliest moment the last write could have gone out had the tool kept to the limit,
        # its earlier writes where they were: write k + 80 no sooner than 60 s after write k.
        "last_write_floor_s": round(writes[-1 - limit] + WINDOW_S - started, 2)
        if len(writes) > limit
        else None,
        "max_writes_in_flight": fake.max_writes_in_flight,
    }


def paced_time(total: float, seen: dict) -> float:
    """The least a run of `total` seconds would have taken had it kept to GitHub's limit: its
    last write no sooner than `measure`'s floor, what it did after that write unchanged. A
    computed lower bound, not a run; for a tool that keeps to the limit, its own time."""
    floor = seen["last_write_floor_s"]
    if floor is None:
        return round(total, 2)
    return round(max(total, total - seen["last_write_s"] + floor), 2)


# --- the peer: all-repos --------------------------------------------------------------------------


def peer_env(fake, venv: Path) -> dict[str, str]:
    """all-repos' environment: git reaches the emulator, ruff and pytest are the platform's."""
    import base64

    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    return {
        **os.environ,
        # The same ruff and python (with pytest) the platform runs: first on PATH. all-repos'
        # own commands are run by absolute path from its venv.
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), str(venv / "bin"), os.environ.get("PATH", "")]
        ),
        "GITHUB_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "GIT_TERMINAL_PROMPT": "0",
        # all-repos clones the API's `ssh_url` (git@127.0.0.1:OWNER/NAME); git rewrites it to the
        # emulator's smart HTTP (http-backend finds NAME.git for NAME) and sends the token.
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"url.{fake.web}/git/.insteadOf",
        "GIT_CONFIG_VALUE_0": "git@127.0.0.1:",
        "GIT_CONFIG_KEY_1": f"http.{fake.web}/.extraHeader",
        "GIT_CONFIG_VALUE_1": f"Authorization: Basic {basic}",
        "GIT_AUTHOR_NAME": "Campaign Bot",
        "GIT_AUTHOR_EMAIL": "campaigns@localhost",
        "GIT_COMMITTER_NAME": "Campaign Bot",
        "GIT_COMMITTER_EMAIL": "campaigns@localhost",
    }


def run_peer(fake, work: Path, jobs: int, venv: Path = BENCH_VENV) -> dict:
    """all-repos-clone, then the autofixer; returns the seconds of each (they fail loudly)."""
    _project_importable()
    from benchmarks.cpu import cpu_group
    from benchmarks.fleet import CODEMOD, VERIFIER

    work.mkdir(parents=True, exist_ok=True)
    config = work / "all-repos.json"
    config.write_text(json.dumps({
        "output_dir": "repos",
        "source": "all_repos.source.github_org",
        "source_settings": {"org": ORG, "base_url": fake.base_url, "api_key_env": "GITHUB_TOKEN"},
        "push": "all_repos.push.github_pull_request",
        "push_settings": {"username": fake.login, "base_url": fake.base_url,
                          "api_key_env": "GITHUB_TOKEN"},
    }, indent=2))  # fmt: skip
    config.chmod(0o600)  # all-repos refuses a config others can read
    env = peer_env(fake, venv)
    bin_ = venv / "bin"
    steps = {
        "clone": [str(bin_ / "all-repos-clone"), "-C", str(config), "--jobs", str(jobs)],
        "fix": [str(bin_ / "python"), str(Path(__file__).resolve()), "peer-autofix",
                "-C", str(config), "--jobs", str(jobs), "--codemod", CODEMOD,
                "--verifier", VERIFIER],
    }  # fmt: skip
    seconds: dict[str, float] = {}
    with cpu_group("peer") as group:
        for name, argv in steps.items():
            log = work / f"{name}.log"
            started = time.monotonic()
            seconds.setdefault("started", started)  # the clone's start: the peer's time 0
            with log.open("w") as out:
                proc = subprocess.run(
                    group.wrap(argv), env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT
                )
            seconds[f"{name}_s"] = time.monotonic() - started
            text = log.read_text()
            # autofix_lib reports a failed repository as "***Errored" and carries on: a fail.
            if proc.returncode != 0 or "***Errored" in text or "Error fetching" in text:
                raise SystemExit(f"all-repos {name} failed (see {log}):\n{text[-3000:]}")
        return {**seconds, "cpu_s": group.seconds()}


def _shell(argv: list[str], *, quiet: bool) -> None:
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(argv, check=True, stdout=out, stderr=out)


def peer_autofix(argv: list[str]) -> None:
    """The peer's autofixer (run by .bench-venv's Python): codemod, verifier, commit, PR."""
    from all_repos import autofix_lib

    parser = argparse.ArgumentParser(prog="github_mode.py peer-autofix")
    autofix_lib.add_fixer_args(parser)
    parser.add_argument("--codemod", required=True)
    parser.add_argument("--verifier", required=True)
    args = parser.parse_args(argv)

    def cloned(config: Any) -> list[str]:
        return [os.path.join(config.output_dir, r) for r in config.get_cloned_repos()]

    repos, config, commit, settings = autofix_lib.from_cli(
        args, find_repos=cloned, msg=COMMIT_MESSAGE, branch_name=PEER_BRANCH
    )
    # partials of module-level functions: autofix_lib sends them to worker processes by pickle
    autofix_lib.fix(
        repos,
        apply_fix=functools.partial(_shell, shlex.split(args.codemod), quiet=True),
        check_fix=functools.partial(_shell, shlex.split(args.verifier), quiet=True),
        config=config,
        commit=commit,
        autofix_settings=settings,
    )


# --- the platform ---------------------------------------------------------------------------------


def run_platform(fake, work: Path, jobs: int) -> dict:
    """`orchestrator run` of the campaign on the GitHub forge (its own pacing settings)."""
    import yaml

    _project_importable()
    from benchmarks.fleet import CODEMOD, VERIFIER
    from benchmarks.throughput import platform_env, time_orchestrator_run

    env = {
        **platform_env(work),
        "ORCHESTRATOR_FORGE": "github",
        "ORCHESTRATOR_GITHUB_API_URL": fake.base_url,
        "GITHUB_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    path = work / "campaigns" / "bench.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "bench",
        "description": "Benchmark: ruff UP codemod.",
        "discover": {"github": {"org": ORG}},
        "transformation": {"kind": "deterministic", "command": CODEMOD},
        "verifiers": [{"name": "test", "command": VERIFIER, "timeout": 300}],
        "concurrency": jobs,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    timing = time_orchestrator_run(path, env, log=work / "run.log")
    return {"run_s": timing.wall_s, "cpu_s": timing.cpu_s, "started": timing.started}


# --- the benchmark --------------------------------------------------------------------------------


def one_run(tool: str, work: Path, args: argparse.Namespace) -> dict:
    """One timed run of `tool` ("peer" or "platform") on a fresh emulator and fleet."""
    fake = serve_fleet(work, args.repos, args.files)
    try:
        before = load()
        # Each tool's CPU ("cpu_s") is its own process tree's (benchmarks/cpu.py); the
        # emulator's Python threads are counted apart, its `git http-backend` processes not.
        own = time.process_time()
        if tool == "peer":
            seconds = run_peer(fake, work / "peer", args.jobs)
            total = seconds["clone_s"] + seconds["fix_s"]
            head = f"all-repos_autofix_{PEER_BRANCH}"
        else:
            seconds = run_platform(fake, work / "platform", args.jobs)
            total, head = seconds["run_s"], "campaign/bench"
        cpu, own = seconds.pop("cpu_s"), time.process_time() - own
        started = seconds.pop("started")  # when the timed commands began
        seen = measure(fake, args.repos, head, started)
    finally:
        fake.stop()
    seen["paced_s"] = paced_time(total, seen)
    row = {"s": round(total, 2), **{k: round(v, 2) for k, v in seconds.items()}, **seen,
           "cpu_s": round(cpu, 2), "emulator_cpu_s": round(own, 2),
           "load_before": before, "load_after": load()}  # fmt: skip
    say(f"  {tool}: {row['s']} s, CPU {row['cpu_s']} s (+ emulator {row['emulator_cpu_s']} s), "
        f"PRs {seen['prs']}/{args.repos}, "
        f"{seen['api_per_target']} API + {seen['git_per_target']} git requests per target, "
        f"writes from {seen['first_write_s']} s to {seen['last_write_s']} s, "
        f"max {seen['max_writes_per_60s']} in 60 s, {seen['writes_at_limit']} sent as "
        f"the limit allowed, {seen['paced_s']} s at the limit "
        f"(load {row['load_after']})")  # fmt: skip
    return row


def benchmark(args: argparse.Namespace, work: Path) -> dict:
    """Alternate peer and platform runs; the medians, their ratio and what the emulator saw."""
    version = ensure_peer(args.venv)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    say(f"all-repos {version} in {args.venv}; {args.repos} repositories, jobs {args.jobs}, "
        f"{args.runs} run(s) each, alternating; work in {work}")  # fmt: skip
    runs: dict[str, list[dict]] = {"peer": [], "platform": []}
    for i in range(args.runs):
        for tool in ("peer", "platform"):
            say(f"run {i + 1}/{args.runs}: {tool} …")
            runs[tool].append(one_run(tool, work / f"run{i}-{tool}", args))
    peer_s = statistics.median(r["s"] for r in runs["peer"])
    platform_s = statistics.median(r["s"] for r in runs["platform"])
    peer_paced_s = statistics.median(r["paced_s"] for r in runs["peer"])
    peer_cpu = statistics.median(r["cpu_s"] for r in runs["peer"])
    platform_cpu = statistics.median(r["cpu_s"] for r in runs["platform"])

    def summary(rows: list[dict]) -> dict:
        last = rows[-1]  # request counts do not depend on timing; pacing is the busiest run's
        keys = ("api_per_target", "git_per_target", "writes_per_target", "pushes", "error_answers")
        return {
            **{k: last[k] for k in keys},
            "max_writes_per_60s": max(r["max_writes_per_60s"] for r in rows),
            "writes_at_limit": max(r["writes_at_limit"] for r in rows),
            "median_write_gap_s": last["median_write_gap_s"],
            "max_writes_in_flight": max(r["max_writes_in_flight"] for r in rows),
        }

    return {
        "started": started,
        "repos": args.repos,
        "files": args.files,
        "jobs": args.jobs,
        "runs": args.runs,
        "all_repos_version": version,
        "peer_s": round(peer_s, 2),
        "platform_s": round(platform_s, 2),
        "ratio": round(platform_s / peer_s, 3),
        # the peer's time had it kept to GitHub's 80 writes a minute (a computed lower bound
        # from its own write times, see one_run), and the platform's time against it
        "peer_paced_s": round(peer_paced_s, 2),
        "ratio_to_paced_peer": round(platform_s / peer_paced_s, 3),
        "peer_cpu_s": round(peer_cpu, 2),
        "platform_cpu_s": round(platform_cpu, 2),
        "cpu_ratio": round(platform_cpu / peer_cpu, 3),
        "overhead_per_target_s": round((platform_s - peer_s) / args.repos, 4),
        "peer_prs": min(r["prs"] for r in runs["peer"]),
        "platform_prs": min(r["prs"] for r in runs["platform"]),
        "peer": summary(runs["peer"]),
        "platform": summary(runs["platform"]),
        "runs_detail": runs,
    }


def parser() -> argparse.ArgumentParser:
    """The command line (also reached through `throughput.py --github`)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repos", type=int, default=100, help="fleet size (default 100)")
    p.add_argument("--files", type=int, default=3, help="modules per repository")
    p.add_argument("--jobs", type=int, default=2,
                   help="all-repos --jobs and the campaign's concurrency (default 2)")  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="runs of each tool; medians (default 3)")
    p.add_argument("--venv", type=Path, default=BENCH_VENV, help="the peer's virtualenv")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--workdir", type=Path, help="keep generated data here")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, as `peer-autofix`, the peer's autofixer)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer-autofix"]:
        peer_autofix(argv[1:])
        return
    _project_importable()
    from benchmarks.cpu import exit_on_sigterm

    exit_on_sigterm()  # a stopped benchmark stops what it started (benchmarks/cpu.py)
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-github-") as tmp:
        try:
            result = benchmark(args, args.workdir or Path(tmp))
        except PeerUnavailable as exc:
            raise SystemExit(f"all-repos is not available: {exc}") from None
    say(json.dumps({k: v for k, v in result.items() if k != "runs_detail"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
