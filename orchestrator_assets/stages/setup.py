"""The setup step of a change: the campaign's or profile's setup commands, their outputs kept in
the environment cache under a key of what determines them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.target import Target
from orchestrator_assets.stages.records import (
    SetupSummary,
)
from orchestrator_assets.stages.workbench import Log, Workbench
from orchestrator_assets.stages.workspaces import directory, in_directory
from resources.env_cache import EnvCache, inside, manifest_digest, outermost
from resources.git import run_git
from resources.sandboxes.base import ExecResult, Sandbox


def run_setup(
    spec: CampaignSpec, target: Target, sandbox: Sandbox, bench: Workbench, log: Log
) -> tuple[ExecResult | None, SetupSummary | None]:
    """Prepare the workspace: restore the cached environment, or run the target's setup
    commands (and cache what they produced). Returns the command that failed, if one did."""
    commands = spec.setup_for(target, bench.profile_setup)
    if not commands:
        return None, None
    started = time.monotonic()
    # A workspace target (`Target.path`) is set up in its directory: its manifests, its outputs.
    ws = directory(sandbox.workspace, target)
    cache_paths = spec.cache_paths if spec.cache_paths is not None else bench.cache_paths
    # A target's own cache_paths are cached besides the campaign's (or the profile's).
    cache_paths = [*cache_paths, *(p for p in target.cache_paths if p not in cache_paths)]
    inputs = {
        "target": target.key,
        "setup": commands,
        "profile": bench.profile_name,
        "manifests": manifest_digest(ws, bench.manifests),
        "paths": cache_paths,
        # Entries hold what setup wrote outside the tracked files too; this keeps entries
        # made before that (only `paths`: a hit without e.g. a generated `_version.py`) unused.
        "outputs": "untracked",
    }
    if bench.environment != "local":  # keeps the local sandbox's keys as they were
        inputs["environment"] = bench.environment
    key = EnvCache.key(inputs)
    if bench.env_cache is not None and cache_paths and bench.use_cache:
        hit = bench.env_cache.restore(key, ws)
        if hit is not None:
            took = round(time.monotonic() - started, 3)
            log(f"{target.key}: environment restored from the cache ({hit.size_bytes} bytes)")
            summary = SetupSummary(cache="hit", key=key, commands=len(commands), duration_s=took,
                                   size_bytes=hit.size_bytes)  # fmt: skip
            return None, summary
    caching = bench.env_cache is not None and bool(cache_paths)
    before = _setup_outputs(ws) if caching else _SetupOutputs(set(), set())
    for argv in commands:
        result = sandbox.exec(
            in_directory(argv, target),
            timeout_s=bench.setup_timeout_s,
            network=bench.setup_network,
            on_output=bench.streamer(target, "setup", log),
        )
        if not result.ok:
            log(f"{target.key}: setup FAILED: {result.describe_failure()}")
            return result, None
    stored = None
    if bench.env_cache is not None and caching:
        after = _setup_outputs(ws)
        # A hit must leave the workspace as setup would: keep whatever setup wrote outside the
        # tracked files (a generated `_version.py`, an `*.egg-info`), not only `cache_paths`.
        written = outermost(sorted(after.untracked - before.untracked))
        covered = outermost(cache_paths)
        extra = [p for p in written if not inside(p, covered)]
        if extra:
            log(f"{target.key}: setup wrote {_names(extra)} besides cache_paths; cached with "
                "the environment")  # fmt: skip
        changed = sorted(after.modified - before.modified)
        if changed:
            log(f"{target.key}: WARNING: setup changed tracked file(s) {_names(changed)}; a "
                "cache hit does not redo that unless `cache_paths` names them")  # fmt: skip
        stored = bench.env_cache.store(key, ws, [*cache_paths, *written], inputs)
    took = round(time.monotonic() - started, 3)
    log(f"{target.key}: setup done ({len(commands)} command(s), {took:.1f}s)")
    return None, SetupSummary(
        cache="miss" if stored is not None else "off",
        key=key, commands=len(commands), duration_s=took,
        size_bytes=stored.size_bytes if stored else 0,
    )  # fmt: skip


@dataclass
class _SetupOutputs:
    """What a workspace holds besides its committed tree."""

    untracked: set[str]  # untracked or ignored paths (a wholly untracked folder as one path)
    modified: set[str]  # tracked files changed in the working tree


def _setup_outputs(ws: Path) -> _SetupOutputs:
    """The workspace's untracked/ignored paths and modified tracked files (NUL-separated
    listings: a path may hold any character)."""
    others = run_git(["ls-files", "-z", "--others", "--directory"], ws)
    modified = run_git(["diff", "--name-only", "--relative", "-z"], ws)
    return _SetupOutputs(
        untracked={p.rstrip("/") for p in others.split("\0") if p.strip("/")},
        modified={p for p in modified.split("\0") if p},
    )


def _names(paths: list[str], limit: int = 10) -> str:
    """Paths for a log line, at most `limit` of them."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more
