"""Agentic campaigns with the real Claude Code CLI; only the model behind it is scripted."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter

from orchestrator_assets.demo_fleet import create_repo
from resources.agents.base import AgentRequest
from resources.agents.claude_code import ClaudeCodeAgent
from resources.agents.judge import price
from resources.sandboxes.local import LocalSandboxProvider
from tests.conftest import STRICT_TEST, Platform, app_repo, statuses
from tests.fake_model import ScriptedModel, error, last_user_text, require_claude, text, tool

pytestmark = pytest.mark.usefixtures("bwrap")

SECRET = "sk-test-" + uuid.uuid4().hex  # a key that must never be stored anywhere


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch):
    require_claude()
    with ScriptedModel() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")  # an API error fails at once
        yield server


def workdir(body: dict) -> str:
    """The working directory the CLI tells the model about (the target's workspace)."""
    system = body.get("system")
    blob = json.dumps(system) + json.dumps(body.get("messages"))
    return re.search(r"[Ww]orking directory: ([^\s\\\\\"]+)", blob).group(1)


def agentic(platform: Platform, repos: list[Path], prompt: str = "Rename OLD to NEW.", **extra):
    return platform.write_campaign(
        "agentic",
        targets=[str(r) for r in repos],
        transformation={"kind": "agentic", "prompt": prompt, "model": "claude-sonnet-4-5",
                        "max_turns": 6},
        concurrency=1,
        **extra,
    )  # fmt: skip


def change_meta(platform: Platform, target: str) -> dict:
    with platform.instance() as instance:
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey(["agentic", "change"]), asset_partitions=[target]), limit=1
        ).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_agent_edits_files_and_the_pr_opens_with_its_cost(platform: Platform, model):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        lambda body: tool("Read", {"file_path": f"{workdir(body)}/tests/test_app.py"}),
        tool("Bash", {"command": "python -m pytest -q -p no:cacheprovider", "description": "t"}),
        text("Renamed OLD to NEW; the tests pass."),
    ]
    outcome = platform.run(agentic(platform, [repo]))
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    assert (repo / "pulls" / "1.json").exists()

    # the prompt: the request, the target, the base branch and the verifiers to run
    prompt = last_user_text(model.conversation_requests[0]["json"])
    assert "Rename OLD to NEW." in prompt and "acme__alpha" in prompt and "`main`" in prompt
    assert "python -m pytest -q -p no:cacheprovider" in prompt

    meta = change_meta(platform, "acme__alpha")
    transcript = [json.loads(line) for line in Path(meta["transcript"]).read_text().splitlines()]
    (result,) = [e for e in transcript if e["type"] == "result"]
    assert meta["cost_usd"] == pytest.approx(result["total_cost_usd"]) and meta["cost_usd"] > 0
    assert meta["input_tokens"] == result["usage"]["input_tokens"] == 4 * 100
    assert meta["output_tokens"] == 4 * 20
    assert meta["cache_read_tokens"] == 4 * 50 and meta["cache_write_tokens"] == 4 * 10
    assert meta["num_turns"] == result["num_turns"] and meta["model"] == "claude-sonnet-4-5"
    assert "the tests pass" in meta["agent_message"]
    assert outcome.report.set_index("target").loc["acme__alpha", "cost_usd"] == pytest.approx(
        result["total_cost_usd"]
    )
    # the agent's progress streamed into the run log; the run is tagged with campaign and target
    with platform.instance() as instance:
        (run_id,) = outcome.run_ids
        messages = "\n".join(e.user_message for e in instance.all_logs(run_id))
        tags = instance.get_run_by_id(run_id).tags
    assert "acme__alpha: agent → Bash sed -i s/OLD/NEW/ app.py" in messages
    assert "acme__alpha: agent: Renamed OLD to NEW" in messages
    assert tags["campaign"] == "agentic" and tags["target"] == "acme__alpha"
    # the tool calls really ran in the workspace: the pytest output came back to the model
    assert any(
        "1 passed" in json.dumps(r["json"]["messages"][-1]) for r in model.conversation_requests
    )


def test_agent_change_that_breaks_a_verifier_is_blocked(platform: Platform, model):
    repo = create_repo(platform.fleet, app_repo("strict", "GREETING = 'OLD'\n", STRICT_TEST))
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Done."),
    ]
    outcome = platform.run(agentic(platform, [repo]))
    assert statuses(outcome.report) == {"acme__strict": "verification_failed"}
    assert not (repo / "pulls").exists() or not list((repo / "pulls").glob("*.json"))


