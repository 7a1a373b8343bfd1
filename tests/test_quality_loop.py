"""The agent quality loop across a campaign: repair attempts and the LLM judge, with the real
Claude Code CLI against the scripted Messages API (the judge scripted on the same server)."""

from __future__ import annotations

import base64
import json

import pytest

from orchestrator_assets.assets import history
from orchestrator_assets.demo_fleet import create_repo
from orchestrator_assets.spec.catalog import load_one
from tests.conftest import STRICT_TEST, TEST, Platform, app_repo, statuses
from tests.fake_model import Usage, error, last_user_text, text, tool
from tests.test_agentic import model  # noqa: F401 (the scripted model server fixture)

pytestmark = pytest.mark.usefixtures("bwrap")

JUDGE_USAGE = Usage(input_tokens=1000, output_tokens=100, cache_creation_input_tokens=0,
                    cache_read_input_tokens=0)  # fmt: skip


def verdict(answer: dict):
    return tool("record_verdict", answer, usage=JUDGE_USAGE)


def campaign(platform: Platform, repo, verifiers: list | None = None, **agentic) -> object:
    return platform.write_campaign(
        "quality",
        targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Rename OLD to NEW; keep the tests green.",
                        "max_turns": 6, "verifier_tools": False, "max_stop_blocks": 0,
                        **agentic},
        **({"verifiers": verifiers} if verifiers is not None else {}),
    )  # fmt: skip


def repair_feedback(server) -> tuple[dict, str]:
    """The request that resumed the agent with the platform's verification failure, and its
    text."""
    repair = next(
        r["json"] for r in server.conversation_requests
        if "ran the verifiers on your change" in last_user_text(r["json"])
    )  # fmt: skip
    return repair, last_user_text(repair)


def rename_then_fix_the_test() -> list:
    """The model's turns: rename (the strict test then fails), then, asked to repair, update the
    test."""
    fix_test = "sed -i \"s/== 'OLD'/== 'NEW'/\" tests/test_app.py"
    return [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
        tool("Bash", {"command": fix_test, "description": "update the test"}),
        text("Updated the test for the new name."),
    ]


def change_of(platform: Platform, path):
    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        return history.latest_changes(instance, spec)["acme__alpha"]


def test_a_failed_verification_resumes_the_session_with_the_failure_and_the_pr_opens(
    platform: Platform,
    model,  # noqa: F811
):
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n", STRICT_TEST))
    path = campaign(platform, repo, repair_attempts=1)
    model.script = rename_then_fix_the_test()
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    # The repair request resumes the conversation and carries the trimmed failure.
    repair, feedback = repair_feedback(model)
    assert "FAIL test (pytest" in feedback and "test_greeting" in feedback
    assert "sed -i s/OLD/NEW/ app.py" in json.dumps(repair["messages"])  # the earlier turn
    assert len(feedback) < 3000
    change = change_of(platform, path)
    assert [(i.kind, i.verification) for i in change.iterations] == [
        ("initial", "test:fail"), ("repair", "test:pass"),
    ]  # fmt: skip
    assert change.total_cost_usd == pytest.approx(sum(i.cost_usd for i in change.iterations))
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["repairs"] == 1 and row["iterations"] == 2
    logs = platform.cli("logs", "quality", "acme__alpha", "--agent").stdout
    assert "iteration 2 (repair)" in logs and "platform verifiers: test:fail" in logs


