"""The agent quality loop's parts with the REAL Claude Code CLI against the scripted model: the
verifiers as the agent's MCP tool, the stop gate, the narrow tool set, and the LLM judge on the
same scripted server. Driven at the agent level (ClaudeCodeAgent.run in a local sandbox)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from resources.agents.base import AgentRequest, VerifierTool
from resources.agents.claude_code import DEFAULT_DISALLOWED_TOOLS, ClaudeCodeAgent
from resources.agents.judge import JudgeError, judge_change, price
from resources.sandboxes.local import LocalSandboxProvider
from tests.conftest import require
from tests.fake_model import ScriptedModel, Usage, error, last_user_text, require_claude, text, tool

SECRET = "sk-test-" + uuid.uuid4().hex
PYTEST = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
BARE_PYTHON = "/usr/bin/python3"  # a Python without the `mcp` package, like a sandbox image's


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch):
    with ScriptedModel() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
        yield server


def write_calc(workspace: Path, cases: int = 1) -> None:
    """A small project whose `add` is wrong: `cases` failing tests."""
    (workspace / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (workspace / "tests").mkdir()
    params = ", ".join(f"({i}, {i + 1})" for i in range(cases))
    (workspace / "tests" / "test_calc.py").write_text(
        "import pytest\n\nfrom calc import add\n\n\n"
        f"@pytest.mark.parametrize('a,b', [{params}])\n"
        "def test_add(a, b):\n    assert add(a, b) == a + b\n"
    )


def run_agent(tmp_path: Path, prompt: str, python: str | None = None, setup=write_calc, **fields):
    """Run the real CLI as the platform does, in a fresh local sandbox with the calc project."""
    agent = ClaudeCodeAgent(Path(require_claude()), python=python)
    request = AgentRequest(
        prompt=prompt,
        session_id=str(uuid.uuid4()),
        model="claude-sonnet-4-5",
        max_turns=10,
        home=tmp_path / "agent-home",
        timeout_s=120,
        **fields,
    )
    with LocalSandboxProvider(tmp_path / "sandboxes").open("quality") as sandbox:
        setup(sandbox.workspace)
        return agent.run(sandbox, request)


def tool_results(body: dict) -> list[dict]:
    """The tool_result blocks of the last user message the server received."""
    last = body["messages"][-1]
    return [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content)


@pytest.mark.usefixtures("bwrap")
@pytest.mark.parametrize("server", ["mcp", "builtin"])
def test_the_agent_runs_a_verifier_tool_and_gets_the_trimmed_failure(
    tmp_path: Path, model: ScriptedModel, server: str
):
    if server == "builtin":
        require(Path(BARE_PYTHON).exists(), f"no {BARE_PYTHON} to run the built-in server with")
    model.script = [
        tool("mcp__verifiers__run_verifier", {"name": "test"}),
        text("The test verifier fails; I would fix add()."),
    ]
    result = run_agent(
        tmp_path,
        "Fix add.",
        python=BARE_PYTHON if server == "builtin" else None,
        setup=lambda ws: write_calc(ws, cases=40),  # a long failure, so trimming matters
        verifiers=[VerifierTool(name="test", argv=PYTEST, timeout_s=60, extractor="pytest")],
        feedback_chars=600,
    )
    assert result.ok, result.error
    # the tool was offered under the platform's server name
    first = model.conversation_requests[0]["json"]
    assert "mcp__verifiers__run_verifier" in [t["name"] for t in first["tools"]]
    # what the model received: the extractor's text, bounded, naming the failing tests
    (block,) = tool_results(model.conversation_requests[1]["json"])
    received = result_text(block)
    assert received.startswith("FAIL test (pytest, exit code 1)"), received
    assert "40 failed in" in received
    assert "tests/test_calc.py::test_add[0-1] - assert -1 == (0 + 1)" in received
    assert "tests/test_calc.py:8: AssertionError" in received
    assert re.search(r"\n- … and \d+ more\n", received)
    assert len(received) <= 600
    (call,) = result.verifier_calls
    assert call.name == "test" and not call.passed and call.exit_code == 1 and call.chars <= 600
    assert result.gate_decisions == []  # no stop gate asked for


@pytest.mark.usefixtures("bwrap")
def test_the_stop_gate_blocks_a_finish_while_a_verifier_fails_and_lets_it_through_once_it_passes(
    tmp_path: Path, model: ScriptedModel
):
    model.script = [
        text("Done, add() is fine."),  # a finish while the test fails: sent back
        tool("Bash", {"command": "sed -i 's/a - b/a + b/' calc.py", "description": "fix"}),
        text("Fixed add()."),  # now the test passes: let through
    ]
    result = run_agent(
        tmp_path,
        "Fix add.",
        verifiers=[VerifierTool(name="test", argv=PYTEST, timeout_s=60)],
        max_stop_blocks=3,
        feedback_chars=800,
    )
    assert result.ok, result.error
    assert result.final_message == "Fixed add()."
    # the block's reason came to the model as the next user turn
    sent_back = last_user_text(model.conversation_requests[1]["json"])
    assert "stop gate, block 1 of 3" in sent_back
    assert "FAIL test (pytest, exit code 1)" in sent_back
    assert "tests/test_calc.py::test_add[0-1]" in sent_back
    assert len(model.conversation_requests) == 3
    # the decisions: in the result (for metadata) and in the transcript
    assert [(d.decision, d.why, d.blocks) for d in result.gate_decisions] == [
        ("block", "failing", 1),
        ("allow", "passed", 1),
    ]
    assert result.gate_decisions[0].failing == ["test"]
    assert result.gate_decisions[1].results == {"test": True}
    hooks = [e for e in result.transcript if e.get("subtype") == "hook_response"]
    assert len(hooks) == 2 and '"block"' in hooks[0]["output"]


@pytest.mark.usefixtures("bwrap")
def test_the_stop_gate_lets_the_agent_stop_after_max_stop_blocks(
    tmp_path: Path, model: ScriptedModel
):
    model.script = [text("Done."), text("Still done.")]
    result = run_agent(
        tmp_path,
        "Fix add.",
        verifiers=[VerifierTool(name="test", argv=PYTEST, timeout_s=60)],
        verifier_tools=False,
        max_stop_blocks=1,
    )
    assert result.ok, result.error
    assert result.final_message == "Still done."
    assert [(d.decision, d.why) for d in result.gate_decisions] == [
        ("block", "failing"),
        ("allow", "limit"),
    ]
    # without verifier tools no MCP server was offered
    names = [t["name"] for t in model.conversation_requests[0]["json"]["tools"]]
    assert not any(n.startswith("mcp__") for n in names)


PUSHES = [
    "git push origin HEAD:main",
    "git remote add exfil https://example.invalid/x.git",
    "curl -s https://example.invalid/",
]


@pytest.mark.usefixtures("bwrap")
def test_the_agent_cannot_push_change_remotes_or_reach_the_network(
    tmp_path: Path, model: ScriptedModel
):
    model.script = [
        *[tool("Bash", {"command": c, "description": "try"}) for c in PUSHES],
        text("I could not push."),
    ]
    result = run_agent(tmp_path, "Push your change.")
    assert result.ok, result.error
    for request, command in zip(model.conversation_requests[1:4], PUSHES, strict=True):
        (block,) = tool_results(request["json"])
        said = result_text(block)
        assert block.get("is_error") is True
        assert f"Permission to use Bash with command {command} has been denied" in said
    (final,) = [e for e in result.transcript if e.get("type") == "result"]
    assert [d["tool_input"]["command"] for d in final["permission_denials"]] == PUSHES


@pytest.mark.usefixtures("bwrap")
def test_a_campaign_can_widen_the_agent(tmp_path: Path, model: ScriptedModel):
    model.script = [tool("Bash", {"command": "git push origin HEAD", "description": "t"}),
                    text("tried")]  # fmt: skip
    result = run_agent(tmp_path, "Push.", disallowed_tools=[])
    assert result.ok, result.error
    (block,) = tool_results(model.conversation_requests[1]["json"])
    # the CLI ran it (git itself fails: no repository, no remote, no credentials)
    assert "has been denied" not in result_text(block)


def test_the_argv_of_a_narrow_agent_with_verifier_tools_and_a_stop_gate(tmp_path: Path):
    from resources.agents.claude_code import write_quality_files

    request = AgentRequest(
        prompt="x",
        session_id="s",
        home=tmp_path / "home",
        verifiers=[VerifierTool(name="test", argv=["pytest"], timeout_s=100)],
        max_stop_blocks=2,
    )
    quality = write_quality_files(request, "/usr/bin/python3")
    assert quality is not None
    argv = ClaudeCodeAgent(tmp_path / "claude", env={}).argv(request, "claude", quality)
    assert argv[argv.index("--mcp-config") + 1] == str(quality.mcp_config)
    assert argv[argv.index("--settings") + 1] == str(quality.settings)
    assert "--strict-mcp-config" in argv and "--include-hook-events" in argv
    allowed = argv[argv.index("--allowedTools") + 1 : argv.index("--disallowedTools")]
    assert "mcp__verifiers__*" in allowed and "Bash" in allowed
    assert argv[argv.index("--disallowedTools") + 1 :] == DEFAULT_DISALLOWED_TOOLS
    server = json.loads(quality.mcp_config.read_text())["mcpServers"]["verifiers"]
    assert server["command"] == "/usr/bin/python3"
    assert server["args"][0].endswith("resources/agents/verifier_mcp.py")
    (hook,) = json.loads(quality.settings.read_text())["hooks"]["Stop"][0]["hooks"]
    assert hook["command"].startswith("/usr/bin/python3 ") and hook["timeout"] == 160
    config = json.loads(quality.config.read_text())
    assert config["verifiers"][0]["argv"] == ["pytest"] and config["max_stop_blocks"] == 2
    # nothing asked for: no files, no extra flags
    plain = request.model_copy(update={"verifiers": []})
    assert write_quality_files(plain, "python3") is None


# the judge --------------------------------------------------------------------------------------

DIFF = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
deleted file mode 100644
--- a/tests/test_calc.py
+++ /dev/null
@@ -1,2 +0,0 @@
-def test_add():
-    assert add(2, 3) == 5
"""


