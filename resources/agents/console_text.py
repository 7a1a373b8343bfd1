"""Findings from a test runner's console text: one parser per runner (pytest, go test, jest,
maven), and a generic one for anything else.

Standard library only, like `extractors.py` which renders what these find: the verifier MCP
server imports both inside a sandbox whose Python may have nothing else installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MAX_BLOCK_LINES = 8  # lines kept per failure block


@dataclass
class Findings:
    """What an extractor found in one output: the runner's summary line, the failing tests,
    and failure blocks (a location or test with its first error lines)."""

    summary: str | None = None
    failing: list[str] = field(default_factory=list)
    errors: list[list[str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when nothing specific was found (the generic tail is used instead)."""
        return not (self.failing or self.errors)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)"
    r"(?:, )?)+ in [\d.]+s(?: \([^)]*\))?|no tests ran in [\d.]+s)\s*=*$"
)
_PYTEST_SECTION = re.compile(r"^=+ (FAILURES|ERRORS|short test summary info|warnings summary)")
_PYTEST_BLOCK = re.compile(r"^_{3,} (.+?) _{3,}$")
_PYTEST_LOCATION = re.compile(r"^([^\s:][^:]*\.py):(\d+): ?(.*)$")
_NOISE_PATH = ("/site-packages/", "/lib/python", "/importlib/", "<frozen")


def parse_pytest(text: str) -> Findings:
    """pytest: the final counts, the `FAILED`/`ERROR` node ids of the short summary, and per
    failure block its `E` lines and file:line locations (framework frames left out)."""
    findings = Findings()
    section = None
    block: list[str] | None = None
    for line in text.splitlines():
        match = PYTEST_SUMMARY.match(line.strip())
        if match:
            findings.summary = match.group(1)
            continue
        heading = _PYTEST_SECTION.match(line)
        if heading:
            section = heading.group(1)
            block = None
            continue
        if section == "short test summary info":
            if line.startswith(("FAILED ", "ERROR ")):
                findings.failing.append(line.removeprefix("FAILED "))
            continue
        if section not in ("FAILURES", "ERRORS"):
            continue
        title = _PYTEST_BLOCK.match(line)
        if title and not set(title.group(1)) <= {"_", " "}:
            block = [title.group(1)]
            findings.errors.append(block)
            continue
        if block is not None and keep_pytest_line(line, block):
            block.append("  " + line.rstrip())
    if not findings.failing:  # no short summary (-rN): the block titles name the tests
        findings.failing = [b[0] for b in findings.errors]
    findings.errors = [b for b in findings.errors if len(b) > 1]
    return findings


def keep_pytest_line(line: str, block: Sequence[str]) -> bool:
    """Whether a line of a pytest failure belongs in its block: a file:line location outside
    the framework, or one of its first `E` lines (`block`: the lines kept so far)."""
    location = _PYTEST_LOCATION.match(line)
    framework = location is not None and any(n in location.group(1) for n in _NOISE_PATH)
    first_errors = line.startswith("E ") and sum(x.startswith("  E") for x in block) < 4
    return bool(location and not framework) or first_errors


# go test ----------------------------------------------------------------------------------------

_GO_FAIL = re.compile(r"^\s*--- FAIL: (\S+)")
_GO_MESSAGE = re.compile(r"^\s+(\S+\.go:\d+: .*)$")
_GO_BUILD = re.compile(r"^(\S+\.go:\d+:\d+: .*)$")
_GO_PACKAGE = re.compile(r"^(FAIL|ok)\s+(\S+)\s*(.*)$")


