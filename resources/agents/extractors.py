"""Short, relevant failure text from a verifier's output, for an agent to act on.

A verifier's raw output is long and mostly noise for an agent fixing a change (progress dots,
plugin banners, framework stack frames). An extractor keeps what matters: the failing test
names, the first errors with file and line, the exit code and the runner's own summary, bounded
to `max_chars`. A pass is one line.

    extract(output, exit_code, kind="auto", argv=["python", "-m", "pytest"], name="test")

Extractors: `pytest`, `go` (go test and go build errors), `jest` (also what `npm test` prints
with jest), `maven` (surefire results and compiler errors), `generic` (exit code and the tail).
`auto` picks one from the command, else from the output, else `generic`.

This module uses only the standard library on purpose: the verifier MCP server and the stop
gate import it inside a sandbox, where the image's Python may have nothing else installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

EXTRACTORS = ("auto", "pytest", "go", "jest", "maven", "generic")
DEFAULT_MAX_CHARS = 2000
MIN_MAX_CHARS = 200  # below this even the header and one error do not fit
MAX_FAILING = 20  # failing test names listed; the rest are counted
MAX_BLOCK_LINES = 8  # lines kept per failure block
LINE_CHARS = 300  # characters kept per line
TAIL_LINES = 30  # lines of output a generic extract ends with

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


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


def detect(argv: Sequence[str], output: str = "") -> str:
    """The extractor for a command (argv), else for what its output looks like; `generic`
    when neither says."""
    words = [w.rsplit("/", 1)[-1].lower() for w in argv]
    joined = " ".join(words)
    if any(w in ("pytest", "py.test") for w in words) or re.search(r"-m pytest\b", joined):
        return "pytest"
    if words[:2] == ["go", "test"] or re.search(r"\bgo test\b", joined):
        return "go"
    if any(w in ("jest", "react-scripts") for w in words) or re.search(
        r"\b(npm|yarn|pnpm)( run)? test\b", joined
    ):
        return "jest"
    if any(w in ("mvn", "mvnw", "mvn.cmd") for w in words):
        return "maven"
    return _sniff(output) if output else "generic"


def _sniff(output: str) -> str:
    """Recognise a runner by its output (a verifier such as `make test` hides the command)."""
    text = output[-200_000:]
    if "short test summary info" in text or re.search(r"^=+ (FAILURES|ERRORS) =+$", text, re.M):
        return "pytest"
    if re.search(r"^\s*--- FAIL: ", text, re.M) or re.search(r"^(ok  |FAIL)\t\S+", text, re.M):
        return "go"
    if re.search(r"^Tests:\s+\d+", text, re.M) and ("●" in text or "PASS " in text):
        return "jest"
    if "[INFO] BUILD" in text or re.search(r"^\[ERROR\] Tests run:", text, re.M):
        return "maven"
    if any(_PYTEST_SUMMARY.match(line.strip()) for line in text.splitlines()[-5:]):
        return "pytest"
    return "generic"


def extract(
    output: str,
    exit_code: int,
    *,
    kind: str = "auto",
    argv: Sequence[str] = (),
    name: str = "verifier",
    max_chars: int = DEFAULT_MAX_CHARS,
    timed_out: bool = False,
    duration_s: float | None = None,
    cwd: str | None = None,
    report: str | None = None,
) -> str:
    """The verifier's result for an agent: one line for a pass; for a failure the exit code,
    the runner's summary, the failing tests and the first errors with file and line, at most
    `max_chars` characters. `cwd` (the workspace as the command saw it) is cut from paths.

    `report` is the text of a report file the verifier wrote (JUnit XML, `jest --json`,
    `go test -json`; see `reports.read_report`): its findings are used when it parses and
    counted tests. Without one, a `go test -json` or `jest --json` report printed into
    `output` is used (for `auto`, `go` and `jest`); else the console text is read."""
    if kind not in EXTRACTORS:
        raise ValueError(f"unknown extractor {kind!r} (known: {', '.join(EXTRACTORS)})")
    max_chars = max(MIN_MAX_CHARS, max_chars)
    text = clean(output, cwd)
    found = _structured(text, clean(report, cwd) if report is not None else None, kind)
    if found is not None:
        chosen, findings, text = found.kind, found.findings, found.console or text
    else:
        chosen = detect(argv, text) if kind == "auto" else kind
        findings = PARSERS[chosen](text)
    took = f" in {duration_s:.1f}s" if duration_s is not None else ""
    if exit_code == 0 and not timed_out:
        return _cut(f"PASS {name} ({chosen}){took}: {findings.summary or 'exit code 0'}", max_chars)
    how = "timed out" if timed_out else f"exit code {exit_code}"
    header = f"FAIL {name} ({chosen}, {how}){took}"
    if findings.summary:
        header += f": {findings.summary}"
    return _render(header, findings, text, max_chars)


def clean(output: str, cwd: str | None = None) -> str:
    """A runner's output as an agent should read it: no terminal colours, `\n` line ends, and
    paths relative to `cwd` (the workspace as the command saw it)."""
    text = ANSI.sub("", output).replace("\r\n", "\n")
    return text.replace(cwd.rstrip("/") + "/", "") if cwd else text


def _structured(text: str, report: str | None, kind: str) -> Any:
    """A `reports.Report` from the declared report, else from the output; None: use the
    console text. (Imported here: `reports` builds on this module.)"""
    if __package__:
        from resources.agents import reports
    else:  # run as a script inside a sandbox: the sibling file
        import reports  # type: ignore[no-redef]

    found = reports.parse_report(report) if report is not None else None
    return found or reports.find_report(text, kind)


def combine(texts: Sequence[str], max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Several verifiers' extracts as one text of at most `max_chars`: each failure gets an
    equal share of what the passes leave (a pass stays one line)."""
    passes = [t for t in texts if t.startswith("PASS ")]
    failures = [t for t in texts if not t.startswith("PASS ")]
    head = "\n".join(_cut(p, 200) for p in passes)
    room = max_chars - len(head) - (2 if head else 0)
    share = max(MIN_MAX_CHARS, room // max(1, len(failures)) - 2) if failures else 0
    parts = [_cut(f, share) for f in failures] + ([head] if head else [])
    return _cut("\n\n".join(parts), max_chars)


# rendering --------------------------------------------------------------------------------------


def _render(header: str, findings: Findings, text: str, max_chars: int) -> str:
    out = [_cut(header, LINE_CHARS * 2)]
    if findings.failing:
        # The names get at most about half of the room: the first errors say why they fail.
        room = max_chars // 2 if findings.errors else max_chars - 60
        out.append("failing:")
        used = sum(len(line) + 1 for line in out)
        shown = 0
        for name in findings.failing[:MAX_FAILING]:
            line = f"- {_cut(name, LINE_CHARS)}"
            if shown and used + len(line) + 1 > room:
                break
            out.append(line)
            used += len(line) + 1
            shown += 1
        if len(findings.failing) > shown:
            out.append(f"- … and {len(findings.failing) - shown} more")
    if findings.errors:
        out.append("first errors:")
        used = sum(len(line) + 1 for line in out)
        for block in findings.errors:
            lines = [_cut(line, LINE_CHARS) for line in block[:MAX_BLOCK_LINES]]
            size = sum(len(line) + 1 for line in lines)
            if used + size > max_chars - 40:  # keep room for the "more" line
                out.append(f"(… {len(findings.errors) - findings.errors.index(block)} more)")
                break
            out += lines
            used += size
    if findings.empty:
        out.append("output (tail):")
        room = max_chars - sum(len(line) + 1 for line in out) - 1
        out.append(_tail(text, room))
    return _cut("\n".join(out), max_chars)


def _tail(text: str, room: int) -> str:
    """The last lines of `text` that fit in `room` characters."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines() if line.strip()]
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-TAIL_LINES:]):
        line = _cut(line, LINE_CHARS)
        if size + len(line) + 1 > room:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept)) if kept else "(no output)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# pytest -----------------------------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(
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
        match = _PYTEST_SUMMARY.match(line.strip())
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
    counts = [f"{len(failed_packages)} package(s) failed"] if failed_packages else []
    counts += [f"{unbuilt} did not build"] if unbuilt else []
    if counts:
        counts.append(f"{ok_packages} ok")
    elif ok_packages:
        counts.append(f"{ok_packages} package(s) ok")
    findings.summary = ", ".join(counts) or None
    return findings


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
