"""`orchestrator cache`: the environment cache — what setup produced, listed and pruned."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table

from orchestrator_assets.cli.options import OUTPUT, make_console
from orchestrator_assets.spec.settings import Settings

console = make_console()
errors = make_console(stderr=True)


@click.group()
def cache() -> None:
    """The environment cache: what setup produced, restored instead of running setup again."""


def _env_cache():
    from resources.env_cache import EnvCache

    settings = Settings()
    return EnvCache(settings.env_cache_dir, settings.env_cache_max_mb * 1024 * 1024)


@cache.command(name="info")
@OUTPUT
def cache_info(output: str) -> None:
    """List cached environments (least recently used first) and their total size."""
    env_cache = _env_cache()
    entries = env_cache.entries()
    if output == "json":
        click.echo(json.dumps([e.model_dump() for e in entries], indent=2))
        return
    table = Table()
    for column in ("key", "target", "size", "last used", "paths"):
        table.add_column(column)
    for e in entries:
        used = datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(e.key[:12], str(e.inputs.get("target", "")), _mb(e.size_bytes), used,
                      ", ".join(e.paths))  # fmt: skip
    console.print(table)
    total = sum(e.size_bytes for e in entries)
    console.print(f"{len(entries)} environment(s), {_mb(total)} of {_mb(env_cache.max_bytes)} "
                  f"in {env_cache.root}")  # fmt: skip


@cache.command(name="prune")
@click.option("--max-mb", type=int, help="Evict until the cache is at most this size (0: all).")
def cache_prune(max_mb: int | None) -> None:
    """Evict least-recently-used environments down to the limit (default: the configured one)."""
    env_cache = _env_cache()
    limit = env_cache.max_bytes if max_mb is None else max_mb * 1024 * 1024
    evicted = env_cache.prune(limit)
    console.print(
        f"evicted {len(evicted)} environment(s), {_mb(sum(e.size_bytes for e in evicted))}"
    )


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
