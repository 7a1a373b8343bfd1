"""The environment cache under concurrent use: restores, stores and prunes at once, in threads of
one process and in two campaigns running side by side on one data folder and one DAGSTER_HOME."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import create_fleet
from resources import env_cache
from resources.env_cache import EnvCache
from tests.conftest import ORCHESTRATOR, Platform, app_repo


def workspace_with_venv(root: Path, name: str, payload: bytes = b"x" * 1000) -> Path:
    """A workspace as setup leaves it: a `.venv` with a few files."""
    ws = root / name
    (ws / ".venv" / "lib").mkdir(parents=True)
    for i in range(3):
        (ws / ".venv" / "lib" / f"mod{i}.py").write_bytes(payload)
    return ws


def test_a_prune_leaves_an_entry_that_is_being_restored(tmp_path: Path, monkeypatch):
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9)
    cache.store("k", workspace_with_venv(tmp_path, "ws"), [".venv"], {"target": "k"})
    copying, pruned = threading.Event(), threading.Event()
    real_copytree = env_cache.shutil.copytree

    def copytree_after_a_prune(*args, **kwargs):
        # The restore has read the entry and is about to copy it: a prune runs right now.
        copying.set()
        pruned.wait(timeout=10)
        return real_copytree(*args, **kwargs)

    monkeypatch.setattr(env_cache.shutil, "copytree", copytree_after_a_prune)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with ThreadPoolExecutor(1) as pool:
        restoring = pool.submit(cache.restore, "k", fresh)
        assert copying.wait(timeout=10)
        evicted = cache.prune(0)  # wants everything gone, the entry in use included
        pruned.set()
        restored = restoring.result(timeout=30)

    assert evicted == []  # in use: kept
    assert restored is not None and restored.paths == [".venv"]
    assert sorted(p.name for p in (fresh / ".venv" / "lib").iterdir()) == [
        "mod0.py", "mod1.py", "mod2.py",
    ]  # fmt: skip
    assert all(p.read_bytes() == b"x" * 1000 for p in (fresh / ".venv" / "lib").iterdir())
    # once the restore is done, nothing holds the entry: the next prune evicts it
    assert [e.key for e in cache.prune(0)] == ["k"]
    assert cache.entries() == [] and cache.restore("k", tmp_path / "later") is None
    assert not [p for p in cache.root.iterdir() if p.name != ".locks"]  # nothing left behind


def test_two_restores_of_one_entry_do_not_share_a_temporary_file(tmp_path: Path, monkeypatch):
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9)
    cache.store("k", workspace_with_venv(tmp_path, "ws"), [".venv"], {"target": "k"})
    both = threading.Barrier(2, timeout=5)
    real_replace = os.replace

    def replace_together(src, dst, *args, **kwargs):
        # Both restores have written their metadata's temporary file; now both move it.
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace_together)
    targets = [tmp_path / "a", tmp_path / "b"]
    with ThreadPoolExecutor(2) as pool:
        restored = list(pool.map(lambda ws: cache.restore("k", ws), targets))
    assert [r.key for r in restored if r is not None] == ["k", "k"]
    for ws in targets:
        assert (ws / ".venv" / "lib" / "mod0.py").read_bytes() == b"x" * 1000
    (entry,) = cache.entries()
    assert entry.last_used in {r.last_used for r in restored if r is not None}  # one won
    assert [p.name for p in (cache.root / "k").iterdir() if p.name.endswith(".tmp")] == []


def test_many_threads_storing_restoring_and_pruning_lose_nothing(tmp_path: Path):
    """Stores, restores and prunes over a few keys at once, in a cache too small for them all:
    every restore gives a whole environment or none, and nothing raises."""
    cache = EnvCache(tmp_path / "cache", max_bytes=12_000)  # room for about two entries
    keys = [f"key{i}" for i in range(5)]
    sources = {k: workspace_with_venv(tmp_path, f"src-{k}", k.encode() * 250) for k in keys}
    errors: list[BaseException] = []

    def work(n: int) -> str:
        key = keys[n % len(keys)]
        ws = tmp_path / "ws" / str(n)
        ws.mkdir(parents=True)
        try:
            if cache.restore(key, ws) is None:
                cache.store(key, sources[key], [".venv"], {"target": key})
                return "miss"
            files = sorted((ws / ".venv" / "lib").iterdir())
            assert [p.name for p in files] == ["mod0.py", "mod1.py", "mod2.py"]
            assert all(p.read_bytes() == key.encode() * 250 for p in files)
            return "hit"
        except BaseException as exc:  # kept, to report every one
            errors.append(exc)
            raise

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(work, range(200)))
    assert errors == []
    assert outcomes.count("hit") > 0 and outcomes.count("miss") > 0
    # A prune skips entries in use, so the limit holds again once nothing is being restored.
    cache.prune(cache.max_bytes)
    assert sum(e.size_bytes for e in cache.entries()) <= 12_000
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".") and p.name != ".locks"]


def test_an_entry_outside_the_workspace_is_not_restored(tmp_path: Path):
    """Paths come from the entry's metadata: one that climbs out of the workspace is ignored."""
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9)
    ws = workspace_with_venv(tmp_path, "ws")
    entry = cache.store("k", ws, [".venv", "../escape", "/etc/passwd", "./.venv/lib"], {})
    assert entry is not None and entry.paths == [".venv"]


