"""Setup with a cold and a warm environment cache, over a generated fleet.

    python benchmarks/setup_cache.py --repos 10 --json setup.json
    python benchmarks/setup_cache.py --repos 50 --campaigns 2   # two campaigns at once

Each repository vendors a small wheel; the campaign's setup makes a virtualenv and installs it
(`python -m venv .venv`, `pip install --no-index`), cached as `.venv`, and writes a git-ignored
`_version.py` as hatch-vcs does in an editable install, which the verifier imports: a warm run
passes only if the cache restores that file too. The first run prepares every workspace with a
cold cache; then every base branch moves (an upstream commit that does not touch a manifest) and
the campaign runs again, now restoring the environment. With `--campaigns N`, N campaigns over
the same fleet run at once on one data folder and one DAGSTER_HOME, sharing the cache. The result
is the mean setup time per workspace, cold and warm, as recorded in the `change` metadata, and
the targets that did not end with an open PR (`not_pr_open`, which must be 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import BIN, platform_env, write_campaign  # noqa: E402
from orchestrator_assets.demo_fleet import RepoSpec, create_repo  # noqa: E402

SETUP = [
    "python -m venv .venv",
    ".venv/bin/python -m pip install --quiet --no-index --find-links vendor greetlib",
    ".venv/bin/python -c \"open('_version.py', 'w').write('VERSION = 1')\"",
]
APP = "from typing import List\n\nGREETING: List[str] = ['OLD']\n"  # the codemod rewrites it


def build_wheel(work: Path) -> Path:
    src = work / "greetlib-src"
    (src / "greetlib").mkdir(parents=True)
    (src / "greetlib" / "__init__.py").write_text("def greet(n):\n    return f'hello {n}'\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "greetlib"\nversion = "0.1"\n'
    )
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(work / "dist"), str(src)], check=True)  # fmt: skip
    return next((work / "dist").glob("*.whl"))


def git(work: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "-C", str(work), *args],
                   check=True, capture_output=True)  # fmt: skip


def make_repos(work: Path, n: int, wheel: Path) -> list[Path]:
    repos = []
    for i in range(n):
        repo = create_repo(work / "fleet", RepoSpec(f"repo{i:03d}", {"app.py": APP}), owner="bench")
        clone = work / "clones" / repo.stem
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        (clone / "vendor").mkdir()
        (clone / "vendor" / wheel.name).write_bytes(wheel.read_bytes())
        (clone / ".gitignore").write_text("_version.py\n")
        git(clone, "add", "vendor", ".gitignore")
        git(clone, "commit", "-qm", "vendor greetlib")
        git(clone, "push", "-q", "origin", "HEAD")
        repos.append(repo)
    return repos


def setup_times(env: dict, campaign: str) -> dict[str, list[float]]:
    """Setup durations from the campaign's `change` materializations, by cache outcome."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from dagster import DagsterInstance, AssetKey;"
        "i = DagsterInstance.get();"
        "recs = i.fetch_materializations(AssetKey([sys.argv[2], 'change']), limit=10000).records;"
        "ms = [r.asset_materialization.metadata for r in recs];"
        "print(json.dumps([[m['setup_cache'].value, m['setup_duration_s'].value]"
        " for m in ms if 'setup_cache' in m]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), campaign], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    times: dict[str, list[float]] = {"miss": [], "hit": []}
    for cache, seconds in json.loads(out):
        times.setdefault(cache, []).append(seconds)
    return times


def run_all(run: list[str], paths: list[Path], env: dict) -> int:
    """Run every campaign at once; the number of targets that did not end with an open PR."""
    procs = [subprocess.Popen([*run, str(p)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in paths]  # fmt: skip
    missed = 0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"orchestrator run failed ({proc.returncode}):\n{out}\n{err}")
        rows = json.loads(out[out.index("\n[\n") + 1 :])
        for row in rows:
            if row["status"] != "pr_open":
                missed += 1
                print(f"  {row['target']}: {row['status']} {row.get('reason') or ''}", flush=True)
    return missed


def main() -> None:
    """Run the benchmark and print (or write) its result."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--campaigns", type=int, default=1, help="campaigns run at once")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-setup-"))
    repos = make_repos(work, args.repos, build_wheel(work))
    env = platform_env(work / "p")
    names = [f"setupbench{i}" if i else "setupbench" for i in range(args.campaigns)]
    paths = []
    for name in names:
        path = write_campaign(work / "p", name, repos, 4)
        setup = "".join(f"- {json.dumps(c)}\n" for c in SETUP)  # JSON strings are YAML
        spec = path.read_text().replace(
            "verifiers:", f"setup:\n{setup}cache_paths: [.venv]\nverifiers:"
        )
        spec = spec.replace("command: python -m pytest -q -p no:cacheprovider",
                            "command: .venv/bin/python -c 'import greetlib, _version'")  # fmt: skip
        path.write_text(spec)
        paths.append(path)
    # The instance's storage is created once, before campaigns start side by side.
    subprocess.run([sys.executable, "-c", "from dagster import DagsterInstance as I; I.get()"],
                   env=env, check=True)  # fmt: skip
    run = [str(BIN / "orchestrator"), "run", "--output", "json", "--file"]
    print(f"cold run of {len(paths)} campaign(s) over {len(repos)} repositories …", flush=True)
    missed = run_all(run, paths, env)
    for repo in repos:  # upstream work on every base branch: the change is redone
        clone = work / "clones" / repo.stem
        (clone / "NOTES.md").write_text("upstream\n")
        git(clone, "add", "NOTES.md")
        git(clone, "commit", "-qm", "upstream")
        git(clone, "push", "-q", "origin", "HEAD")
    print("warm run after every base branch moved …", flush=True)
    missed += run_all(run, paths, env)
    times: dict[str, list[float]] = {"miss": [], "hit": []}
    for name in names:
        for cache, seconds in setup_times(env, name).items():
            times.setdefault(cache, []).extend(seconds)
    cold = sum(times["miss"]) / len(times["miss"])
    warm = sum(times["hit"]) / len(times["hit"])
    result = {"repos": args.repos, "campaigns": args.campaigns, "cold_setup_s": round(cold, 3),
              "warm_setup_s": round(warm, 3), "warm_over_cold": round(warm / cold, 3),
              "misses": len(times["miss"]), "hits": len(times["hit"]),
              "not_pr_open": missed}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if missed:
        raise SystemExit(f"{missed} target run(s) did not end with an open PR")


if __name__ == "__main__":
    main()
