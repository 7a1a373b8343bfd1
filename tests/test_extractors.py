"""Extractors on real outputs of pytest, go test, jest and maven (tests/fixtures/extractors,
made by its regenerate.sh), the verifier runner, the built-in MCP server and the stop gate's
decisions, without an agent."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from resources.agents import stop_gate, verifier_mcp
from resources.agents.extractors import combine, detect, extract

FIXTURES = Path(__file__).parent / "fixtures" / "extractors"
SCRATCH = "/tmp/extractor-fixtures"  # where regenerate.sh ran the projects


def fixture(case: str) -> tuple[str, int]:
    """A fixture's captured output and exit code."""
    return (FIXTURES / f"{case}.out").read_text(), int((FIXTURES / f"{case}.exit").read_text())


def extracted(case: str, argv: list[str], **kwargs) -> str:
    output, code = fixture(case)
    runner = case.split("_", 1)[0]
    return extract(output, code, argv=argv, name="test", cwd=f"{SCRATCH}/{runner}", **kwargs)


PYTEST = ["python", "-m", "pytest", "-q"]
GO = ["go", "test", "./..."]
JEST = ["npx", "jest", "--ci"]
MAVEN = ["mvn", "-B", "test"]


@pytest.mark.parametrize(
    ("case", "argv", "expected"),
    [
        (
            "pytest_fail",
            PYTEST,
            [
                "FAIL test (pytest, exit code 1)",
                "4 failed, 2 passed",
                "tests/test_calc.py::test_add - assert -1 == 5",
                "tests/test_calc.py::test_add_param[1-1]",
                "tests/test_calc.py:7: AssertionError",
                "E       assert -1 == 5",
                "calc.py:6: ValueError",
                "ValueError: invalid literal for int()",
            ],
        ),
        (
            "pytest_collect_error",
            PYTEST,
            [
                "exit code 2",
                "1 error in",
                "ERROR tests/test_broken.py",
                "tests/test_broken.py:1: in <module>",
                "ModuleNotFoundError: No module named 'broken_module_that_does_not_exist'",
            ],
        ),
        (
            "go_fail",
            GO,
            [
                "FAIL test (go, exit code 1): 1 package(s) failed",
                "- TestAdd",
                "- TestAddTable/case",
                "calc_test.go:7: Add(2, 3) = -1, want 5",
                "calc_test.go:15: Add(1, 1) = 0, want 2",
            ],
        ),
        (
            "go_build_fail",
            GO,
            [
                "1 did not build",
                "example.com/calc/broken (build failed)",
                "broken/broken.go:3:27: undefined: undefinedThing",
                "calc_test.go:7: Add(2, 3) = -1, want 5",
            ],
        ),
        (
            "jest_fail",
            JEST,
            [
                "FAIL test (jest, exit code 1): Tests: 2 failed, 1 passed, 3 total",
                "- sum \u203a adds 1 + 2 to equal 3",
                "- greets by name",
                "at sum.test.js:5:23",
                "at sum.test.js:13:24",
                "Expected: 3",
                "Received: -1",
                '-   "greeting": "Hello ada",',
                '+   "greeting": "hello ada",',
            ],
        ),
        (
            "maven_test_fail",
            MAVEN,
            [
                "FAIL test (maven, exit code 1): Tests run: 3, Failures: 1, Errors: 1, Skipped: 0",
                "CalcTest.addsTwoNumbers:10 expected: <5> but was: <-1>",
                "CalcTest.rejectsNothing:21 NullPointer",
                "at com.acme.CalcTest.addsTwoNumbers(CalcTest.java:10)",
            ],
        ),
        (
            "maven_compile_fail",
            MAVEN,
            [
                "compilation failed (1 error(s))",
                "src/main/java/com/acme/Calc.java:5:20: cannot find symbol",
                "symbol:   variable undefinedName",
            ],
        ),
    ],
)
def test_failures_name_the_failing_tests_and_first_errors_with_file_and_line(
    case: str, argv: list[str], expected: list[str]
):
    text = extracted(case, argv)
    for part in expected:
        assert part in text, f"{part!r} missing from:\n{text}"
    assert len(text) <= 2000
    raw, _ = fixture(case)
    assert len(text) < len(raw) or len(raw) < 1000  # shorter than what a chatty runner printed
    # noise stays out: progress, plugin banners, framework stack frames, the scratch path
    for noise in ("[INFO]", "importlib/__init__.py", "AssertionFailureBuilder", SCRATCH):
        assert noise not in text


