"""Findings from a runner's machine-readable report, preferred to its console text.

A report names every failing test with its message and location without any guessing about
console layout, interleaved parallel output or a runner's verbosity flags. Three formats:

- JUnit XML (`pytest --junitxml=…`, maven surefire, and the many tools that emit it): from a
  file the verifier declares (`read_report`), or a whole output that is one XML document;
- `go test -json` (JSON lines with Action/Package/Test/Output), found in the output itself;
  plain lines between them (build errors before Go 1.24) are read as console text;
- `jest --json` (one object with testResults/assertionResults), in the output or in the file
  `--outputFile` wrote.

    found = parse_report(text) or find_report(output)   # a Report, or None: use the console

The findings have the console extractors' shape (`extractors.Findings`: summary, failing test
ids, blocks with file:line and the first error lines), so the rendered text reads the same.

Standard library only, like `extractors.py`: the verifier MCP server imports it inside a
sandbox whose Python may have nothing else installed (which is also why JUnit XML is read with
`xml.etree` and not a JUnit library).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

if __package__:
    from resources.agents.console_text import (
        ANSI,
        MAX_BLOCK_LINES,
        Findings,
        go_summary,
        keep_pytest_line,
        parse_go,
        parse_jest,
    )
else:  # run as a script inside a sandbox: the sibling file
    from console_text import (  # type: ignore[no-redef]
        ANSI,
        MAX_BLOCK_LINES,
        Findings,
        go_summary,
        keep_pytest_line,
        parse_go,
        parse_jest,
    )

REPORT_FORMATS = ("junit", "go-json", "jest-json")
JEST_SEPARATOR = " \u203a "  # between a describe block's title and a test's
MAX_REPORT_BYTES = 50_000_000  # a bigger report is not read (the console text is used)
MTIME_SLACK_S = 2.0  # file systems that keep coarse modification times
# Stack frames of the test frameworks and runtimes, not of the code under test.
_FRAMEWORK_FRAME = re.compile(
    r"\bat (java\.|javax\.|jdk\.|sun\.|org\.junit\.|org\.opentest4j\.|org\.apache\.maven\.|"
    r"kotlin\.|scala\.)|node_modules|site-packages|/lib/python|<frozen"
)
_LOCATION = re.compile(r"\S+\.\w+:\d+|File \"[^\"]+\", line \d+")
_GO_EVENT = re.compile(
    r'^\s*\{.*"Action":\s*"(?:start|run|output|pass|fail|skip|pause|cont|bench|build-output|'
    r'build-fail)"',
    re.M,
)
_GO_MESSAGE = re.compile(r"^\s+(\S+\.go:\d+: .*)$")
_JEST_START = re.compile(r'\{"(?:num(?:Failed|Passed|Total|Pending)\w*|testResults|success)"\s*:')


@dataclass
class Report:
    """A runner's report read into findings: its format, what it found, how many tests (or
    packages) it counted, and the output as plain text where the report replaced it (go's
    Output fields), for the tail shown when nothing specific failed."""

    kind: str
    findings: Findings
    tests: int
    console: str | None = None


def read_report(
    path: str | os.PathLike[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    since: float | None = None,
    max_bytes: int = MAX_REPORT_BYTES,
) -> str | None:
    """The text of a report file a verifier wrote (a relative `path` from `cwd`); None when it
    is missing, unreadable, too big, or older than `since` (a time.time(): a previous run's
    report must not speak for this one)."""
    full = Path(cwd or ".") / path
    try:
        stat = full.stat()
        if since is not None and stat.st_mtime < since - MTIME_SLACK_S:
            return None
        if stat.st_size > max_bytes:
            return None
        return full.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_report(text: str) -> Report | None:
    """A report file's findings, whatever its format (JUnit XML, jest JSON, go test JSON
    lines); None when it is none of them or counted no tests."""
    if text.lstrip().startswith("<"):
        return parse_junit(text)
    return parse_jest_json(text) or parse_go_json(text)


def find_report(output: str, kind: str = "auto") -> Report | None:
    """A report a runner printed into its own output (`go test -json`, `jest --json`, or an
    output that is one JUnit XML document); `kind` (an extractor) limits which are looked
    for. None: read the console text."""
    if kind in ("auto", "go") and _GO_EVENT.search(output):
        found = parse_go_json(output)
        if found:
            return found
    if kind in ("auto", "jest") and '"testResults"' in output:
        found = parse_jest_json(output)
        if found:
            return found
    if kind == "auto" and output.lstrip().startswith(("<?xml", "<testsuite")):
        return parse_junit(output)
    return None


# JUnit XML --------------------------------------------------------------------------------------


def parse_junit(text: str) -> Report | None:
    """JUnit XML (`<testsuites>` or `<testsuite>`, nested or not): every testcase with a
    `failure` or `error`, named as its runner names it (pytest's node id when the file can be
    told, else class.name), its message, and its location and first error lines from the
    failure's text."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    pytest = any(_local(e.tag) == "testsuite" and e.get("name") == "pytest" for e in root.iter())
    findings = Findings()
    counts = {"failed": 0, "passed": 0, "skipped": 0, "error": 0}
    cases = [e for e in root.iter() if _local(e.tag) == "testcase"]
    for case in cases:
        outcome = {_local(c.tag): c for c in case}
        bad = outcome.get("failure") if "failure" in outcome else outcome.get("error")
        if bad is None:
            counts["skipped" if "skipped" in outcome else "passed"] += 1
            continue
        is_error = _local(bad.tag) == "error"
        counts["error" if is_error else "failed"] += 1
        body = (bad.text or "").strip("\n")
        message = (bad.get("message") or "").strip() or _first_line(body)
        test_id = _junit_id(case.get("classname") or "", case.get("name") or "", case, body)
        line = f"{test_id} - {_first_line(message)}" if message else test_id
        findings.failing.append(("ERROR " if is_error else "") + line)
        block = [test_id, *_junit_lines(case, body, message, pytest)]
        if len(block) > 1:
            findings.errors.append(block)
    if not cases:
        return None
    parts = [f"{counts['failed']} failed"] if counts["failed"] else []
    parts += [f"{counts[k]} {k}" for k in ("passed", "skipped") if counts[k]]
    if counts["error"]:
        parts.append(f"{counts['error']} error{'s' if counts['error'] > 1 else ''}")
    took = _float(root.get("time")) or sum(
        _float(s.get("time")) for s in root.iter() if _local(s.tag) == "testsuite"
    )
    findings.summary = ", ".join(parts) + (f" in {took:.2f}s" if took else "")
    return Report("junit", findings, len(cases))