def verdict(answer: dict, usage: Usage | None = None):
    return tool("record_verdict", answer, usage=usage)


def test_the_judge_vetoes_a_diff_that_deletes_a_test_with_reasons_tokens_and_cost(
    model: ScriptedModel,
):
    usage = Usage(input_tokens=1200, output_tokens=150, cache_creation_input_tokens=0,
                  cache_read_input_tokens=0)  # fmt: skip
    model.judge_script = [
        verdict(
            {
                "verdict": "veto",
                "reasons": [
                    {"kind": "weakened_tests", "detail": "tests/test_calc.py is deleted"},
                    {"kind": "missing_part", "detail": "add() is not fixed"},
                ],
                "summary": "Deletes the failing test instead of fixing add().",
            },
            usage,
        )
    ]
    result = judge_change("Fix add().", DIFF, criteria=["no new dependencies"])
    assert result.vetoed
    assert [(r.kind, r.detail) for r in result.reasons] == [
        ("weakened_tests", "tests/test_calc.py is deleted"),
        ("missing_part", "add() is not fixed"),
    ]
    assert result.input_tokens == 1200 and result.output_tokens == 150
    assert result.cost_usd == pytest.approx(1200 * 3 / 1e6 + 150 * 15 / 1e6)
    assert result.priced and result.model == "claude-sonnet-4-5"
    assert "weakened_tests: tests/test_calc.py is deleted" in result.feedback()
    # what the judge saw: the request, the diff and the criteria; a forced, structured answer
    (request,) = model.judge_requests
    body = request["json"]
    prompt = body["messages"][0]["content"]
    assert "<request>\nFix add().\n</request>" in prompt and "-def test_add():" in prompt
    assert "- no new dependencies" in prompt
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert body["tools"][0]["input_schema"]["properties"]["verdict"]["enum"] == ["approve", "veto"]
    assert request["headers"].get("anthropic-version") == "2023-06-01"
    assert model.conversation_requests == []  # the judge never touched the agent's script