@pytest.mark.parametrize(
    ("case", "argv", "line"),
    [
        ("pytest_pass", PYTEST, "PASS test (pytest): 6 passed in"),
        ("go_pass", GO, "PASS test (go): 1 package(s) ok"),
        ("jest_pass", JEST, "PASS test (jest): Tests: 3 passed, 3 total"),
    ],
)
def test_a_pass_is_one_line(case: str, argv: list[str], line: str):
    text = extracted(case, argv)
    assert "\n" not in text and text.startswith(line)


@pytest.mark.parametrize("limit", [200, 400, 700, 2000])
def test_the_text_is_bounded_by_max_chars(limit: int):
    for case, argv in [("pytest_fail", PYTEST), ("jest_fail", JEST), ("maven_test_fail", MAVEN)]:
        text = extracted(case, argv, max_chars=limit)
        assert len(text) <= limit
        assert text.startswith("FAIL test")  # the header always survives


def test_a_huge_output_stays_within_the_bound_and_counts_what_it_leaves_out():
    blocks = "".join(
        f"_____ test_{i} _____\n\n    def test_{i}():\n>       assert {i} == -1\n"
        f"E       assert {i} == -1\n\ntests/test_many.py:{i}: AssertionError\n"
        for i in range(500)
    )
    summary = "".join(
        f"FAILED tests/test_many.py::test_{i} - assert {i} == -1\n" for i in range(500)
    )
    output = (
        "=" * 10 + " FAILURES " + "=" * 10 + "\n" + blocks
        + "=" * 10 + " short test summary info " + "=" * 10 + "\n" + summary
        + "500 failed in 3.21s\n"
    )  # fmt: skip
    text = extract(output, 1, argv=PYTEST, name="test")
    assert len(text) <= 2000
    assert "500 failed in 3.21s" in text and re.search(r"\n- … and 4\d\d more\n", text)
    assert "tests/test_many.py:0: AssertionError" in text


def test_generic_gives_the_exit_code_and_the_tail():
    output = "".join(f"step {i}\n" for i in range(100)) + "make: *** [all] Error 2\n"
    text = extract(output, 2, argv=["make", "check"], name="build")
    assert text.startswith("FAIL build (generic, exit code 2)")
    assert text.rstrip().endswith("make: *** [all] Error 2")
    assert "step 99" in text and "step 0\n" not in text


def test_a_timeout_says_so():
    text = extract("collecting ...\n", -9, argv=PYTEST, name="test", timed_out=True, duration_s=30)
    assert text.startswith("FAIL test (pytest, timed out) in 30.0s")


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["python", "-m", "pytest", "-q"], "pytest"),
        ([".venv/bin/pytest"], "pytest"),
        (["go", "test", "./..."], "go"),
        (["npm", "test"], "jest"),
        (["npm", "run", "test", "--", "--ci"], "jest"),
        (["npx", "jest"], "jest"),
        (["./mvnw", "-B", "verify"], "maven"),
        (["make", "test"], "generic"),
    ],
)
def test_the_extractor_is_chosen_by_the_command(argv: list[str], kind: str):
    assert detect(argv) == kind