@pytest.mark.parametrize(
    ("status", "words"),
    [(500, "500"), (429, "429"), (529, "overloaded")],
)
def test_model_api_errors_fail_the_target_with_the_reason(
    platform: Platform, model, status: int, words: str
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [error(status, forever=True)]
    outcome = platform.run(agentic(platform, [repo]))
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["status"] == "change_failed"
    assert "the agent failed" in row["reason"] and words in row["reason"].lower()


def test_turn_limit_fails_the_target(platform: Platform, model):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [tool("Bash", {"command": "true", "description": "x"})] * 10
    path = platform.write_campaign(
        "agentic", targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Loop.", "max_turns": 2},
    )  # fmt: skip
    outcome = platform.run(path)
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["status"] == "change_failed" and "turn limit (2 turns)" in row["reason"]


def test_budget_stops_new_agent_runs_and_a_raised_budget_picks_them_up(platform: Platform, model):
    repos = [
        create_repo(platform.fleet, app_repo(n, "GREETING = 'OLD'\n")) for n in ("a", "b", "c")
    ]
    # each run: one response of 100k input tokens, about $0.30 with claude-sonnet-4-5 pricing
    from tests.fake_model import Usage

    big = Usage(input_tokens=100_000, output_tokens=10, cache_creation_input_tokens=0,
                cache_read_input_tokens=0)  # fmt: skip
    model.script = [text("nothing to do", usage=big)] * 3
    outcome = platform.run(agentic(platform, repos, budget_usd=0.25))
    got = statuses(outcome.report)
    # a ran; its response cost more than its share ($0.25 / 3 targets, its --max-budget-usd)
    reason_a = outcome.report.set_index("target").loc["acme__a", "reason"]
    assert got["acme__a"] == "change_failed" and "reached its budget ($0.0833)" in reason_a
    # not attempted for budget: a status of its own, not the final "skipped" of a removed target
    assert got["acme__b"] == got["acme__c"] == "over_budget"
    reason = outcome.report.set_index("target").loc["acme__b", "reason"]
    assert reason.startswith("budget: $0.30") and "of $0.25 spent" in reason
    assert len(model.conversation_requests) == 1  # no further agent run started

    # the same budget again: nothing runs, and the failed target keeps its failure
    again = platform.run(agentic(platform, repos, budget_usd=0.25))
    got = statuses(again.report)
    assert got == {"acme__a": "change_failed", "acme__b": "over_budget", "acme__c": "over_budget"}
    assert "not retried: budget" in again.report.set_index("target").loc["acme__a", "reason"]
    assert again.skipped_final == [] and len(model.conversation_requests) == 1

    # a raised budget picks up the targets it held back, and a failure is retried too
    raised = platform.run(agentic(platform, repos, budget_usd=10))
    assert statuses(raised.report) == {"acme__a": "no_change", "acme__b": "no_change",
                                       "acme__c": "no_change"}  # fmt: skip
    assert len(model.conversation_requests) == 4


def test_secrets_are_redacted_from_the_transcript(platform: Platform, model):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [
        tool(
            "Bash",
            {
                "command": "echo key=$ANTHROPIC_API_KEY; sed -i s/OLD/NEW/ app.py",
                "description": "leak",
            },
        ),
        text(f"The key was {SECRET}."),
    ]
    platform.run(agentic(platform, [repo]))
    meta = change_meta(platform, "acme__alpha")
    transcript = Path(meta["transcript"]).read_text()
    assert "key=***" in transcript and SECRET not in transcript
    assert SECRET not in json.dumps({k: str(v) for k, v in meta.items()})
    logs = platform.cli("logs", "agentic", "acme__alpha", "--agent").stdout
    assert "→ Bash" in logs and "key=***" in logs and SECRET not in logs


def test_resume_continues_the_same_conversation(tmp_path: Path, model):
    agent = ClaudeCodeAgent(Path(require_claude()))
    provider = LocalSandboxProvider(tmp_path / "sandboxes")
    session = str(uuid.uuid4())
    home = tmp_path / "agent-home"
    model.script = [
        tool("Bash", {"command": "echo first > notes.txt", "description": "write"}),
        text("wrote notes"),
        text("second answer"),
    ]
    with provider.open("resume") as sandbox:
        first = agent.run(
            sandbox, AgentRequest(prompt="Write notes.", session_id=session, home=home)
        )
        assert first.ok and first.session_id == session
        second = agent.run(
            sandbox,
            AgentRequest(prompt="Now say more.", session_id=session, resume=True, home=home),
        )
    assert second.ok, second.error
    last = model.conversation_requests[-1]["json"]
    assert last_user_text(last) == "Now say more."
    assert "Write notes." in json.dumps(last["messages"])  # the earlier conversation came along
    assert second.final_message == "second answer"


def run_fake_cli(tmp_path: Path, script: str, timeout_s: float = 60):
    """Run a stand-in for the CLI (a shell script) as the agent: for outputs the real CLI
    cannot be made to produce."""
    fake = tmp_path / "claude"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    request = AgentRequest(prompt="x", session_id=str(uuid.uuid4()), home=tmp_path / "h",
                           timeout_s=timeout_s)  # fmt: skip
    with LocalSandboxProvider(tmp_path / "sandboxes").open("fake-cli") as sandbox:
        return ClaudeCodeAgent(fake, env={}).run(sandbox, request)


def test_garbage_from_the_cli_is_a_clear_failure(tmp_path: Path):
    result = run_fake_cli(tmp_path, "echo 'this is not json'\nexit 3")
    assert not result.ok
    assert "exited with code 3 without a result (1 unparsable line(s))" in result.error


def test_adhoc_prompt_form_runs_the_agent(platform: Platform, model):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
    ]
    env_for_cli = {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": SECRET,
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    platform.env.update(env_for_cli)
    proc = platform.cli("run", "--repo", str(repo), "--prompt", "Rename OLD to NEW in app.py",
                        "--verifier", "test:python -m pytest -q -p no:cacheprovider",
                        "--output", "json")  # fmt: skip
    written = platform.campaigns / "rename-old-to-new-in.yaml"
    assert written.exists() and "kind: agentic" in written.read_text()
    report = json.loads(proc.stdout[proc.stdout.index("[\n") :])
    assert report[0]["status"] == "pr_open" and report[0]["cost_usd"] > 0
    assert "agent → Bash sed -i s/OLD/NEW/ app.py" in proc.stdout  # live progress
    assert SECRET not in proc.stdout + proc.stderr


def test_an_agent_that_hangs_is_stopped_at_its_timeout(tmp_path: Path):
    result = run_fake_cli(
        tmp_path, 'echo \'{"type":"system","subtype":"init"}\'\nsleep 60', timeout_s=1
    )
    assert not result.ok and result.error == "the agent timed out after 1s"


def test_an_agent_stopped_before_its_result_still_reports_what_it_spent(tmp_path: Path):
    # The CLI reports its total only at the end; a run cut short (timeout, shutdown) has spent
    # what its model responses so far cost, and that must reach the campaign's budget.
    usage = {"input_tokens": 100_000, "output_tokens": 10, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0}  # fmt: skip
    event = {"type": "assistant", "message": {"id": "msg_1", "model": "claude-sonnet-4-5",
             "usage": usage, "content": [{"type": "text", "text": "working"}]}}  # fmt: skip
    line = json.dumps(event)
    # the same response arrives as one event per content block: counted once
    result = run_fake_cli(tmp_path, f"echo '{line}'\necho '{line}'\nsleep 60", timeout_s=1)
    assert not result.ok and result.error == "the agent timed out after 1s"
    expected, _ = price("claude-sonnet-4-5", usage)
    assert expected > 0.29 and result.cost_usd == pytest.approx(expected)


def test_unchanged_inputs_reuse_the_agent_change_without_calling_the_model(
    platform: Platform, model
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
    ] * 3
    path = agentic(platform, [repo])
    first = platform.run(path)
    calls = len(model.conversation_requests)
    cost = first.report.set_index("target").loc["acme__alpha", "cost_usd"]
    assert calls == 2 and cost > 0

    # same base commit, same spec: the recorded change is reused, no agent run, no new cost
    again = platform.run(path)
    assert len(model.conversation_requests) == calls
    meta = change_meta(platform, "acme__alpha")
    assert meta["cached"] is True and meta["cost_usd"] == 0.0
    assert again.report.set_index("target").loc["acme__alpha", "cost_usd"] == cost

    # --no-cache forces a fresh agent run; so does a base commit that moved
    from orchestrator_assets.assets.runner import run_campaign
    from orchestrator_assets.spec.catalog import load_one

    with platform.instance() as instance:
        run_campaign(load_one(path, platform.settings()), instance, platform.settings(),
                     no_cache=True)  # fmt: skip
    assert len(model.conversation_requests) == calls + 2
    assert change_meta(platform, "acme__alpha")["cached"] is False

    work = platform.root / "work-alpha"
    import subprocess

    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    (work / "NOTES.md").write_text("upstream\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "add", "NOTES.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "upstream"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD"], check=True)
    final = platform.run(path)
    assert len(model.conversation_requests) == calls + 4
    assert statuses(final.report) == {"acme__alpha": "pr_open"}
    total = final.report.set_index("target").loc["acme__alpha", "cost_usd"]
    assert total == pytest.approx(3 * cost)  # three agent runs, summed per target


def test_cli_installed_under_a_hidden_path_still_runs(tmp_path: Path):
    """npm links `node_modules/.bin/claude` into the package; both may live where the sandbox
    shows an empty tmpfs (a project checked out under /tmp)."""
    package = tmp_path / "tools" / "node_modules" / "@anthropic-ai" / "claude-code" / "bin"
    package.mkdir(parents=True)
    real = package / "claude.exe"
    result = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
              "session_id": "s", "total_cost_usd": 0.5, "result": "ok"}  # fmt: skip
    real.write_text(f"#!/bin/sh\necho '{json.dumps(result)}'\n")
    real.chmod(0o755)
    link_dir = tmp_path / "tools" / "node_modules" / ".bin"
    link_dir.mkdir()
    (link_dir / "claude").symlink_to("../@anthropic-ai/claude-code/bin/claude.exe")
    provider = LocalSandboxProvider(tmp_path / "sandboxes")
    with provider.open("hidden-cli") as sandbox:
        run = ClaudeCodeAgent(link_dir / "claude", env={}).run(
            sandbox, AgentRequest(prompt="x", session_id="s", home=tmp_path / "h")
        )
    assert run.ok, run.error
    assert run.cost_usd == 0.5 and run.final_message == "ok"
