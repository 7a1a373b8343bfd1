"""Setup steps: a target's dependencies are installed before the transformation and verifiers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import RepoSpec, create_repo
from tests.conftest import Platform, statuses

pytestmark = pytest.mark.usefixtures("bwrap")

INSTALL = "python -m pip install --quiet --no-index --find-links vendor --target .deps greetlib"
CONFTEST = (
    "import pathlib, sys\n\nsys.path.insert(0, str(pathlib.Path(__file__).parent / '.deps'))\n"
)
APP = "from greetlib import greet\n\nGREETING = greet('OLD')\n"
TEST = (
    "from app import GREETING\n\n\ndef test_greeting():\n    assert GREETING.startswith('hello')\n"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small local dependency, built as a wheel (no registry involved)."""
    root = tmp_path_factory.mktemp("greetlib")
    (root / "greetlib").mkdir()
    (root / "greetlib" / "__init__.py").write_text("def greet(name):\n    return f'hello {name}'\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "greetlib"\nversion = "0.1"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(root / "dist"), str(root)],
        check=True,
    )  # fmt: skip
    (built,) = (root / "dist").glob("greetlib-*.whl")
    return built


def needs_greetlib(platform: Platform, name: str, wheel: Path, branch: str = "main") -> Path:
    """A repository whose tests import greetlib, vendored as a wheel, installed by setup."""
    files = {"app.py": APP, "tests/test_app.py": TEST, "conftest.py": CONFTEST,
             f"vendor/{wheel.name}": ""}  # fmt: skip
    repo = create_repo(platform.fleet, RepoSpec(name, files, branch=branch))
    # put the real wheel bytes in (RepoSpec files are text): commit it on the default branch
    work = platform.root / f"work-{name}"
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    (work / "vendor" / wheel.name).write_bytes(wheel.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "commit", "-qam", "vendor greetlib"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True)
    return repo


