"""Setup with a cold and a warm environment cache, over a generated fleet.

    python benchmarks/setup_cache.py --repos 10 --json setup.json

Each repository vendors a small wheel; the campaign's setup makes a virtualenv and installs it
(`python -m venv .venv`, `pip install --no-index`), cached as `.venv`. The first run prepares
every workspace with a cold cache; then every base branch moves (an upstream commit that does not
touch a manifest) and the campaign runs again, now restoring the environment. The result is the
mean setup time per workspace, cold and warm, as recorded in the `change` metadata.
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
]
APP = "GREETING = 'OLD'\n"


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
        git(clone, "add", "vendor")
        git(clone, "commit", "-qm", "vendor greetlib")
        git(clone, "push", "-q", "origin", "HEAD")
        repos.append(repo)
    return repos


def setup_times(env: dict, campaign: str) -> dict[str, list[float]]:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-setup-"))
    repos = make_repos(work, args.repos, build_wheel(work))
    env = platform_env(work / "p")
    path = write_campaign(work / "p", "setupbench", repos, 4)
    spec = path.read_text().replace("verifiers:", "setup:\n" + "".join(
        f"- {c}\n" for c in SETUP) + "cache_paths: [.venv]\nverifiers:")  # fmt: skip
    spec = spec.replace("command: python -m pytest -q -p no:cacheprovider",
                        "command: .venv/bin/python -c 'import greetlib'")  # fmt: skip
    path.write_text(spec)
    run = [str(BIN / "orchestrator"), "run", "--file", str(path), "--output", "json"]
    print(f"cold run over {len(repos)} repositories …", flush=True)
    subprocess.run(run, env=env, check=True, capture_output=True)
    for repo in repos:  # upstream work on every base branch: the change is redone
        clone = work / "clones" / repo.stem
        (clone / "NOTES.md").write_text("upstream\n")
        git(clone, "add", "NOTES.md")
        git(clone, "commit", "-qm", "upstream")
        git(clone, "push", "-q", "origin", "HEAD")
    print("warm run after every base branch moved …", flush=True)
    subprocess.run(run, env=env, check=True, capture_output=True)
    times = setup_times(env, "setupbench")
    cold = sum(times["miss"]) / len(times["miss"])
    warm = sum(times["hit"]) / len(times["hit"])
    result = {"repos": args.repos, "cold_setup_s": round(cold, 3), "warm_setup_s": round(warm, 3),
              "warm_over_cold": round(warm / cold, 3), "misses": len(times["miss"]),
              "hits": len(times["hit"])}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