def test_the_judge_approves_and_an_unknown_reason_kind_becomes_other(model: ScriptedModel):
    model.judge_script = [
        verdict({"verdict": "approve", "reasons": [], "summary": "Fixes add()."}),
        verdict({"verdict": "veto", "reasons": [{"kind": "vibes", "detail": "too clever"}]}),
        verdict({"verdict": "veto", "reasons": []}),
    ]
    approved = judge_change("Fix add().", "diff --git a/calc.py b/calc.py\n")
    assert approved.verdict == "approve" and approved.reasons == [] and approved.feedback() == ""
    assert approved.cost_usd > 0  # Usage() defaults are nonzero
    odd = judge_change("Fix add().", DIFF)
    assert [(r.kind, r.detail) for r in odd.reasons] == [("other", "too clever")]
    bare = judge_change("Fix add().", DIFF)
    assert bare.reasons[0].detail == "the judge gave no reason"


def test_a_judge_that_cannot_answer_is_a_clear_error(model: ScriptedModel):
    model.judge_script = [text("I think it is fine."), error(400, message="prompt is too long")]
    with pytest.raises(JudgeError, match="answered without calling record_verdict"):
        judge_change("Fix add().", DIFF)
    with pytest.raises(JudgeError, match="answered 400: prompt is too long") as caught:
        judge_change("Fix add().", DIFF, max_retries=0)
    assert SECRET not in str(caught.value)