def _junit_id(classname: str, name: str, case: ET.Element, body: str) -> str:
    """pytest's node id (`tests/test_x.py::TestK::test_y`) when a module path in the class
    name is the file the failure points at (or the `file` attribute), else `class.name`."""
    # pytest names a collection error by its module, with no class name
    parts, tail = (classname.split("."), [name]) if classname else (name.split("."), [])
    for k in range(len(parts), 0, -1):
        path = "/".join(parts[:k]) + ".py"
        located = re.search(rf"(?:^|[\s/]){re.escape(path)}:\d+", body, re.M)
        if path == case.get("file") or located:
            return "::".join([path, *parts[k:], *tail])
    return f"{classname}.{name}" if classname else name


def _junit_lines(case: ET.Element, body: str, message: str, pytest: bool) -> list[str]:
    """A failure's block lines: the testcase's file:line (when given), then for a pytest
    failure its locations and `E` lines, else its first line and the first frame of the
    test's own code."""
    kept: list[str] = []
    where = case.get("file")
    if where and (case.get("line") or "").isdigit():
        # pytest's xunit1 `line` counts from 0; other runners count from 1
        where += f":{int(case.get('line') or 0) + (1 if pytest else 0)}"
    if where:
        kept.append(f"  {where}")
    lines = body.splitlines()
    if any(line.startswith("E ") for line in lines):
        for line in lines:
            if keep_pytest_line(line, kept):
                kept.append("  " + line.rstrip())
        return kept[:MAX_BLOCK_LINES]
    first = _first_line(body) or message
    if first:
        kept.append("  " + first)
    method = case.get("name") or ""
    short = (case.get("classname") or "").rsplit(".", 1)[-1]
    frames = [
        x.strip() for x in lines[1:] if _LOCATION.search(x) and not _FRAMEWORK_FRAME.search(x)
    ]
    own = [x for x in frames if short and f"{short}.{method}" in x]
    if own or frames:
        kept.append("  " + (own or frames)[0])
    return kept[:MAX_BLOCK_LINES]


