"""Structured test reports (resources/agents/reports.py) read into the findings the console
extractors give: JUnit XML from real pytest runs made here, and real `jest --json`,
`go test -json` and maven surefire outputs (captured once, at the end of this file); a report
that is missing, stale, broken or empty leaves the console text in charge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources.agents import verifier_mcp
from resources.agents.console_text import parse_go, parse_jest
from resources.agents.extractors import clean, extract
from resources.agents.reports import (
    find_report,
    parse_go_json,
    parse_jest_json,
    parse_junit,
    parse_report,
    read_report,
)

PYTEST = ["python", "-m", "pytest", "-q"]
GO = ["go", "test", "-json", "./..."]
JEST = ["npx", "jest", "--ci", "--json"]
AGENTS_DIR = Path(verifier_mcp.__file__).parent

CALC = "def add(a, b):\n    return a - b\n\n\ndef parse(text):\n    return int(text)\n"
TESTS = """import pytest

from calc import add, parse


def test_add():
    assert add(2, 3) == 5


def test_parse_garbage():
    assert parse("twelve") is None


class TestMore:
    def test_ok(self):
        assert add(1, 0) == 1

    def test_negative(self):
        assert add(-1, -1) == -2

    @pytest.mark.skip(reason="later")
    def test_later(self):
        pass


@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")


def test_uses_broken(broken):
    pass