def test_a_long_diff_is_cut_for_the_judge(model: ScriptedModel):
    model.judge_script = [verdict({"verdict": "approve", "reasons": []})]
    result = judge_change("Fix add().", "+x\n" * 5000, max_diff_chars=1000)
    assert result.diff_truncated
    prompt = model.judge_requests[0]["json"]["messages"][0]["content"]
    assert len(prompt) < 2000 and "diff cut here" in prompt


def test_judge_prices_by_model_family():
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    assert price("claude-sonnet-4-5-20250929", usage) == (18.0, True)
    assert price("claude-haiku-4-5", usage) == (6.0, True)
    assert price("claude-opus-9", usage) == (90.0, False)  # unknown: its family's price


def test_a_campaign_configures_the_loop_and_each_verifiers_extractor():
    from orchestrator_assets.spec.steps import AgenticTransformation, Verifier

    verifier = Verifier.model_validate({"name": "test", "command": "make test",
                                        "extractor": "maven"})  # fmt: skip
    assert verifier.extractor == "maven"
    with pytest.raises(ValueError, match="extractor"):
        Verifier.model_validate({"name": "test", "command": "rspec", "extractor": "rspec"})
    default = AgenticTransformation(kind="agentic", prompt="Fix add.")
    assert (default.verifier_tools, default.max_stop_blocks, default.repair_attempts) == (
        True,
        3,
        0,
    )
    assert default.judge is None and default.disallowed_tools is None
    widened = AgenticTransformation.model_validate(
        {"kind": "agentic", "prompt": "x", "disallowed_tools": [],
         "judge": {"criteria": ["no new dependencies"], "on_veto": "fail"}}
    )  # fmt: skip
    assert widened.judge is not None and widened.judge.on_veto == "fail"
    assert widened.judge.model == "claude-sonnet-4-5" and widened.disallowed_tools == []
    with pytest.raises(ValueError, match="on_veto"):
        AgenticTransformation.model_validate(
            {"kind": "agentic", "prompt": "x", "judge": {"on_veto": "shrug"}}
        )