def test_the_judge_vetoes_a_deleted_test_the_agent_corrects_it_and_the_pr_opens(
    platform: Platform,
    model,  # noqa: F811
):
    # Deleting the strict test leaves the other test passing: only the judge can catch it.
    spec = app_repo("alpha", "GREETING = 'OLD'\n", STRICT_TEST)
    spec.files["tests/test_misc.py"] = "def test_misc():\n    assert True\n"
    repo = create_repo(platform.fleet, spec)
    path = campaign(platform, repo, repair_attempts=2, judge={"model": "claude-sonnet-4-5"})
    encoded = base64.b64encode(TEST.encode()).decode()
    restore = (
        "python -c \"import base64, pathlib; pathlib.Path('tests/test_app.py')"
        f".write_bytes(base64.b64decode('{encoded}'))\""
    )
    model.script = [
        tool(
            "Bash",
            {
                "command": "sed -i s/OLD/NEW/ app.py && rm tests/test_app.py",
                "description": "rename, drop the failing test",
            },
        ),
        text("Done."),
        tool("Bash", {"command": restore, "description": "restore the test"}),
        text("Restored the test and made it accept the new name."),
    ]
    model.judge_script = [
        verdict(
            {
                "verdict": "veto",
                "reasons": [{"kind": "weakened_tests", "detail": "tests/test_app.py is deleted"}],
            }
        ),
        verdict({"verdict": "approve", "reasons": [], "summary": "renames and keeps the test"}),
    ]
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    judged = [r["json"] for r in model.judge_requests]
    assert len(judged) == 2
    first = json.dumps(judged[0]["messages"])
    assert "deleted file mode" in first and "Rename OLD to NEW" in first
    assert "transcript" not in first.lower() or "sed -i" not in first  # the diff, not the chat
    resumed = next(
        r["json"] for r in model.conversation_requests
        if "vetoed it" in last_user_text(r["json"])
    )  # fmt: skip
    assert "weakened_tests: tests/test_app.py is deleted" in last_user_text(resumed)
    change = change_of(platform, path)
    assert [v.verdict for v in change.verdicts] == ["veto", "approve"]
    assert [(i.kind, i.verdict) for i in change.iterations] == [
        ("initial", "veto"), ("judge", "approve"),
    ]  # fmt: skip
    judge_cost = sum(v.cost_usd for v in change.verdicts)
    assert judge_cost > 0 and all(v.input_tokens == 1000 for v in change.verdicts)
    agent_cost = sum(i.cost_usd for i in change.iterations)
    assert change.total_cost_usd == pytest.approx(agent_cost + judge_cost)
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["judge"] == "veto → approve" and row["cost_usd"] == pytest.approx(
        change.total_cost_usd
    )
    with platform.instance() as instance:
        spec = load_one(path, platform.settings()).spec
        report = instance.get_latest_materialization_event(history.asset_key(spec, "report"))
        meta = {k: v.value for k, v in report.asset_materialization.metadata.items()}
    assert (meta["veto_rate"], meta["self_correction_rate"]) == (1.0, 1.0)
    # `logs --agent` tells the loop in order: the veto with its reason, the judge's repair pass,
    # then the approval
    logs = platform.cli("logs", "quality", "acme__alpha", "--agent").stdout
    order = [
        "iteration 1 (initial)", "judge: veto", "iteration 2 (judge)", "judge: approve",
        "judge veto on", "weakened_tests: tests/test_app.py is deleted", "judge approve on",
    ]  # fmt: skip
    positions = [logs.find(text) for text in order]
    assert -1 not in positions and positions == sorted(positions), logs


def test_two_vetoes_end_the_target_as_judge_vetoed(platform: Platform, model):  # noqa: F811
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = campaign(platform, repo, repair_attempts=1, judge={"on_veto": "repair"})
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Done."),
        tool("Bash", {"command": "echo '# refactored' >> app.py", "description": "more"}),
        text("Changed it."),
    ]
    veto = {"verdict": "veto", "reasons": [{"kind": "unrelated_refactor", "detail": "app.py"}]}
    model.judge_script = [verdict(veto), verdict(veto)]
    outcome = platform.run(path)
    row = outcome.report.set_index("target").loc["acme__alpha"]
    assert row["status"] == "judge_vetoed"
    assert "unrelated_refactor: app.py" in row["reason"]
    assert not (repo / "pulls").exists() or not list((repo / "pulls").glob("*.json"))
    change = change_of(platform, path)
    assert [v.verdict for v in change.verdicts] == ["veto", "veto"]
    assert row["judge"] == "veto → veto" and row["repairs"] == 1


def test_a_judge_without_a_verdict_holds_the_pr_until_a_later_run_approves(
    platform: Platform,
    model,  # noqa: F811
):
    """`judge.on_error: hold`: no PR while the judge cannot answer; the next run asks again."""
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = campaign(platform, repo, judge={"on_error": "hold"})
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
    ]
    model.judge_script = [error(400, message="prompt is too long")]
    first = platform.run(path).report.set_index("target").loc["acme__alpha"]
    assert first["status"] == "pending"
    assert "judge gave no verdict" in first["reason"] and "prompt is too long" in first["reason"]
    assert not list((repo / "pulls").glob("*.json"))

    model.judge_script = [verdict({"verdict": "approve", "reasons": []})]
    second = platform.run(path).report.set_index("target").loc["acme__alpha"]
    assert second["status"] == "pr_open"
    assert [v.verdict for v in change_of(platform, path).verdicts] == ["error", "approve"]
    assert len(list((repo / "pulls").glob("*.json"))) == 1


def test_by_default_a_judge_without_a_verdict_lets_the_pr_open(platform: Platform, model):  # noqa: F811
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = campaign(platform, repo, judge={})
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed."),
    ]
    model.judge_script = [error(400, message="prompt is too long")]
    row = platform.run(path).report.set_index("target").loc["acme__alpha"]
    assert (row["status"], row["judge"]) == ("pr_open", "error")