"""


def pytest_project(root: Path, *, broken_module: bool = False) -> Path:
    """A tiny failing project: calc.py subtracts, three tests fail, a fixture errors."""
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "calc.py").write_text(CALC)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    if broken_module:
        (root / "tests" / "test_broken.py").write_text("import broken_module_missing_here\n")
    return root


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def pytest_env() -> dict[str, str]:
    # the outer pytest run's settings and plugins stay out of the inner one
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def run_pytest(root: Path, *args: str) -> tuple[str, int]:
    """Run pytest in `root` as a sandbox would: stdout and stderr merged."""
    proc = subprocess.run(
        pytest_argv(*args),
        cwd=root,
        env=pytest_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return proc.stdout, proc.returncode


def failing_ids(text: str) -> list[str]:
    """The test ids an extract lists under `failing:` (without their messages)."""
    lines = text.split("failing:\n", 1)[1].split("\nfirst errors:", 1)[0].splitlines()
    return [line[2:].split(" - ", 1)[0] for line in lines if line.startswith("- ")]


# JUnit XML --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_a_pytest_junit_report_names_failing_tests_with_file_line_and_message(
    tmp_path: Path, family: str
):
    root = pytest_project(tmp_path)
    output, code = run_pytest(root, "--junitxml=report.xml", "-o", f"junit_family={family}")
    report = read_report("report.xml", cwd=root)
    assert code == 1 and report is not None
    text = extract(output, code, argv=PYTEST, name="test", cwd=str(root), report=report)
    assert text.startswith("FAIL test (junit, exit code 1): 3 failed, 1 passed, 1 skipped, 1 error")
    for part in [
        "- tests/test_calc.py::test_add - assert -1 == 5",
        "- tests/test_calc.py::TestMore::test_negative - assert 0 == -2",
        "- tests/test_calc.py::test_parse_garbage - ValueError: invalid literal for int()",
        '- ERROR tests/test_calc.py::test_uses_broken - failed on setup with "RuntimeError',
        "E       assert -1 == 5",
        "tests/test_calc.py:7: AssertionError",
        "calc.py:6: ValueError",
        "E       RuntimeError: fixture broke",
    ]:
        assert part in text, f"{part!r} missing from:\n{text}"
    if family == "xunit1":  # the testcase's own file and (1-based) line
        assert "\n  tests/test_calc.py:6\n" in text
    assert str(root) not in text and len(text) <= 2000
    # the same tests the console extractor names from the same run
    console = extract(output, code, argv=PYTEST, name="test", cwd=str(root))
    assert console.startswith("FAIL test (pytest, exit code 1)")
    assert failing_ids(text) == failing_ids(console)


def test_a_pytest_collection_error_in_a_junit_report_names_the_module(tmp_path: Path):
    root = pytest_project(tmp_path, broken_module=True)
    output, code = run_pytest(root, "--junitxml=report.xml")
    report = read_report(root / "report.xml")
    text = extract(output, code, argv=PYTEST, cwd=str(root), report=report)
    assert code == 2 and "(junit, exit code 2): 1 error in" in text
    assert "- ERROR tests/test_broken.py - collection failure" in text
    assert "tests/test_broken.py:1: in <module>" in text
    assert "ModuleNotFoundError: No module named 'broken_module_missing_here'" in text


def test_a_surefire_report_names_class_method_message_and_the_test_s_own_frame():
    text = extract("[INFO] BUILD FAILURE\n", 1, argv=["mvn", "-B", "test"], name="test",
                   report=SUREFIRE_REPORT)  # fmt: skip
    assert text.startswith("FAIL test (junit, exit code 1): 1 failed, 1 passed, 1 error in 0.13s")
    for part in [
        "- com.acme.CalcTest.addsTwoNumbers - expected: <5> but was: <-1>",
        '- ERROR com.acme.CalcTest.rejectsNothing - Cannot invoke "String.length()"',
        "org.opentest4j.AssertionFailedError: expected: <5> but was: <-1>",
        "at com.acme.CalcTest.addsTwoNumbers(CalcTest.java:10)",
        "at com.acme.CalcTest.rejectsNothing(CalcTest.java:21)",
    ]:
        assert part in text, f"{part!r} missing from:\n{text}"
    assert "AssertionFailureBuilder" not in text and "java.base" not in text


def test_a_verifier_s_report_file_is_read_when_this_run_wrote_it_and_then_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = pytest_project(tmp_path)
    spec = verifier_mcp.VerifierSpec(
        "test", pytest_argv("--junitxml=report.xml"), 120, "auto", report="report.xml"
    )
    for name in [k for k in os.environ if k.startswith("PYTEST_")]:
        monkeypatch.delenv(name)  # the verifier inherits this process's environment
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    outcome = verifier_mcp.run_verifier(spec, str(root))
    assert not outcome.passed and outcome.text.startswith("FAIL test (junit, exit code 1)")
    assert "tests/test_calc.py::test_add - assert -1 == 5" in outcome.text
    assert not (root / "report.xml").exists()  # the run's by-product stays out of the change


def test_a_stale_report_is_ignored_and_kept(tmp_path: Path):
    stale = tmp_path / "report.xml"
    stale.write_text(SUREFIRE_REPORT)
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert read_report(stale, since=time.time()) is None
    assert read_report(stale, since=an_hour_ago - 10) == SUREFIRE_REPORT
    assert read_report(tmp_path / "missing.xml") is None
    argv = [sys.executable, "-c", "print('boom'); raise SystemExit(1)"]
    spec = verifier_mcp.VerifierSpec("test", argv, 30, report="report.xml")
    outcome = verifier_mcp.run_verifier(spec, str(tmp_path))
    assert outcome.text.startswith("FAIL test (generic, exit code 1)") and "boom" in outcome.text
    assert stale.exists()  # not this run's: left alone


# go test -json ----------------------------------------------------------------------------------


def test_go_test_json_in_the_output_names_failing_tests_messages_and_build_errors():
    text = extract(GO_FAIL_OUT, 2, argv=GO, name="test", cwd=GO_SCRATCH)
    assert text.startswith(
        "FAIL test (go-json, exit code 2): 1 package(s) failed, 1 did not build, 0 ok"
    )
    for part in [
        "- TestAdd\n",
        "- TestAddTable/case\n",
        "TestAdd (example.com/calc/calc)\n  calc_test.go:7: Add(2, 3) = -1, want 5",
        "TestAddTable/case (example.com/calc/calc)\n  calc_test.go:15: Add(1, 1) = 0, want 2",
        "example.com/calc/broken (build failed)\n"
        "  broken/broken.go:3:27: undefined: undefinedThing",
    ]:
        assert part in text, f"{part!r} missing from:\n{text}"
    assert '"Action"' not in text and GO_SCRATCH not in text
    # found by its output when a wrapper hides the command, ignored when pytest is asked for
    assert "(go-json, exit code 2)" in extract(GO_FAIL_OUT, 2, argv=["make", "test"])
    assert find_report(GO_FAIL_OUT, "pytest") is None


def test_a_go_test_json_pass_is_one_line():
    passed = "\n".join(
        line.replace('"Action":"fail"', '"Action":"pass"')
        for line in GO_FAIL_OUT.splitlines()
        if line.startswith("{") and '"Output"' not in line
    )
    assert extract(passed, 0, argv=GO, name="test") == "PASS test (go-json): 1 package(s) ok"


# Go 1.24 reports build errors as JSON too (build-output/build-fail events with ImportPath, and
# FailedBuild on the package's fail event). go 1.19 is what is installed here, so these lines are
# written by hand to the format documented by `go help test` / `go doc test2json` (Go 1.24), with
# two parallel tests whose output interleaves.
GO_124_OUT = """\
{"ImportPath":"example.com/calc/broken [example.com/calc/broken.test]","Action":"build-output","Output":"# example.com/calc/broken [example.com/calc/broken.test]\\n"}
{"ImportPath":"example.com/calc/broken [example.com/calc/broken.test]","Action":"build-output","Output":"broken/broken.go:3:27: undefined: undefinedThing\\n"}
{"ImportPath":"example.com/calc/broken [example.com/calc/broken.test]","Action":"build-fail"}
{"Time":"2025-03-01T10:00:00.000001Z","Action":"start","Package":"example.com/calc/broken"}
{"Time":"2025-03-01T10:00:00.000002Z","Action":"output","Package":"example.com/calc/broken","Output":"FAIL\\texample.com/calc/broken [build failed]\\n"}
{"Time":"2025-03-01T10:00:00.000003Z","Action":"fail","Package":"example.com/calc/broken","Elapsed":0,"FailedBuild":"example.com/calc/broken [example.com/calc/broken.test]"}
{"Time":"2025-03-01T10:00:00.000010Z","Action":"start","Package":"example.com/calc/calc"}
{"Time":"2025-03-01T10:00:00.000011Z","Action":"run","Package":"example.com/calc/calc","Test":"TestA"}
{"Time":"2025-03-01T10:00:00.000012Z","Action":"output","Package":"example.com/calc/calc","Test":"TestA","Output":"=== RUN   TestA\\n"}
{"Time":"2025-03-01T10:00:00.000013Z","Action":"output","Package":"example.com/calc/calc","Test":"TestA","Output":"=== PAUSE TestA\\n"}
{"Time":"2025-03-01T10:00:00.000014Z","Action":"pause","Package":"example.com/calc/calc","Test":"TestA"}
{"Time":"2025-03-01T10:00:00.000015Z","Action":"run","Package":"example.com/calc/calc","Test":"TestB"}
{"Time":"2025-03-01T10:00:00.000016Z","Action":"output","Package":"example.com/calc/calc","Test":"TestB","Output":"=== RUN   TestB\\n"}
{"Time":"2025-03-01T10:00:00.000017Z","Action":"output","Package":"example.com/calc/calc","Test":"TestB","Output":"=== PAUSE TestB\\n"}
{"Time":"2025-03-01T10:00:00.000018Z","Action":"pause","Package":"example.com/calc/calc","Test":"TestB"}
{"Time":"2025-03-01T10:00:00.000019Z","Action":"cont","Package":"example.com/calc/calc","Test":"TestA"}
{"Time":"2025-03-01T10:00:00.000020Z","Action":"output","Package":"example.com/calc/calc","Test":"TestA","Output":"=== CONT  TestA\\n"}
{"Time":"2025-03-01T10:00:00.000021Z","Action":"cont","Package":"example.com/calc/calc","Test":"TestB"}
{"Time":"2025-03-01T10:00:00.000022Z","Action":"output","Package":"example.com/calc/calc","Test":"TestB","Output":"=== CONT  TestB\\n"}
{"Time":"2025-03-01T10:00:00.000023Z","Action":"output","Package":"example.com/calc/calc","Test":"TestB","Output":"    b_test.go:12: B got 1, want 2\\n"}
{"Time":"2025-03-01T10:00:00.000024Z","Action":"output","Package":"example.com/calc/calc","Test":"TestA","Output":"    a_test.go:9: A got 3, want 4\\n"}
{"Time":"2025-03-01T10:00:00.000025Z","Action":"output","Package":"example.com/calc/calc","Test":"TestB","Output":"--- FAIL: TestB (0.00s)\\n"}
{"Time":"2025-03-01T10:00:00.000026Z","Action":"fail","Package":"example.com/calc/calc","Test":"TestB","Elapsed":0}
{"Time":"2025-03-01T10:00:00.000027Z","Action":"output","Package":"example.com/calc/calc","Test":"TestA","Output":"--- FAIL: TestA (0.00s)\\n"}
{"Time":"2025-03-01T10:00:00.000028Z","Action":"fail","Package":"example.com/calc/calc","Test":"TestA","Elapsed":0}
{"Time":"2025-03-01T10:00:00.000029Z","Action":"output","Package":"example.com/calc/calc","Output":"FAIL\\n"}
{"Time":"2025-03-01T10:00:00.000030Z","Action":"output","Package":"example.com/calc/calc","Output":"FAIL\\texample.com/calc/calc\\t0.002s\\n"}
{"Time":"2025-03-01T10:00:00.000031Z","Action":"fail","Package":"example.com/calc/calc","Elapsed":0.002}
"""  # noqa: E501


def test_go_1_24_build_events_and_parallel_output_are_attributed_to_their_test():
    found = parse_go_json(GO_124_OUT)
    assert found is not None and found.kind == "go-json"
    assert found.findings.summary == "1 package(s) failed, 1 did not build, 0 ok"
    assert found.findings.failing == ["TestB", "TestA"]
    blocks = {b[0]: b[1:] for b in found.findings.errors}
    assert blocks["TestA (example.com/calc/calc)"] == ["  a_test.go:9: A got 3, want 4"]
    assert blocks["TestB (example.com/calc/calc)"] == ["  b_test.go:12: B got 1, want 2"]
    build = blocks["example.com/calc/broken [example.com/calc/broken.test] (build failed)"]
    assert build == ["  broken/broken.go:3:27: undefined: undefinedThing"]
    # read as console text, the same run says nothing of why: with -v (which -json implies) a
    # test's messages come before its "--- FAIL" line, and parallel tests interleave them
    assert parse_go(found.console or "").errors == []


# jest --json ------------------------------------------------------------------------------------


def test_jest_json_in_the_output_names_failing_tests_with_location_and_expected_received():
    text = extract(JEST_FAIL_OUT, 1, argv=JEST, name="test", cwd=JEST_SCRATCH)
    assert text.startswith(
        "FAIL test (jest-json, exit code 1): Tests: 2 failed, 1 passed, 3 total; "
        "1 suite(s) failed to run"
    )
    for part in [
        "- sum \u203a adds 1 + 2 to equal 3",
        "- greets by name",
        "at sum.test.js:5:23",
        "> 5 |     expect(sum(1, 2)).toBe(3);",
        "Expected: 3",
        "Received: -1",
        '-   "greeting": "Hello ada",',
        "at sum.test.js:13:24",
        "broken.test.js: Test suite failed to run",
        "SyntaxError: broken.test.js: Unexpected token (1:10)",
    ]:
        assert part in text, f"{part!r} missing from:\n{text}"
    assert "node_modules" not in text and JEST_SCRATCH not in text and len(text) <= 2000
    # the same tests jest's console report (in the same output, on stderr) names
    console = parse_jest(clean(JEST_FAIL_OUT, JEST_SCRATCH))
    found = find_report(clean(JEST_FAIL_OUT, JEST_SCRATCH))
    assert found is not None and found.findings.failing == console.failing


def test_jest_raw_failure_messages_serve_when_a_file_has_no_formatted_message():
    start = JEST_FAIL_OUT.index('{"numFailedTestSuites"')
    result = json.loads(JEST_FAIL_OUT[start:])
    for suite in result["testResults"]:
        suite["message"] = ""
    found = parse_report(clean(json.dumps(result), JEST_SCRATCH))
    assert found is not None and found.kind == "jest-json"
    blocks = {b[0]: b for b in found.findings.errors}
    adds = blocks["sum \u203a adds 1 + 2 to equal 3"]
    assert "  at sum.test.js:5:23" in adds and "  Expected: 3" in adds
    assert all("node_modules" not in line for line in adds)


def test_a_jest_report_file_that_passed_is_one_line():
    output = "PASS ./sum.test.js\nTests:       3 passed, 3 total\n"
    text = extract(output, 0, argv=JEST, name="test", report=JEST_PASS_REPORT)
    assert text.startswith("PASS test (jest-json): Tests: 3 passed, 3 total")


# the console text stays the fallback ------------------------------------------------------------


def test_a_broken_empty_or_cut_report_leaves_the_console_extractor_in_charge(tmp_path: Path):
    root = pytest_project(tmp_path)
    output, code = run_pytest(root, "--junitxml=report.xml")
    xml = (root / "report.xml").read_text()
    empty = '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="0"/></testsuites>'
    for report in (xml[: len(xml) // 2], empty, "not a report", ""):
        text = extract(output, code, argv=PYTEST, name="test", cwd=str(root), report=report)
        assert text.startswith("FAIL test (pytest, exit code 1)"), report
        assert "tests/test_calc.py::test_add - assert -1 == 5" in text
    # jest's object cut by a bounded capture (its head lost): jest's console text is read
    cut = JEST_FAIL_OUT[: JEST_FAIL_OUT.index('{"numFailedTestSuites"') + 2000]
    assert parse_jest_json(cut) is None
    assert "(jest, exit code 1)" in extract(cut, 1, argv=JEST, cwd=JEST_SCRATCH)
    assert parse_junit("<testsuites><testcase") is None


def test_a_report_s_extract_is_bounded_and_keeps_its_header():
    for limit in (200, 400, 2000):
        text = extract("", 1, argv=GO, name="test", max_chars=limit, report=SUREFIRE_REPORT)
        assert len(text) <= limit and text.startswith("FAIL test (junit, exit code 1)")
        text = extract(JEST_FAIL_OUT, 1, argv=JEST, name="test", max_chars=limit)
        assert len(text) <= limit and text.startswith("FAIL test (jest-json, exit code 1)")


# the verifier MCP server ------------------------------------------------------------------------


def test_the_config_carries_a_report_path(tmp_path: Path):
    path = tmp_path / "c.json"
    verifier = {"name": "test", "argv": ["pytest"], "report": "build/junit.xml"}
    path.write_text(json.dumps({"verifiers": [verifier]}))
    (spec,) = verifier_mcp.verifier_specs(verifier_mcp.load_config(path))
    assert spec.report == "build/junit.xml"
    path.write_text(json.dumps({"verifiers": [{**verifier, "report": ["x"]}]}))
    with pytest.raises(ValueError, match=r"verifiers\.0\.report must be a path"):
        verifier_mcp.load_config(path)


@pytest.mark.parametrize("impl", ["mcp", "builtin"])
def test_both_servers_answer_the_tool_the_same_way_over_stdio(tmp_path: Path, impl: str):
    config = tmp_path / "config.json"
    code = "print('FAILED tests/test_x.py::test_y - boom'); raise SystemExit(1)"
    verifier = {"name": "test", "argv": [sys.executable, "-c", code], "timeout_s": 30}
    config.write_text(json.dumps({"verifiers": [verifier], "max_chars": 800}))
    requests = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "run_verifier", "arguments": {"name": "test"}}},
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(AGENTS_DIR / "verifier_mcp.py"), str(config)],
        cwd=tmp_path,
        env={**os.environ, "VERIFIER_MCP_IMPL": impl},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for request in requests:
            proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        replies = {}
        while 1 not in replies:  # the SDK answers asynchronously: wait for the call's answer
            line = proc.stdout.readline()
            assert line, "the server closed its output"
            reply = json.loads(line)
            replies[reply.get("id")] = reply
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert replies[0]["result"]["serverInfo"]["name"] == "verifiers"
    result = replies[1]["result"]
    assert result["isError"] is False
    assert result["content"][0]["text"].startswith("FAIL test (generic, exit code 1)")
    assert "boom" in result["content"][0]["text"]


# real outputs ------------------------------------------------------------------------------------
# Captured here on 2026-12-07 (the scratch projects of tests/fixtures/extractors/regenerate.sh,
# run under /tmp/report-fixtures): jest 29.7 and go 1.19 outputs are the merged stdout+stderr, as
# a sandbox captures them; surefire 3.2.5's report is the file maven wrote, its <property> lines
# (the build machine's environment) left out.

JEST_SCRATCH = "/tmp/report-fixtures/jest"
# npx --no-install jest --ci --json  (sum.test.js fails twice, broken.test.js does not parse)
JEST_FAIL_OUT = r"""FAIL ./sum.test.js
  ● sum › adds 1 + 2 to equal 3

    expect(received).toBe(expected) // Object.is equality

    Expected: 3
    Received: -1

      3 | describe('sum', () => {
      4 |   test('adds 1 + 2 to equal 3', () => {
    > 5 |     expect(sum(1, 2)).toBe(3);
        |                       ^
      6 |   });
      7 |   test('adds zeros', () => {
      8 |     expect(sum(0, 0)).toBe(0);

      at Object.toBe (sum.test.js:5:23)

  ● greets by name

    expect(received).toEqual(expected) // deep equality

    - Expected  - 1
    + Received  + 1

      Object {
    -   "greeting": "Hello ada",
    +   "greeting": "hello ada",
        "length": 3,
      }

      11 |
      12 | test('greets by name', () => {
    > 13 |   expect(greet('ada')).toEqual({ greeting: 'Hello ada', length: 3 });
         |                        ^
      14 | });
      15 |

      at Object.toEqual (sum.test.js:13:24)

FAIL ./broken.test.js
  ● Test suite failed to run

    Jest encountered an unexpected token

    Jest failed to parse a file. This happens e.g. when your code or its dependencies use non-standard JavaScript syntax, or when Jest is not configured to support such syntax.

    Out of the box Jest supports Babel, which will be used to transform your files into valid JS based on your Babel configuration.

    By default "node_modules" folder is ignored by transformers.

    Here's what you can do:
     • If you are trying to use ECMAScript Modules, see https://jestjs.io/docs/ecmascript-modules for how to enable it.
     • If you are trying to use TypeScript, see https://jestjs.io/docs/getting-started#using-typescript
     • To have some of your "node_modules" files transformed, you can specify a custom "transformIgnorePatterns" in your config.
     • If you need a custom transformation specify a "transform" option in your config.
     • If you simply want to mock your non-JS modules (e.g. binary assets) you can stub them out with the "moduleNameMapper" config option.

    You'll find more details and examples of these config options in the docs:
    https://jestjs.io/docs/configuration
    For information about custom transformations, see:
    https://jestjs.io/docs/code-transformation

    Details:

    SyntaxError: /tmp/report-fixtures/jest/broken.test.js: Unexpected token (1:10)

    > 1 | const x = ;
        |           ^
      2 |

      at constructor (node_modules/@babel/parser/src/parse-error.ts:96:45)
          at parser.next (<anonymous>)
          at normalizeFile.next (<anonymous>)
          at run.next (<anonymous>)
          at transform.next (<anonymous>)

Test Suites: 2 failed, 2 total
Tests:       2 failed, 1 passed, 3 total
Snapshots:   0 total
Time:        1.57 s
Ran all test suites.
{"numFailedTestSuites":2,"numFailedTests":2,"numPassedTestSuites":0,"numPassedTests":1,"numPendingTestSuites":0,"numPendingTests":0,"numRuntimeErrorTestSuites":1,"numTodoTests":0,"numTotalTestSuites":2,"numTotalTests":3,"openHandles":[],"snapshot":{"added":0,"didUpdate":false,"failure":false,"filesAdded":0,"filesRemoved":0,"filesRemovedList":[],"filesUnmatched":0,"filesUpdated":0,"matched":0,"total":0,"unchecked":0,"uncheckedKeysByFile":[],"unmatched":0,"updated":0},"startTime":1796612192874,"success":false,"testResults":[{"assertionResults":[{"ancestorTitles":["sum"],"duration":9,"failureDetails":[{"matcherResult":{"actual":-1,"expected":3,"message":"expect(received).toBe(expected) // Object.is equality\n\nExpected: 3\nReceived: -1","name":"toBe","pass":false}}],"failureMessages":["Error: expect(received).toBe(expected) // Object.is equality\n\nExpected: 3\nReceived: -1\n    at Object.toBe (/tmp/report-fixtures/jest/sum.test.js:5:23)\n    at Promise.then.completed (/tmp/report-fixtures/jest/node_modules/jest-circus/build/utils.js:298:28)\n    at new Promise (<anonymous>)\n    at callAsyncCircusFn (/tmp/report-fixtures/jest/node_modules/jest-circus/build/utils.js:231:10)\n    at _callCircusTest (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:316:40)\n    at _runTest (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:252:3)\n    at _runTestsForDescribeBlock (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:126:9)\n    at _runTestsForDescribeBlock (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:121:9)\n    at run (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:71:3)\n    at runAndTransformResultsToJestFormat (/tmp/report-fixtures/jest/node_modules/jest-circus/build/legacy-code-todo-rewrite/jestAdapterInit.js:122:21)\n    at jestAdapter (/tmp/report-fixtures/jest/node_modules/jest-circus/build/legacy-code-todo-rewrite/jestAdapter.js:79:19)\n    at runTestInternal (/tmp/report-fixtures/jest/node_modules/jest-runner/build/runTest.js:367:16)\n    at runTest (/tmp/report-fixtures/jest/node_modules/jest-runner/build/runTest.js:444:34)"],"fullName":"sum adds 1 + 2 to equal 3","invocations":1,"location":null,"numPassingAsserts":0,"retryReasons":[],"status":"failed","title":"adds 1 + 2 to equal 3"},{"ancestorTitles":["sum"],"duration":0,"failureDetails":[],"failureMessages":[],"fullName":"sum adds zeros","invocations":1,"location":null,"numPassingAsserts":1,"retryReasons":[],"status":"passed","title":"adds zeros"},{"ancestorTitles":[],"duration":8,"failureDetails":[{"matcherResult":{"actual":{"greeting":"hello ada","length":3},"expected":{"greeting":"Hello ada","length":3},"message":"expect(received).toEqual(expected) // deep equality\n\n- Expected  - 1\n+ Received  + 1\n\n  Object {\n-   \"greeting\": \"Hello ada\",\n+   \"greeting\": \"hello ada\",\n    \"length\": 3,\n  }","name":"toEqual","pass":false}}],"failureMessages":["Error: expect(received).toEqual(expected) // deep equality\n\n- Expected  - 1\n+ Received  + 1\n\n  Object {\n-   \"greeting\": \"Hello ada\",\n+   \"greeting\": \"hello ada\",\n    \"length\": 3,\n  }\n    at Object.toEqual (/tmp/report-fixtures/jest/sum.test.js:13:24)\n    at Promise.then.completed (/tmp/report-fixtures/jest/node_modules/jest-circus/build/utils.js:298:28)\n    at new Promise (<anonymous>)\n    at callAsyncCircusFn (/tmp/report-fixtures/jest/node_modules/jest-circus/build/utils.js:231:10)\n    at _callCircusTest (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:316:40)\n    at _runTest (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:252:3)\n    at _runTestsForDescribeBlock (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:126:9)\n    at run (/tmp/report-fixtures/jest/node_modules/jest-circus/build/run.js:71:3)\n    at runAndTransformResultsToJestFormat (/tmp/report-fixtures/jest/node_modules/jest-circus/build/legacy-code-todo-rewrite/jestAdapterInit.js:122:21)\n    at jestAdapter (/tmp/report-fixtures/jest/node_modules/jest-circus/build/legacy-code-todo-rewrite/jestAdapter.js:79:19)\n    at runTestInternal (/tmp/report-fixtures/jest/node_modules/jest-runner/build/runTest.js:367:16)\n    at runTest (/tmp/report-fixtures/jest/node_modules/jest-runner/build/runTest.js:444:34)"],"fullName":"greets by name","invocations":1,"location":null,"numPassingAsserts":0,"retryReasons":[],"status":"failed","title":"greets by name"}],"endTime":1796612193520,"message":"  ● sum › adds 1 + 2 to equal 3\n\n    expect(received).toBe(expected) // Object.is equality\n\n    Expected: 3\n    Received: -1\n\n      3 | describe('sum', () => {\n      4 |   test('adds 1 + 2 to equal 3', () => {\n    > 5 |     expect(sum(1, 2)).toBe(3);\n        |                       ^\n      6 |   });\n      7 |   test('adds zeros', () => {\n      8 |     expect(sum(0, 0)).toBe(0);\n\n      at Object.toBe (sum.test.js:5:23)\n\n  ● greets by name\n\n    expect(received).toEqual(expected) // deep equality\n\n    - Expected  - 1\n    + Received  + 1\n\n      Object {\n    -   \"greeting\": \"Hello ada\",\n    +   \"greeting\": \"hello ada\",\n        \"length\": 3,\n      }\n\n      11 |\n      12 | test('greets by name', () => {\n    > 13 |   expect(greet('ada')).toEqual({ greeting: 'Hello ada', length: 3 });\n         |                        ^\n      14 | });\n      15 |\n\n      at Object.toEqual (sum.test.js:13:24)\n","name":"/tmp/report-fixtures/jest/sum.test.js","startTime":1796612192943,"status":"failed","summary":""},{"assertionResults":[],"coverage":{},"endTime":1796612194450,"message":"  ● Test suite failed to run\n\n    Jest encountered an unexpected token\n\n    Jest failed to parse a file. This happens e.g. when your code or its dependencies use non-standard JavaScript syntax, or when Jest is not configured to support such syntax.\n\n    Out of the box Jest supports Babel, which will be used to transform your files into valid JS based on your Babel configuration.\n\n    By default \"node_modules\" folder is ignored by transformers.\n\n    Here's what you can do:\n     • If you are trying to use ECMAScript Modules, see https://jestjs.io/docs/ecmascript-modules for how to enable it.\n     • If you are trying to use TypeScript, see https://jestjs.io/docs/getting-started#using-typescript\n     • To have some of your \"node_modules\" files transformed, you can specify a custom \"transformIgnorePatterns\" in your config.\n     • If you need a custom transformation specify a \"transform\" option in your config.\n     • If you simply want to mock your non-JS modules (e.g. binary assets) you can stub them out with the \"moduleNameMapper\" config option.\n\n    You'll find more details and examples of these config options in the docs:\n    https://jestjs.io/docs/configuration\n    For information about custom transformations, see:\n    https://jestjs.io/docs/code-transformation\n\n    Details:\n\n    SyntaxError: /tmp/report-fixtures/jest/broken.test.js: Unexpected token (1:10)\n\n    > 1 | const x = ;\n        |           ^\n      2 |\n\n      at constructor (node_modules/@babel/parser/src/parse-error.ts:96:45)\n          at parser.next (<anonymous>)\n          at normalizeFile.next (<anonymous>)\n          at run.next (<anonymous>)\n          at transform.next (<anonymous>)\n","name":"/tmp/report-fixtures/jest/broken.test.js","startTime":1796612194450,"status":"failed","summary":""}],"wasInterrupted":false}
"""  # noqa: E501, RUF001
# npx --no-install jest --ci --json --outputFile=report.json, once sum.js is fixed: the file
JEST_PASS_REPORT = r"""{"numFailedTestSuites":0,"numFailedTests":0,"numPassedTestSuites":1,"numPassedTests":3,"numPendingTestSuites":0,"numPendingTests":0,"numRuntimeErrorTestSuites":0,"numTodoTests":0,"numTotalTestSuites":1,"numTotalTests":3,"openHandles":[],"snapshot":{"added":0,"didUpdate":false,"failure":false,"filesAdded":0,"filesRemoved":0,"filesRemovedList":[],"filesUnmatched":0,"filesUpdated":0,"matched":0,"total":0,"unchecked":0,"uncheckedKeysByFile":[],"unmatched":0,"updated":0},"startTime":1796612197508,"success":true,"testResults":[{"assertionResults":[{"ancestorTitles":["sum"],"duration":2,"failureDetails":[],"failureMessages":[],"fullName":"sum adds 1 + 2 to equal 3","invocations":1,"location":null,"numPassingAsserts":1,"retryReasons":[],"status":"passed","title":"adds 1 + 2 to equal 3"},{"ancestorTitles":["sum"],"duration":1,"failureDetails":[],"failureMessages":[],"fullName":"sum adds zeros","invocations":1,"location":null,"numPassingAsserts":1,"retryReasons":[],"status":"passed","title":"adds zeros"},{"ancestorTitles":[],"duration":1,"failureDetails":[],"failureMessages":[],"fullName":"greets by name","invocations":1,"location":null,"numPassingAsserts":1,"retryReasons":[],"status":"passed","title":"greets by name"}],"endTime":1796612198482,"message":"","name":"/tmp/report-fixtures/jest/sum.test.js","startTime":1796612197651,"status":"passed","summary":""}],"wasInterrupted":false}
"""  # noqa: E501

GO_SCRATCH = "/tmp/report-fixtures/go"
# go test -json ./...  (go 1.19: ./calc fails, ./broken does not build; its errors are plain
# stderr lines, as before Go 1.24)
GO_FAIL_OUT = r"""# example.com/calc/broken
broken/broken.go:3:27: undefined: undefinedThing
{"Time":"2026-12-07T02:56:41.546730998Z","Action":"run","Package":"example.com/calc/calc","Test":"TestAdd"}
{"Time":"2026-12-07T02:56:41.546809515Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAdd","Output":"=== RUN   TestAdd\n"}
{"Time":"2026-12-07T02:56:41.546819774Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAdd","Output":"    calc_test.go:7: Add(2, 3) = -1, want 5\n"}
{"Time":"2026-12-07T02:56:41.546826316Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAdd","Output":"--- FAIL: TestAdd (0.00s)\n"}
{"Time":"2026-12-07T02:56:41.546830534Z","Action":"fail","Package":"example.com/calc/calc","Test":"TestAdd","Elapsed":0}
{"Time":"2026-12-07T02:56:41.546835693Z","Action":"run","Package":"example.com/calc/calc","Test":"TestAddTable"}
{"Time":"2026-12-07T02:56:41.546840993Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable","Output":"=== RUN   TestAddTable\n"}
{"Time":"2026-12-07T02:56:41.54684484Z","Action":"run","Package":"example.com/calc/calc","Test":"TestAddTable/case"}
{"Time":"2026-12-07T02:56:41.546848347Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable/case","Output":"=== RUN   TestAddTable/case\n"}
{"Time":"2026-12-07T02:56:41.546853777Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable/case","Output":"    calc_test.go:15: Add(1, 1) = 0, want 2\n"}
{"Time":"2026-12-07T02:56:41.547042919Z","Action":"run","Package":"example.com/calc/calc","Test":"TestAddTable/case#01"}
{"Time":"2026-12-07T02:56:41.547056525Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable/case#01","Output":"=== RUN   TestAddTable/case#01\n"}
{"Time":"2026-12-07T02:56:41.547065882Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable","Output":"--- FAIL: TestAddTable (0.00s)\n"}
{"Time":"2026-12-07T02:56:41.547074729Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable/case","Output":"    --- FAIL: TestAddTable/case (0.00s)\n"}
{"Time":"2026-12-07T02:56:41.547082533Z","Action":"fail","Package":"example.com/calc/calc","Test":"TestAddTable/case","Elapsed":0}
{"Time":"2026-12-07T02:56:41.547089346Z","Action":"output","Package":"example.com/calc/calc","Test":"TestAddTable/case#01","Output":"    --- PASS: TestAddTable/case#01 (0.00s)\n"}
{"Time":"2026-12-07T02:56:41.54709684Z","Action":"pass","Package":"example.com/calc/calc","Test":"TestAddTable/case#01","Elapsed":0}
{"Time":"2026-12-07T02:56:41.547100216Z","Action":"fail","Package":"example.com/calc/calc","Test":"TestAddTable","Elapsed":0}
{"Time":"2026-12-07T02:56:41.547103372Z","Action":"run","Package":"example.com/calc/calc","Test":"TestDiv"}
{"Time":"2026-12-07T02:56:41.547106728Z","Action":"output","Package":"example.com/calc/calc","Test":"TestDiv","Output":"=== RUN   TestDiv\n"}
{"Time":"2026-12-07T02:56:41.547110696Z","Action":"output","Package":"example.com/calc/calc","Test":"TestDiv","Output":"--- PASS: TestDiv (0.00s)\n"}
{"Time":"2026-12-07T02:56:41.547114172Z","Action":"pass","Package":"example.com/calc/calc","Test":"TestDiv","Elapsed":0}
{"Time":"2026-12-07T02:56:41.547117509Z","Action":"output","Package":"example.com/calc/calc","Output":"FAIL\n"}
{"Time":"2026-12-07T02:56:41.547450088Z","Action":"output","Package":"example.com/calc/calc","Output":"FAIL\texample.com/calc/calc\t0.003s\n"}
{"Time":"2026-12-07T02:56:41.54751016Z","Action":"fail","Package":"example.com/calc/calc","Elapsed":0.003}
"""  # noqa: E501

# mvn -B -o test: target/surefire-reports/TEST-com.acme.CalcTest.xml
SUREFIRE_REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report-3.0.xsd" version="3.0" name="com.acme.CalcTest" time="0.133" tests="3" errors="1" skipped="0" failures="1">
  <properties>
  </properties>
  <testcase name="addsTwoNumbers" classname="com.acme.CalcTest" time="0.055">
    <failure message="expected: &lt;5&gt; but was: &lt;-1&gt;" type="org.opentest4j.AssertionFailedError"><![CDATA[org.opentest4j.AssertionFailedError: expected: <5> but was: <-1>
\tat org.junit.jupiter.api.AssertionFailureBuilder.build(AssertionFailureBuilder.java:151)
\tat org.junit.jupiter.api.AssertionFailureBuilder.buildAndThrow(AssertionFailureBuilder.java:132)
\tat org.junit.jupiter.api.AssertEquals.failNotEqual(AssertEquals.java:197)
\tat org.junit.jupiter.api.AssertEquals.assertEquals(AssertEquals.java:150)
\tat org.junit.jupiter.api.AssertEquals.assertEquals(AssertEquals.java:145)
\tat org.junit.jupiter.api.Assertions.assertEquals(Assertions.java:531)
\tat com.acme.CalcTest.addsTwoNumbers(CalcTest.java:10)
\tat java.base/java.lang.reflect.Method.invoke(Method.java:569)
\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)
\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)
]]></failure>
  </testcase>
  <testcase name="rejectsNothing" classname="com.acme.CalcTest" time="0.005">
    <error message="Cannot invoke &quot;String.length()&quot; because &quot;value&quot; is null" type="java.lang.NullPointerException"><![CDATA[java.lang.NullPointerException: Cannot invoke "String.length()" because "value" is null
\tat com.acme.CalcTest.rejectsNothing(CalcTest.java:21)
\tat java.base/java.lang.reflect.Method.invoke(Method.java:569)
\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)
\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)
]]></error>
  </testcase>
  <testcase name="addsZeros" classname="com.acme.CalcTest" time="0.005"/>
</testsuite>
"""  # noqa: E501