@pytest.mark.parametrize(
    ("case", "kind"),
    [("pytest_fail", "pytest"), ("go_fail", "go"), ("jest_fail", "jest"),
     ("maven_test_fail", "maven")],
)  # fmt: skip
def test_a_command_that_hides_the_runner_is_recognised_by_its_output(case: str, kind: str):
    output, code = fixture(case)
    assert detect(["make", "test"], output) == kind
    assert f"({kind}, exit code" in extract(output, code, argv=["make", "test"])


def test_an_explicit_extractor_wins_and_an_unknown_one_is_refused():
    output, code = fixture("pytest_fail")
    assert "(generic, exit code 1)" in extract(output, code, kind="generic", argv=PYTEST)
    with pytest.raises(ValueError, match="unknown extractor 'rspec'"):
        extract(output, code, kind="rspec")


def test_combined_failures_share_the_bound_and_passes_stay_one_line():
    texts = [extracted("pytest_fail", PYTEST), extracted("jest_fail", JEST), "PASS lint: ok"]
    text = combine(texts, 1200)
    assert len(text) <= 1200
    assert "FAIL test (pytest" in text and "FAIL test (jest" in text and "PASS lint: ok" in text


# the verifier runner and the MCP server without an agent ----------------------------------------


def spec(name: str, code: str, timeout_s: float = 30, extractor: str = "auto"):
    return verifier_mcp.VerifierSpec(name, [sys.executable, "-c", code], timeout_s, extractor)


def test_a_verifier_that_hangs_is_killed_at_its_timeout(tmp_path: Path):
    outcome = verifier_mcp.run_verifier(
        spec("slow", "import time; time.sleep(30)", 0.5), str(tmp_path)
    )
    assert not outcome.passed and outcome.timed_out and outcome.duration_s < 10
    assert outcome.text.startswith("FAIL slow (generic, timed out)")


def test_a_verifier_does_not_see_the_model_credentials(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret-value")
    code = "import os, sys; print(os.environ.get('ANTHROPIC_API_KEY')); sys.exit(1)"
    outcome = verifier_mcp.run_verifier(spec("env", code), str(tmp_path))
    assert "None" in outcome.text and "sk-secret-value" not in outcome.text


def test_a_verifier_with_a_huge_output_keeps_head_and_tail(tmp_path: Path):
    code = "import sys\nfor i in range(60000): print('line', i, 'x' * 20)\nsys.exit(3)"
    outcome = verifier_mcp.run_verifier(spec("loud", code), str(tmp_path), max_chars=500)
    assert outcome.exit_code == 3 and len(outcome.text) <= 500
    assert "line 59999" in outcome.text  # the tail is what a generic extract shows


def quality_config(tmp_path: Path, *verifiers: verifier_mcp.VerifierSpec, **extra) -> Path:
    config = {
        "run_id": "r1",
        "verifiers": [
            {"name": v.name, "argv": v.argv, "timeout_s": v.timeout_s} for v in verifiers
        ],
        "max_chars": 800,
        "max_stop_blocks": 2,
        "state_file": str(tmp_path / "state.json"),
        "gate_log": str(tmp_path / "gate.jsonl"),
        "call_log": str(tmp_path / "calls.jsonl"),
        **extra,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def rpc(lines: list[dict], tools: verifier_mcp.VerifierTools) -> list[dict]:
    out = io.StringIO()
    verifier_mcp.serve_builtin(
        tools, io.StringIO("".join(json.dumps(m) + "\n" for m in lines)), out
    )
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_builtin_mcp_server_answers_initialize_list_and_call(tmp_path: Path):
    path = quality_config(tmp_path, spec("test", "import sys; print('boom'); sys.exit(1)"),
                          spec("lint", "print('fine')"))  # fmt: skip
    tools = verifier_mcp.VerifierTools(verifier_mcp.load_config(path), cwd=str(tmp_path))
    replies = rpc(
        [
            {"jsonrpc": "2.0", "id": 0, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "run_verifier", "arguments": {"name": "all"}}},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": "run_verifier", "arguments": {"name": "nope"}}},
            {"jsonrpc": "2.0", "id": 4, "method": "bogus/method"},
        ],
        tools,
    )  # fmt: skip
    assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]  # the notification got no answer
    assert replies[0]["result"]["protocolVersion"] == "2025-06-18"
    assert replies[0]["result"]["serverInfo"]["name"] == "verifiers"
    (tool,) = replies[1]["result"]["tools"]
    assert tool["name"] == "run_verifier"
    assert tool["inputSchema"]["properties"]["name"]["enum"] == ["test", "lint", "all"]
    called = replies[2]["result"]
    assert called["isError"] is False
    text = called["content"][0]["text"]
    assert "FAIL test (generic, exit code 1)" in text and "boom" in text
    assert "PASS lint" in text
    assert replies[3]["result"]["isError"] is True
    assert (
        "unknown verifier 'nope'; known: test, lint, all"
        in replies[3]["result"]["content"][0]["text"]
    )
    assert replies[4]["error"]["code"] == -32601
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    got = [(c["name"], c["passed"], c["run_id"]) for c in calls]
    assert got == [("test", False, "r1"), ("lint", True, "r1")]


