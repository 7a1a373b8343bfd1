"""Short, relevant failure text from a verifier's output, for an agent to act on.

A verifier's raw output is long and mostly noise for an agent fixing a change (progress dots,
plugin banners, framework stack frames). An extractor keeps what matters: the failing test
names, the first errors with file and line, the exit code and the runner's own summary, bounded
to `max_chars`. A pass is one line.

    extract(output, exit_code, kind="auto", argv=["python", "-m", "pytest"], name="test")

Extractors: `pytest`, `go` (go test and go build errors), `jest` (also what `npm test` prints
with jest), `maven` (surefire results and compiler errors), `generic` (exit code and the tail).
`auto` picks one from the command, else from the output, else `generic`. The parsers are in
`console_text.py`; a runner's machine-readable report, when there is one, is read instead
(`reports.py`). This module picks the source and renders the findings within `max_chars`.

This module uses only the standard library on purpose: the verifier MCP server and the stop
gate import it inside a sandbox, where the image's Python may have nothing else installed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

if __package__:
    from resources.agents.console_text import (
        ANSI,
        MAX_BLOCK_LINES,
        PARSERS,
        PYTEST_SUMMARY,
        Findings,
    )
else:  # run as a script inside a sandbox: the sibling file
    from console_text import ANSI, MAX_BLOCK_LINES, PARSERS, PYTEST_SUMMARY, Findings  # type: ignore[no-redef]

EXTRACTORS = ("auto", "pytest", "go", "jest", "maven", "generic")
DEFAULT_MAX_CHARS = 2000
MIN_MAX_CHARS = 200  # below this even the header and one error do not fit
MAX_FAILING = 20  # failing test names listed; the rest are counted
LINE_CHARS = 300  # characters kept per line
TAIL_LINES = 30  # lines of output a generic extract ends with


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
    if any(PYTEST_SUMMARY.match(line.strip()) for line in text.splitlines()[-5:]):
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


# pytest -----------------------------------------------------------------------------------------
