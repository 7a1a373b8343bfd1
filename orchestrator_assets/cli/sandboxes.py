"""`orchestrator sandboxes`: what sandboxes exist, what crashed runs left, and the warm pools.

`list` and `prune` cover every provider: workspaces on this machine, containers on the Docker
engine, and the pods (kubernetes) and SandboxClaims (agent-sandbox) in the namespaces the
profiles name. `pools` shows each agent-sandbox profile's SandboxWarmPool — its size from the
cluster, and from the claims this platform made (`<data>/sandboxes/claims.jsonl`) how many were
served warm and cold and how long each took to become ready.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import click
from rich.table import Table

from orchestrator_assets.cli.options import OUTPUT, make_console, open_instance
from orchestrator_assets.spec.settings import Settings

console = make_console()
errors = make_console(stderr=True)


def _profiles(settings: Settings):
    from orchestrator_assets.spec.profiles import load_profiles

    return load_profiles(settings.resolved_profiles_file())


def claims_log_path(settings: Settings):
    """Where the agent-sandbox provider records its claims (see SandboxResource)."""
    return settings.data_dir / "sandboxes" / "claims.jsonl"


@click.group()
def sandboxes() -> None:
    """Sandboxes on every provider: what is running, what crashed runs left, the warm pools."""


def _leftovers():
    from orchestrator_assets.assets.sweep import find_leftovers, profile_clusters

    settings = Settings()
    clusters = profile_clusters(_profiles(settings))
    found, problem = find_leftovers(settings.workspaces_dir, open_instance(), clusters=clusters)
    if problem:
        errors.print(f"[yellow]{problem}[/]")
    return found


@sandboxes.command(name="list")
@OUTPUT
def sandboxes_list(output: str) -> None:
    """Every sandbox workspace, container, pod and claim, with its campaign, target and run."""
    found = _leftovers()
    if output == "json":
        rows = [{k: v for k, v in vars(x).items() if k != "handle"} for x in found]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("kind", "id", "campaign", "target", "run", "state"):
        table.add_column(column, overflow="fold")
    for x in found:
        state = f"[red]orphan[/]: {x.why}" if x.orphan else f"in use: {x.why}"
        table.add_row(x.kind, x.ident, x.campaign, x.target, x.run_id[:8], state)
    console.print(table)


@sandboxes.command(name="prune")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
def sandboxes_prune(dry_run: bool) -> None:
    """Remove the workspaces, containers, pods and claims whose run or process is gone.

    A sandbox whose run is still queued or started (and whose process, on this host, is alive)
    is left alone.
    """
    found = [x for x in _leftovers() if x.orphan]
    failed = 0
    for x in found:
        console.print(
            f"{'would remove' if dry_run else 'removing'} {x.kind} {x.ident} "
            f"({x.campaign}/{x.target}: {x.why})",
            soft_wrap=True,
        )
        if not dry_run:
            try:
                x.remove()
            except Exception as exc:  # one failure does not stop the sweep
                failed += 1
                errors.print(f"[red]cannot remove {x.kind} {x.ident}:[/] {exc}")
    verb = "would be removed" if dry_run else "removed"
    console.print(f"{len(found) - failed} orphaned sandbox resource(s) {verb}")
    if failed:
        raise SystemExit(1)


def pool_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per agent-sandbox profile: its pool's size and the claims served warm/cold."""
    from resources.sandboxes.agent_sandbox import ClaimLog, pool_status

    claims = ClaimLog(claims_log_path(settings)).entries()
    rows = []
    for name, profile in sorted(_profiles(settings).profiles.items()):
        if profile.provider != "agent-sandbox":
            continue
        access = profile.agent_sandbox
        pool = access.warm_pool or access.template or name
        row: dict[str, Any] = {
            "profile": name,
            "namespace": access.namespace,
            "pool": pool,
            "template": access.template,
            "replicas": None,
            "ready": None,
            "error": None,
        }
        try:
            row.update({k: v for k, v in pool_status(access, pool).items() if k != "template"})
        except Exception as exc:
            from resources.sandboxes.k8s_pod import api_error

            row["error"] = api_error(exc)
        mine = [
            c for c in claims if c.get("pool") == pool and c.get("namespace") == access.namespace
        ]
        for launch in ("warm", "cold"):
            times = [c["ready_s"] for c in mine if c.get("ok") and c.get("launch") == launch]
            row[launch] = len(times)
            row[f"{launch}_ready_s_median"] = round(statistics.median(times), 3) if times else None
            row[f"{launch}_ready_s_max"] = round(max(times), 3) if times else None
        row["failed"] = sum(1 for c in mine if not c.get("ok"))
        rows.append(row)
    return rows


@sandboxes.command(name="pools")
@OUTPUT
def sandboxes_pools(output: str) -> None:
    """Each agent-sandbox warm pool: size, claims served warm vs cold, their time to ready."""
    rows = pool_rows(Settings())
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no profile uses the agent-sandbox provider")
        return
    table = Table()
    for column in (
        "profile",
        "pool",
        "size (ready/desired)",
        "warm",
        "cold",
        "failed",
        "ready warm (median/max)",
        "ready cold (median/max)",
    ):
        table.add_column(column, overflow="fold")

    def seconds(row: dict, launch: str) -> str:
        med, top = row[f"{launch}_ready_s_median"], row[f"{launch}_ready_s_max"]
        return "-" if med is None else f"{med:.2f}s / {top:.2f}s"

    for row in rows:
        size = (
            f"[yellow]unknown[/]: {row['error']}"
            if row["error"]
            else f"{row['ready']}/{row['replicas']}"
        )
        table.add_row(
            row["profile"],
            f"{row['namespace']}/{row['pool']}",
            size,
            str(row["warm"]),
            str(row["cold"]),
            str(row["failed"]),
            seconds(row, "warm"),
            seconds(row, "cold"),
        )
    console.print(table)