# Setup writes a 100 kB "environment": 50 of them overflow a 1 MB cache, so prunes evict while
# other targets restore, in this process and in the other campaign's.
FILL = [
    "python", "-c",
    "import os; os.makedirs('.venv', exist_ok=True); "
    "open('.venv/blob', 'wb').write(b'e' * 100_000)",
]  # fmt: skip
CHECK_ENV = [
    "python", "-c",
    "import os, sys; sys.exit(os.path.getsize('.venv/blob') != 100_000)",
]  # fmt: skip
LOCKING = ("database is locked", "database table is locked", "lock timeout", "BlockingIOError")


def report_rows(stdout: str) -> list[dict]:
    """The JSON report that `orchestrator run --output json` prints after its progress lines."""
    return json.loads(stdout[stdout.index("\n[\n") + 1 :])


@pytest.mark.usefixtures("bwrap")
def test_two_campaigns_at_once_share_the_cache_and_lose_nothing(platform: Platform):
    from dagster import AssetKey, AssetRecordsFilter

    repos = create_fleet(platform.fleet, [app_repo(f"r{i:02d}", "GREETING = 'OLD'\n")
                                          for i in range(50)])  # fmt: skip
    targets = [str(p) for p in repos]
    platform.set_env("ORCHESTRATOR_ENV_CACHE_MAX_MB", "1")
    # The instance's storage exists before the two runs start, as after any earlier use: two
    # first runs on a fresh DAGSTER_HOME race creating its SQLite schema ("table
    # alembic_version already exists"), which is the instance's setup, not this cache's.
    platform.cli("cache", "info")
    with platform.instance():
        pass
    files = [
        platform.write_campaign(
            name,
            targets=targets,
            setup=[FILL],
            concurrency=8,
            verifiers=[{"name": "env", "command": CHECK_ENV}],
        )
        for name in ("first", "second")
    ]
    runs = [
        subprocess.Popen(
            [ORCHESTRATOR, "run", "--file", str(f), "--output", "json"],
            env=platform.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
        assert not [word for word in LOCKING if word in out or word in err], err[-3000:]
        rows = report_rows(out)
        assert len(rows) == 50
        assert {r["status"] for r in rows} == {"pr_open"}, [
            r for r in rows if r["status"] != "pr_open"
        ]

    # every target got exactly one PR per campaign, and exactly one change record each
    keys = sorted(f"acme__r{i:02d}" for i in range(50))
    for repo in repos:
        prs = [json.loads(p.read_text()) for p in (repo / "pulls").glob("*.json")]
        assert sorted(pr["head"] for pr in prs) == ["campaign/first", "campaign/second"]
    caches: list[str] = []
    with platform.instance() as instance:
        for name in ("first", "second"):
            for stage in ("change", "verification"):
                records = instance.fetch_materializations(
                    AssetRecordsFilter(AssetKey([name, stage])), limit=1000
                ).records
                assert sorted(r.partition_key for r in records) == keys, (name, stage)
                caches += [r.asset_materialization.metadata["setup_cache"].value for r in records]
    assert "hit" in caches and "miss" in caches  # the cache was shared, and it was pruned

    # the cache is whole: within its limit once idle, every entry complete, nothing half-done
    cache_root = platform.root / "data" / "env-cache"
    entries = json.loads(platform.cli("cache", "info", "--output", "json").stdout)
    assert entries and sum(e["size_bytes"] for e in entries) <= 1024 * 1024 + 100_000
    for entry in entries:
        assert (cache_root / entry["key"] / "files" / ".venv" / "blob").stat().st_size == 100_000
    assert sorted(p.name for p in cache_root.iterdir() if p.name.startswith(".")) == [".locks"]


def test_two_runs_started_at_once_on_a_new_dagster_home_both_succeed(platform: Platform):
    """The first commands on a new DAGSTER_HOME create its storage; two at once must not both
    try (SQLite: "table ... already exists")."""
    paths = []
    for name in ("one", "two"):
        repos = platform.make_fleet([app_repo(f"{name}x", "GREETING = 'OLD'\n")])
        paths.append(platform.write_campaign(name, targets=[str(r) for r in repos]))
    assert not list(Path(platform.env["DAGSTER_HOME"]).glob("*.db"))  # nothing made yet
    procs = [
        subprocess.Popen(
            [ORCHESTRATOR, "run", "--file", str(p)],
            env=platform.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for p in paths
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