def parse_go(text: str) -> Findings:
    """go test: `--- FAIL` test names, their file.go:line messages, build errors under their
    `# package` line, panics, and how many packages failed."""
    findings = Findings()
    failed_packages: list[str] = []
    unbuilt = 0
    ok_packages = 0
    current: list[str] | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        fail = _GO_FAIL.match(line)
        if fail:
            findings.failing.append(fail.group(1))
            current = [fail.group(1)]
            findings.errors.append(current)
            continue
        message = _GO_MESSAGE.match(line)
        if message and current is not None:
            current.append("  " + message.group(1).strip())
            continue
        if line.startswith("# "):  # a package that did not build
            current = [line[2:].strip() + " (build failed)"]
            findings.errors.append(current)
            unbuilt += 1
            continue
        build = _GO_BUILD.match(line)
        if build:
            if current is None:
                current = ["build errors"]
                findings.errors.append(current)
            current.append("  " + build.group(1))
            continue
        if line.startswith("panic: "):
            where = next((x.strip() for x in lines[i + 1 : i + 40] if ".go:" in x), "")
            findings.errors.append([line.strip(), *(["  " + where] if where else [])])
            current = None
            continue
        package = _GO_PACKAGE.match(line)
        if package:
            current = None
            if package.group(1) == "FAIL":
                failed_packages.append(f"{package.group(2)} {package.group(3)}".strip())
            else:
                ok_packages += 1
    # a parent test's "--- FAIL" repeats what its subtests say: keep the subtests' blocks
    findings.errors = [b for b in findings.errors if len(b) > 1]
    findings.summary = go_summary(len(failed_packages), unbuilt, ok_packages)
    return findings


def go_summary(failed: int, unbuilt: int, ok: int) -> str | None:
    """The summary line of a `go test` run from its package counts (None: nothing counted)."""
    counts = [f"{failed} package(s) failed"] if failed else []
    counts += [f"{unbuilt} did not build"] if unbuilt else []
    if counts:
        counts.append(f"{ok} ok")
    elif ok:
        counts.append(f"{ok} package(s) ok")
    return ", ".join(counts) or None


# jest -------------------------------------------------------------------------------------------

_JEST_TEST = re.compile(r"^\s*● (.+)$")
_JEST_STACK = re.compile(r"^\s*at .*?\(?([^\s()]+):(\d+):(\d+)\)?$")
_JEST_SUMMARY = re.compile(r"^Tests:\s+(.+)$")
_JEST_FRAME = re.compile(r"^\s*(>?)\s*\d+ \|")
# Lines of a failure that say what differs; the first line (the matcher) is always kept.
_JEST_KEEP = re.compile(r"^(expect|Expected|Received|[-+] |\w*Error\b|Error:|Cannot |thrown)")
_JEST_DIFF_HEADER = re.compile(r"^[-+] (Expected|Received)\s+[-+] \d+$")


def parse_jest(text: str) -> Findings:
    """jest: the `●` failing tests, per test its matcher line, Expected/Received or diff lines,
    the failing source line and the first file:line:col of the stack outside node_modules."""
    findings = Findings()
    blocks: list[dict] = []
    block: dict | None = None
    for line in text.splitlines():
        summary = _JEST_SUMMARY.match(line)
        if summary:
            findings.summary = "Tests: " + " ".join(summary.group(1).split())
            block = None
            continue
        test = _JEST_TEST.match(line)
        if test:
            name = test.group(1).strip()
            if name.startswith("Console"):
                block = None
                continue
            if name != "Test suite failed to run":
                findings.failing.append(name)
            block = {"name": name, "detail": [], "source": None, "at": None}
            blocks.append(block)
            continue
        if block is None or not line.strip():
            continue
        stack = _JEST_STACK.match(line)
        if stack:
            if block["at"] is None and "node_modules" not in stack.group(1):
                block["at"] = f"  at {stack.group(1)}:{stack.group(2)}:{stack.group(3)}"
            continue
        frame = _JEST_FRAME.match(line)
        if frame:
            if frame.group(1):  # the failing source line, marked with '>'
                block["source"] = "  " + line.strip()
            continue
        if line.strip().startswith("|"):  # the caret under the failing line
            continue
        detail = line.strip()
        wanted = not block["detail"] or (
            _JEST_KEEP.match(detail) and not _JEST_DIFF_HEADER.match(detail)
        )
        if wanted and len(block["detail"]) < MAX_BLOCK_LINES - 3:
            block["detail"].append("  " + detail)
    # the location and the failing line matter most: they come right after the test's name
    findings.errors = [
        [b["name"], *[x for x in (b["at"], b["source"]) if x], *b["detail"]] for b in blocks
    ]
    return findings


