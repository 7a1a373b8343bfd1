"""Secrets: a canary planted in the environment of an end-to-end run — the real Claude Code CLI
(against the scripted model) echoing it, a verified change and a pull request — appears in no byte
the platform stores: the Dagster home (SQLite databases, compute logs, step outputs), the data
directory (transcripts, caches), the forge's repositories and PR records, and, on PostgreSQL, a
dump of the database."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from orchestrator_assets.demo_fleet import create_repo
from tests.conftest import Platform, app_repo, statuses
from tests.fake_model import ScriptedModel, require_claude, text, tool

pytestmark = pytest.mark.usefixtures("bwrap")

CANARY = "canary-" + uuid.uuid4().hex  # the model key: the CLI must have it, nothing may keep it
TOKEN_CANARY = "ghp_canary" + uuid.uuid4().hex  # a code-host token the run does not even use


def stored_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def git_history(repo: Path) -> bytes:
    """Everything a bare repository holds, uncompressed (objects are zlib-packed on disk)."""
    return subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "-p", "--format=%H %an %ae%n%B"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_canary_secret_is_stored_nowhere(request, monkeypatch: pytest.MonkeyPatch, storage: str):
    require_claude()
    platform: Platform = request.getfixturevalue(
        "pg_platform" if storage == "postgres" else "platform"
    )
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    with ScriptedModel() as model:
        env = {"ANTHROPIC_BASE_URL": model.base_url, "ANTHROPIC_API_KEY": CANARY,
               "GITHUB_TOKEN": TOKEN_CANARY, "CLAUDE_CODE_MAX_RETRIES": "0"}  # fmt: skip
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        platform.env.update(env)
        model.script = [
            tool("Bash", {"command": "echo key=$ANTHROPIC_API_KEY token=$GITHUB_TOKEN; "
                          "sed -i s/OLD/NEW/ app.py", "description": "leak and rename"}),
            text(f"Renamed; by the way the key is {CANARY}."),
        ]  # fmt: skip
        path = platform.write_campaign(
            "canary", targets=[str(repo)], concurrency=1,
            transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 4},
        )  # fmt: skip
        # through the CLI, as a user runs it: its output is a place a secret could go too
        proc = platform.cli("run", "--file", str(path), "--output", "json")
        assert model.conversation_requests, "the agent never reached the model"
    assert statuses(platform.run(path).report) == {"acme__alpha": "pr_open"}
    assert (repo / "pulls" / "1.json").exists()
    # the CLI really had the canary: the tool output the model got back carried it
    assert any(CANARY in str(r["json"]["messages"]) for r in model.conversation_requests)

    home, data = Path(platform.env["DAGSTER_HOME"]), Path(platform.env["ORCHESTRATOR_DATA_DIR"])
    files = stored_files(home, data, platform.fleet)
    assert any(p.suffix == ".db" for p in files) or storage == "postgres"
    assert any("transcripts" in p.parts for p in files)
    blobs: dict[str, bytes] = {str(p): p.read_bytes() for p in files}
    blobs["git history"] = git_history(repo)
    blobs["cli output"] = (proc.stdout + proc.stderr).encode()
    if storage == "postgres":
        dump = platform_dump(request, platform)
        assert b"event_logs" in dump and b"acme__alpha" in dump  # the dump holds the campaign
        blobs["pg_dump"] = dump
    for secret in (CANARY, TOKEN_CANARY):
        leaks = [where for where, blob in blobs.items() if secret.encode() in blob]
        assert not leaks, f"{secret[:12]}… stored in: {leaks}"
    # the redaction left its mark where the agent echoed it
    transcript = next(b for w, b in blobs.items() if "transcripts" in w)
    assert b"key=***" in transcript

    # the agent's spend is in the metrics, read back from the event log
    from orchestrator_assets.reports.metrics import EventLogCollector

    collector = EventLogCollector()
    with platform.instance() as instance:
        collector.refresh(instance)
    samples = [s for f in collector.metrics.registry.collect() for s in f.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name
                   and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip

    # one agent run (the second `run` reused the change): two responses of 100 input tokens each
    assert total("campaign_agent_tokens_total", campaign="canary", kind="input") == 200
    assert total("campaign_agent_cost_usd_total", campaign="canary") > 0


def platform_dump(request, platform: Platform) -> bytes:
    server = request.getfixturevalue("postgres")
    return server.dump(platform.pg_database)  # type: ignore[attr-defined]