def _local(tag: str) -> str:
    """An element's name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


# go test -json ----------------------------------------------------------------------------------


def parse_go_json(text: str) -> Report | None:
    """`go test -json`: failing tests from their `fail` events, each with the file.go:line
    messages of its own Output (right even when tests run in parallel), panics, build errors
    (Go 1.24's build-output events, or plain lines before it), and the package counts."""
    events: list[dict] = []
    plain: list[str] = []  # not JSON: build errors on stderr before Go 1.24
    for line in text.splitlines():
        event = _json_line(line)
        if event is not None and "Action" in event:
            events.append(event)
        else:
            plain.append(line)
    if not events:
        return None
    outputs: dict[tuple[str, str], list[str]] = {}
    build: list[str] = []
    said: list[str] = []  # every Output in order: the console text go test -v would print
    failing: list[tuple[str, str]] = []
    failed_packages = ok_packages = tests = 0
    unbuilt: set[str] = set()
    for event in events:
        action, package, test = event["Action"], event.get("Package", ""), event.get("Test")
        if action == "build-output":
            build.append(str(event.get("Output") or ""))
        elif action == "output":
            said.append(str(event.get("Output") or ""))
            outputs.setdefault((package, test or ""), []).append(said[-1])
        elif action in ("pass", "fail", "skip") and test:
            tests += 1
            if action == "fail":
                failing.append((package, test))
        elif action == "fail" and event.get("FailedBuild"):
            unbuilt.add(str(event["FailedBuild"]))
        elif action == "fail":
            failed_packages += 1
        elif action == "pass":
            ok_packages += 1
    findings = Findings(failing=[test for _, test in failing])
    for package, test in failing:
        own = "".join(outputs.get((package, test), [])).splitlines()
        messages = ["  " + m.group(1).strip() for m in map(_GO_MESSAGE.match, own) if m]
        if messages:  # a parent's "--- FAIL" repeats its subtests: only theirs say why
            findings.errors.append([f"{test} ({package})", *messages])
    console = "".join(said)
    findings.errors += _go_panics(console.splitlines())
    built = parse_go("".join(build) + "\n".join(plain))
    findings.errors = built.errors + findings.errors
    unbuilt_count = max(len(unbuilt), sum(line.startswith("# ") for line in [*build, *plain]))
    findings.summary = go_summary(failed_packages, unbuilt_count, ok_packages)
    return Report(
        "go-json",
        findings,
        tests + ok_packages + failed_packages,
        console + "".join(line + "\n" for line in plain),
    )


def _go_panics(lines: list[str]) -> list[list[str]]:
    """A `panic:` line with the first file.go:line after it (where the test code panicked)."""
    found = []
    for i, line in enumerate(lines):
        if line.startswith("panic: "):
            where = next((x.strip() for x in lines[i + 1 : i + 40] if ".go:" in x), "")
            found.append([line.strip(), *(["  " + where] if where else [])])
    return found


def _json_line(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# jest --json ------------------------------------------------------------------------------------


def parse_jest_json(text: str) -> Report | None:
    """`jest --json`: the counts as jest's `Tests:` line, the failing tests as jest names
    them (describe, then test), and per failure its matcher line, Expected/Received, source
    line and file:line:col (from each file's formatted `message`, else from the raw failure
    messages)."""
    result, start, end = _jest_object(text)
    if result is None:
        return None
    findings = Findings(summary=_jest_summary(result))
    for suite in result.get("testResults") or []:
        if not isinstance(suite, dict):
            continue
        path = str(suite.get("name") or "")
        failed = [a for a in suite.get("assertionResults") or [] if a.get("status") == "failed"]
        names = {_jest_name(a): a for a in failed}
        findings.failing += list(names)
        message = ANSI.sub("", str(suite.get("message") or ""))
        if not message.strip():  # no formatted message: the raw ones, as jest would print them
            message = "".join(
                f"  ● {name}\n\n" + "".join(f"    {x}\n" for x in "\n".join(
                    ANSI.sub("", str(m)) for m in a.get("failureMessages") or []
                ).splitlines()) + "\n"
                for name, a in names.items()
            )  # fmt: skip
        for block in parse_jest(message).errors:
            if block[0] == "Test suite failed to run":
                block[0] = f"{path}: {block[0]}"
            located = names.get(block[0], {}).get("location")
            if isinstance(located, dict) and not any(x.startswith("  at ") for x in block):
                block.insert(1, f"  at {path}:{located.get('line')}:{located.get('column')}")
            findings.errors.append(block)
    tests = sum(int(result.get(k) or 0) for k in ("numTotalTests", "numRuntimeErrorTestSuites"))
    if not tests:
        return None
    rest = text[:start] + text[end:]  # what jest printed besides the object
    console = rest if rest.strip() else None
    return Report("jest-json", findings, tests, console)


def _jest_object(text: str) -> tuple[dict | None, int, int]:
    """jest's result object in `text` and where it starts and ends: the whole text (a report
    file), or one line among what jest printed to stderr (merged in a captured output)."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in _JEST_START.finditer(text)]
    stripped = len(text) - len(text.lstrip())
    if text[stripped : stripped + 1] == "{":
        starts.insert(0, stripped)  # pretty-printed, say by a wrapper
    for start in starts:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("testResults"), list):
            return value, start, end
    return None, 0, 0


def _jest_summary(result: dict) -> str:
    """As jest prints it: `Tests: 2 failed, 1 skipped, 3 passed, 6 total`."""
    counts = [
        (result.get("numFailedTests"), "failed"),
        (result.get("numPendingTests"), "skipped"),
        (result.get("numTodoTests"), "todo"),
        (result.get("numPassedTests"), "passed"),
    ]
    parts = [f"{n} {label}" for n, label in counts if n]
    summary = "Tests: " + ", ".join([*parts, f"{result.get('numTotalTests') or 0} total"])
    broken = result.get("numRuntimeErrorTestSuites")
    return summary + (f"; {broken} suite(s) failed to run" if broken else "")


def _jest_name(assertion: dict) -> str:
    """A failure's name as jest prints it: the describe blocks' titles, then the test's."""
    titles = [*(assertion.get("ancestorTitles") or []), str(assertion.get("title"))]
    return JEST_SEPARATOR.join(titles)