def test_verifiers_pass_only_after_setup(platform: Platform, wheel: Path):
    repo = needs_greetlib(platform, "alpha", wheel)
    without = platform.write_campaign("nosetup", targets=[str(repo)])
    assert statuses(platform.run(without).report) == {"acme__alpha": "verification_failed"}

    with_setup = platform.write_campaign("withsetup", targets=[str(repo)], setup=[INSTALL])
    outcome = platform.run(with_setup)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    # what setup installed is not part of the change
    assert outcome.report.set_index("target").loc["acme__alpha", "files_changed"] == 1
    changed = subprocess.run(
        ["git", "-C", str(repo), "diff", "--name-only", "main", "campaign/withsetup"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert changed == ["app.py"]


def test_failing_setup_is_a_per_target_failure(platform: Platform, wheel: Path):
    good = needs_greetlib(platform, "good", wheel, branch="master")
    bad = needs_greetlib(platform, "bad", wheel)
    path = platform.write_campaign(
        "setup",
        targets=[str(good), {"repo": str(bad), "setup_extend": [["python", "-c",
                 "import sys; print('no compiler here'); sys.exit(7)"]]}],
        setup=[INSTALL],
    )  # fmt: skip
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__good": "pr_open", "acme__bad": "setup_failed"}
    reason = outcome.report.set_index("target").loc["acme__bad", "reason"]
    assert reason.startswith("setup failed: `python -c ") and "import sys;" in reason
    assert "code 7" in reason
    assert (good / "pulls" / "1.json").read_text().count('"base": "master"') == 1


def test_a_target_can_replace_the_setup(platform: Platform, wheel: Path):
    repo = needs_greetlib(platform, "alpha", wheel)
    path = platform.write_campaign(
        "override",
        targets=[{"repo": str(repo), "setup": [INSTALL]}],
        setup=[["python", "-c", "raise SystemExit(1)"]],  # would fail: replaced for this target
    )
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}


def stage_meta(platform: Platform, campaign: str, stage: str, target: str) -> dict:
    from dagster import AssetKey, AssetRecordsFilter

    with platform.instance() as instance:
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey([campaign, stage]), asset_partitions=[target]), limit=1
        ).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def commit_file(repo: Path, work: Path, name: str, text: str) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "pull", "-q"], check=True)
    (work / name).write_text(text)
    subprocess.run([*git, "add", name], check=True)
    subprocess.run([*git, "commit", "-qm", f"update {name}"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True)


def test_environment_cache_hits_and_a_manifest_change_misses(platform: Platform, wheel: Path):
    repo = needs_greetlib(platform, "alpha", wheel)
    path = platform.write_campaign(
        "cached", targets=[str(repo)], setup=[INSTALL], cache_paths=[".deps"]
    )
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    change = stage_meta(platform, "cached", "change", "acme__alpha")
    verification = stage_meta(platform, "cached", "verification", "acme__alpha")
    assert change["setup_cache"] == "miss" and change["setup_cache_bytes"] > 0
    # the verification sandbox got the environment from the cache, and its tests passed on it
    assert verification["setup_cache"] == "hit" and verification["passed"] is True

    # upstream work that does not touch a manifest: the change is redone, setup is restored
    work = platform.root / "work-alpha"
    commit_file(repo, work, "README.md", "docs\n")
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    assert stage_meta(platform, "cached", "change", "acme__alpha")["setup_cache"] == "hit"

    # a dependency manifest changes: the cached environment no longer applies
    commit_file(repo, work, "requirements.txt", "greetlib==0.1\n")
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    assert stage_meta(platform, "cached", "change", "acme__alpha")["setup_cache"] == "miss"

    info = json.loads(platform.cli("cache", "info", "--output", "json").stdout)
    assert len(info) == 2 and {e["inputs"]["target"] for e in info} == {"acme__alpha"}
    assert "evicted 2 environment(s)" in platform.cli("cache", "prune", "--max-mb", "0").stdout
    assert json.loads(platform.cli("cache", "info", "--output", "json").stdout) == []


def test_cache_evicts_least_recently_used_beyond_its_limit(tmp_path: Path):
    from resources.env_cache import EnvCache

    cache = EnvCache(tmp_path / "cache", max_bytes=2500)
    for name in ("a", "b", "c"):
        ws = tmp_path / f"ws-{name}"
        (ws / ".venv").mkdir(parents=True)
        (ws / ".venv" / "lib").write_bytes(b"x" * 1000)
        cache.store(name, ws, [".venv", "missing"], {"target": name})
    assert [e.key for e in cache.entries()] == ["b", "c"]  # a was evicted: 3000 > 2500
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert cache.restore("b", fresh).paths == [".venv"]  # b is now the most recently used
    assert (fresh / ".venv" / "lib").read_bytes() == b"x" * 1000
    ws = tmp_path / "ws-d"
    (ws / ".venv").mkdir(parents=True)
    (ws / ".venv" / "lib").write_bytes(b"y" * 1000)
    cache.store("d", ws, [".venv"], {"target": "d"})
    assert [e.key for e in cache.entries()] == ["b", "d"]  # c, least recently used, went
    assert cache.restore("a", fresh) is None


def test_a_profile_gives_default_setup_and_cache_paths(platform: Platform, wheel: Path):
    repo = needs_greetlib(platform, "alpha", wheel)
    (platform.campaigns / "profiles.yaml").parent.mkdir(parents=True, exist_ok=True)
    (platform.campaigns / "profiles.yaml").write_text(
        "profiles:\n"
        "  python:\n"
        f"    setup: ['{INSTALL}']\n"
        "    cache_paths: [.deps]\n"
        "    setup_network: none\n"  # this setup needs no registry: --no-index
    )
    path = platform.write_campaign("byprofile", targets=[str(repo)], profile="python")
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    verification = stage_meta(platform, "byprofile", "verification", "acme__alpha")
    assert verification["setup_cache"] == "hit" and verification["passed"] is True


# Like hatch-vcs in an editable install: setup writes a git-ignored module that the package
# imports, next to the environment it builds; both carry the same random stamp.
GENERATE = [
    "python", "-c",
    "import os, uuid; s = uuid.uuid4().hex; os.makedirs('.venv', exist_ok=True); "
    "open('.venv/stamp', 'w').write(s); "
    "open('src/pkg/_version.py', 'w').write(f'STAMP = {s!r}\\n')",
]  # fmt: skip
GENERATED_TEST = (
    "import pathlib\n\nfrom pkg._version import STAMP\n\n\n"
    "def test_the_generated_module_belongs_to_the_environment():\n"
    "    stamp = pathlib.Path(__file__).parents[1] / '.venv' / 'stamp'\n"
    "    assert STAMP == stamp.read_text()\n"
)


def generated_module_repo(platform: Platform, name: str) -> Path:
    """A repository whose tests import `pkg._version`, which only its setup writes (ignored)."""
    files = {
        ".gitignore": "src/pkg/_version.py\n",
        "app.py": "GREETING = 'OLD'\n",
        "src/pkg/__init__.py": "from pkg._version import STAMP as STAMP\n",
        "conftest.py": "import pathlib, sys\n\n"
        "sys.path.insert(0, str(pathlib.Path(__file__).parent / 'src'))\n",
        "tests/test_pkg.py": GENERATED_TEST,
    }
    return create_repo(platform.fleet, RepoSpec(name, files))


def cached_file(platform: Platform, entry: dict, rel: str) -> bytes:
    return (platform.root / "data" / "env-cache" / entry["key"] / "files" / rel).read_bytes()


def test_a_cache_hit_restores_the_ignored_files_setup_wrote(platform: Platform):
    repo = generated_module_repo(platform, "gen")
    path = platform.write_campaign("generated", targets=[str(repo)], setup=[GENERATE])
    # first run: the change's setup misses and runs, the verification's restores it
    assert statuses(platform.run(path).report) == {"acme__gen": "pr_open"}
    assert stage_meta(platform, "generated", "change", "acme__gen")["setup_cache"] == "miss"
    verification = stage_meta(platform, "generated", "verification", "acme__gen")
    assert verification["setup_cache"] == "hit" and verification["passed"] is True

    # upstream work without a manifest change: the change is redone on a restored environment
    work = platform.root / "work-gen"
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    commit_file(repo, work, "README.md", "docs\n")
    assert statuses(platform.run(path).report) == {"acme__gen": "pr_open"}
    assert stage_meta(platform, "generated", "change", "acme__gen")["setup_cache"] == "hit"
    verification = stage_meta(platform, "generated", "verification", "acme__gen")
    assert verification["setup_cache"] == "hit" and verification["passed"] is True

    # the cached module is byte for byte what that setup wrote beside its environment
    (entry,) = json.loads(platform.cli("cache", "info", "--output", "json").stdout)
    assert entry["paths"] == [".venv", "src/pkg/_version.py"]  # what setup wrote, nothing else
    stamp = cached_file(platform, entry, ".venv/stamp").decode()
    assert cached_file(platform, entry, "src/pkg/_version.py") == f"STAMP = {stamp!r}\n".encode()


def test_a_target_adds_cache_paths_which_key_the_cache(platform: Platform, wheel: Path):
    repo = needs_greetlib(platform, "alpha", wheel)
    target = {"repo": str(repo), "cache_paths": [".deps"]}
    path = platform.write_campaign("percache", targets=[target], setup=[INSTALL])
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    verification = stage_meta(platform, "percache", "verification", "acme__alpha")
    assert verification["setup_cache"] == "hit" and verification["passed"] is True
    (entry,) = json.loads(platform.cli("cache", "info", "--output", "json").stdout)
    assert entry["inputs"]["paths"] == [".venv", ".deps"] and ".deps" in entry["paths"]

    # other cache_paths are other inputs: a new entry, not the one cached without them
    target["cache_paths"] = [".deps", "build"]
    path = platform.write_campaign("percache", targets=[target], setup=[INSTALL])
    commit_file(repo, platform.root / "work-alpha", "README.md", "docs\n")
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    assert stage_meta(platform, "percache", "change", "acme__alpha")["setup_cache"] == "miss"


def test_target_cache_paths_must_stay_inside_the_workspace(tmp_path: Path):
    from orchestrator_assets.spec.campaign import load_campaign
    from orchestrator_assets.spec.errors import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntargets:\n  - {repo: ./r, cache_paths: [../outside]}\n"
        "transformation: {kind: deterministic, command: 'true'}\n"
    )
    with pytest.raises(SpecError, match=r"targets\.0\.cache_paths: .*inside the workspace"):
        load_campaign(path)