def test_a_bad_config_is_a_clear_error(tmp_path: Path):
    (tmp_path / "c.json").write_text('{"verifiers": [{"name": "x"}]}')
    with pytest.raises(ValueError, match=r"verifiers\.0 needs a `name` and an `argv` list"):
        verifier_mcp.load_config(tmp_path / "c.json")
    assert verifier_mcp.main([str(tmp_path / "missing.json")]) == 2


# the stop gate's decisions ----------------------------------------------------------------------


def gate(config: Path, hook: dict) -> dict | None:
    out = io.StringIO()
    assert stop_gate.main([str(config)], io.StringIO(json.dumps(hook)), out) == 0
    return json.loads(out.getvalue()) if out.getvalue().strip() else None


def test_the_gate_blocks_while_a_verifier_fails_then_lets_the_agent_stop(tmp_path: Path):
    flag = tmp_path / "fixed"
    code = f"import pathlib, sys; sys.exit(0 if pathlib.Path({str(flag)!r}).exists() else 1)"
    config = quality_config(tmp_path, spec("test", code))
    hook = {"session_id": "s", "cwd": str(tmp_path), "hook_event_name": "Stop"}
    first = gate(config, {**hook, "stop_hook_active": False})
    assert first is not None and first["decision"] == "block"
    assert "block 1 of 2" in first["reason"] and "FAIL test" in first["reason"]
    flag.write_text("")
    assert gate(config, {**hook, "stop_hook_active": True}) is None
    log = [json.loads(line) for line in (tmp_path / "gate.jsonl").read_text().splitlines()]
    assert [(e["decision"], e["why"], e["blocks"]) for e in log] == [
        ("block", "failing", 1),
        ("allow", "passed", 1),
    ]


def test_the_gate_gives_up_after_max_stop_blocks(tmp_path: Path):
    config = quality_config(tmp_path, spec("test", "raise SystemExit(1)"))
    hook = {"session_id": "s", "cwd": str(tmp_path)}
    decisions = [gate(config, hook) for _ in range(4)]
    assert [d and d["decision"] for d in decisions] == ["block", "block", None, None]
    log = [json.loads(line) for line in (tmp_path / "gate.jsonl").read_text().splitlines()]
    assert [e["why"] for e in log] == ["failing", "failing", "limit", "limit"]


def test_the_gate_fails_open_on_its_own_errors(tmp_path: Path):
    assert gate(tmp_path / "missing.json", {}) is None
    config = quality_config(tmp_path, spec("test", "raise SystemExit(1)"))
    out = io.StringIO()
    assert stop_gate.main([str(config)], io.StringIO("not json"), out) == 0
    assert out.getvalue() == ""
    (entry,) = [json.loads(line) for line in (tmp_path / "gate.jsonl").read_text().splitlines()]
    assert entry["decision"] == "allow" and entry["why"] == "error"