# maven ------------------------------------------------------------------------------------------

_MVN_TESTS = re.compile(r"^\[(?:ERROR|WARNING|INFO)\] (Tests run: \d+, Failures: \d+, Errors: \d+, "
                        r"Skipped: \d+)\s*$")  # fmt: skip
_MVN_RESULT = re.compile(r"^\[ERROR\]   (\S+?:\d+ .*|\S+\.\S+ .*)$")
_MVN_CASE = re.compile(r"^\[ERROR\] (\S+)\s+(?:--\s+)?Time elapsed: .*<<< (FAILURE|ERROR)!")
_MVN_COMPILE = re.compile(r"^\[ERROR\] (\S+\.(?:java|kt|scala|groovy)):\[(\d+),(\d+)\] (.*)$")
_MVN_GOAL = re.compile(r"^\[ERROR\] Failed to execute goal (\S+) .*?: (.*)$")


def parse_maven(text: str) -> Findings:
    """maven: surefire's `Tests run` counts and its Failures/Errors list (Class.method:line
    message), or the compiler's `[ERROR] File.java:[line,col]` errors with their detail lines,
    else the failed goal."""
    findings = Findings()
    results: list[str] = []
    cases: list[list[str]] = []
    compile_errors: dict[str, list[str]] = {}
    goal: str | None = None
    build_failure = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        tests = _MVN_TESTS.match(line)
        if tests:
            findings.summary = tests.group(1)
            continue
        if line.startswith("[INFO] BUILD FAILURE"):
            build_failure = True
            continue
        result = _MVN_RESULT.match(line)
        if result and not line.startswith("[ERROR]   symbol") and "location:" not in line:
            results.append(result.group(1))
            continue
        case = _MVN_CASE.match(line)
        if case:
            detail = lines[i + 1].strip() if i + 1 < len(lines) else ""
            block = [f"{case.group(1)} ({case.group(2).lower()})", "  " + detail]
            frame = next(
                (x.strip() for x in lines[i + 2 : i + 60] if x.strip().startswith("at ")
                 and _short_class(case.group(1)) in x),
                None,
            )  # fmt: skip
            if frame:
                block.append("  " + frame)
            cases.append(block)
            continue
        compiled = _MVN_COMPILE.match(line)
        if compiled:
            path, row, col, message = compiled.groups()
            key = f"{path}:{row}:{col}: {message}"
            if key not in compile_errors:
                detail = [
                    "  " + x.replace("[ERROR]", "").strip()
                    for x in lines[i + 1 : i + 3]
                    if re.match(r"^(\[ERROR\])?\s+(symbol|location|required|found|reason):", x)
                ]
                compile_errors[key] = [key, *detail]
            continue
        goal_match = _MVN_GOAL.match(line)
        if goal_match and goal is None:
            goal = f"{goal_match.group(1)}: {goal_match.group(2)}"
    findings.failing = _dedupe(results) or [c[0] for c in cases]
    findings.errors = list(compile_errors.values()) + cases
    if compile_errors:
        findings.summary = f"compilation failed ({len(compile_errors)} error(s))"
        findings.failing = []
    elif findings.summary is None and build_failure:
        findings.summary = "BUILD FAILURE"
    if findings.empty and goal:
        findings.errors = [[goal]]
    return findings


def _short_class(test_id: str) -> str:
    """`com.acme.CalcTest.addsTwoNumbers` -> `CalcTest.addsTwoNumbers`."""
    parts = test_id.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 else test_id


# generic ----------------------------------------------------------------------------------------


def parse_generic(text: str) -> Findings:
    """Nothing specific: the exit code and the tail of the output say it."""
    return Findings()


PARSERS: dict[str, Callable[[str], Findings]] = {
    "pytest": parse_pytest,
    "go": parse_go,
    "jest": parse_jest,
    "maven": parse_maven,
    "generic": parse_generic,
}