def test_verifier_tool_calls_and_stop_gate_blocks_are_in_the_metadata_and_the_logs(
    platform: Platform,
    model,  # noqa: F811
):
    """A campaign with the defaults: the agent calls the verifier tool, is sent back once by the
    stop gate, fixes the test and the PR opens; `logs --agent` tells it in order."""
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n", STRICT_TEST))
    path = campaign(platform, repo, verifier_tools=True, max_stop_blocks=2)
    fix_test = "sed -i \"s/== 'OLD'/== 'NEW'/\" tests/test_app.py"
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        tool("mcp__verifiers__run_verifier", {"name": "test"}),
        text("Renamed; done."),  # the test fails: the stop gate sends the agent back
        tool("Bash", {"command": fix_test, "description": "update the test"}),
        text("Updated the test for the new name."),
    ]
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    sent_back = next(
        last_user_text(r["json"]) for r in model.conversation_requests
        if "stop gate, block 1 of 2" in last_user_text(r["json"])
    )  # fmt: skip
    assert "FAIL test (pytest" in sent_back
    (iteration,) = change_of(platform, path).iterations
    assert (iteration.verifier_calls, iteration.stop_blocks) == (1, 1)
    logs = platform.cli("logs", "quality", "acme__alpha", "--agent").stdout
    order = [
        "→ mcp__verifiers__run_verifier", "FAIL test (pytest", "assistant: Renamed; done.",
        "[stop gate: sent back — You are not done yet", "(stop gate, block 1 of 2)",
        '"description": "update the test"', "[stop gate: let the agent finish]",
        "agent's verifier tool calls: 1 · stop gate blocks: 1", "platform verifiers: test:pass",
    ]  # fmt: skip
    positions = [logs.find(text) for text in order]
    assert -1 not in positions and positions == sorted(positions), logs
    assert "model None" not in logs  # the CLI's hook notices are not shown as sessions


def test_the_judge_asks_the_budget_first_and_a_spent_budget_holds_the_pr(
    platform: Platform,
    model,  # noqa: F811
):
    """The judge spends too: once the campaign's budget is spent it is not asked, and the PR
    waits for it (whatever `on_error` says) until a run with budget left gets its verdict."""
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    big = Usage(input_tokens=100_000, output_tokens=10, cache_creation_input_tokens=0,
                cache_read_input_tokens=0)  # fmt: skip  # about $0.30 an agent run

    def write(budget: float):
        return platform.write_campaign(
            "quality", targets=[str(repo)], budget_usd=budget,
            transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 6,
                            "model": "claude-sonnet-4-5",
                            "verifier_tools": False, "max_stop_blocks": 0, "repair_attempts": 1,
                            "judge": {}},  # the default on_error lets a PR open without a verdict
        )  # fmt: skip

    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed.", usage=big),
        tool("Bash", {"command": "echo '# renamed' >> app.py", "description": "note"}),
        text("Addressed the review.", usage=big),
    ]
    veto = {"verdict": "veto", "reasons": [{"kind": "incomplete", "detail": "say why"}]}
    model.judge_script = [verdict(veto)]
    row = platform.run(write(0.5)).report.set_index("target").loc["acme__alpha"]
    # agent $0.30, judge (veto), repair $0.30: $0.60 of $0.50 spent before the second verdict
    assert len(model.judge_requests) == 1, dict(row)
    assert row["status"] == "pending" and "budget: $0.60" in row["reason"], row["reason"]
    assert not list((repo / "pulls").glob("*.json"))
    verdicts = change_of(platform, (platform.campaigns / "quality.yaml")).verdicts
    assert [(v.verdict, v.over_budget) for v in verdicts] == [("veto", False), ("error", True)]

    model.judge_script = [verdict({"verdict": "approve", "reasons": []})]
    row = platform.run(write(10)).report.set_index("target").loc["acme__alpha"]
    assert len(model.judge_requests) == 2 and row["status"] == "pr_open"


def test_a_verifier_report_file_is_the_repair_feedback(platform: Platform, model):  # noqa: F811
    """A verifier that declares `report:` (here pytest's JUnit XML) is read from that file, not
    from its console text, when the platform's verification fails."""
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n", STRICT_TEST))
    junit = "python -m pytest -q -p no:cacheprovider --junitxml=.reports/junit.xml"
    verifiers = [{"name": "test", "command": junit, "report": ".reports/junit.xml"}]
    path = campaign(platform, repo, verifiers=verifiers, repair_attempts=1)
    model.script = rename_then_fix_the_test()
    outcome = platform.run(path)
    assert statuses(outcome.report) == {"acme__alpha": "pr_open"}
    _, feedback = repair_feedback(model)
    assert "FAIL test (junit" in feedback
    assert "tests/test_app.py::test_greeting" in feedback


def test_a_report_that_is_a_symlink_is_not_read(tmp_path):
    """The repository's code writes the report: a symlink to a host file must not carry that
    file into the agent's feedback."""
    from orchestrator_assets.spec.steps import Verifier
    from orchestrator_assets.stages.verify import own_report

    secret = tmp_path / "secret.xml"
    secret.write_text('<testsuite tests="1" failures="1"><testcase name="t"/></testsuite>')
    workspace = tmp_path / "ws"
    (workspace / ".reports").mkdir(parents=True)
    verifier = Verifier(name="test", command="true", report=".reports/junit.xml")
    (workspace / ".reports" / "junit.xml").symlink_to(secret)
    assert own_report(verifier, workspace, since=0) is None
    (workspace / ".reports" / "junit.xml").unlink()
    (workspace / ".reports" / "junit.xml").write_text(secret.read_text())
    assert own_report(verifier, workspace, since=0) is not None
