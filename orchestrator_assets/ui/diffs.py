"""A unified diff as files, hunks and lines, highlighted by Pygments, for the unified and the
side-by-side view."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
CSS_CLASS = "hl"
MAX_HIGHLIGHTED_LINES = 5000  # beyond this a file is shown plain: highlighting costs time

LineKind = Literal["context", "add", "del"]


@dataclass
class DiffLine:
    """One line of a hunk with its numbers on the old and the new side and its highlighted HTML."""

    kind: LineKind
    old: int | None
    new: int | None
    text: str
    html: Markup = field(default_factory=Markup)

    @property
    def number(self) -> int:
        """The line a comment on it refers to: the new side's, or the old side's for a removal."""
        return self.new if self.new is not None else (self.old or 0)


@dataclass
class Hunk:
    """A hunk: its header and lines."""

    header: str
    lines: list[DiffLine] = field(default_factory=list)

    def rows(self) -> list[tuple[DiffLine | None, DiffLine | None]]:
        """The hunk side by side: context on both sides, removals beside the additions that
        replace them."""
        rows: list[tuple[DiffLine | None, DiffLine | None]] = []
        removed: list[DiffLine] = []
        added: list[DiffLine] = []

        def flush() -> None:
            for i in range(max(len(removed), len(added))):
                rows.append(
                    (removed[i] if i < len(removed) else None, added[i] if i < len(added) else None)
                )
            removed.clear()
            added.clear()

        for line in self.lines:
            if line.kind == "del":
                if added:  # a removal after additions starts a new block
                    flush()
                removed.append(line)
            elif line.kind == "add":
                added.append(line)
            else:
                flush()
                rows.append((line, line))
        flush()
        return rows


@dataclass
class FileDiff:
    """One file's part of a diff."""

    path: str
    old_path: str | None = None
    status: str = "modified"  # added, deleted, renamed, modified, binary
    hunks: list[Hunk] = field(default_factory=list)
    added: int = 0
    removed: int = 0

    @property
    def anchor(self) -> str:
        """An HTML id for the file."""
        return "file-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)


def parse_diff(text: str) -> list[FileDiff]:
    """The files of a `git diff` (unified, with `diff --git` headers)."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    old = new = 0
    for raw in text.splitlines():
        if raw.startswith("diff --git "):
            parts = raw[len("diff --git ") :].split(" b/", 1)
            path = parts[-1] if len(parts) == 2 else raw.rsplit(" ", 1)[-1]
            current = FileDiff(path=path, old_path=parts[0].removeprefix("a/"))
            files.append(current)
            hunk = None
            continue
        if current is None:
            continue
        match = HUNK.match(raw)
        if match:
            old, new = int(match.group(1)), int(match.group(2))
            hunk = Hunk(header=raw)
            current.hunks.append(hunk)
        elif hunk is None:
            if raw.startswith("new file"):
                current.status = "added"
            elif raw.startswith("deleted file"):
                current.status = "deleted"
            elif raw.startswith("rename from"):
                current.status = "renamed"
            elif raw.startswith("Binary files"):
                current.status = "binary"
        elif raw.startswith("+"):
            hunk.lines.append(DiffLine("add", None, new, raw[1:]))
            new += 1
            current.added += 1
        elif raw.startswith("-"):
            hunk.lines.append(DiffLine("del", old, None, raw[1:]))
            old += 1
            current.removed += 1
        elif raw.startswith("\\"):  # "\ No newline at end of file"
            continue
        else:
            hunk.lines.append(DiffLine("context", old, new, raw[1:]))
            old += 1
            new += 1
    for diff in files:
        _highlight(diff)
    return files


@lru_cache(maxsize=256)
def _lexer(path: str) -> Lexer:
    try:
        return get_lexer_for_filename(path, stripnl=False, stripall=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def _highlight(diff: FileDiff) -> None:
    """Give every line its HTML: each side of a hunk is highlighted as one text, so a token
    spanning lines (a docstring) is coloured right."""
    count = sum(len(h.lines) for h in diff.hunks)
    for hunk in diff.hunks:
        if count > MAX_HIGHLIGHTED_LINES:
            for line in hunk.lines:
                line.html = escape(line.text)
            continue
        for side in (("context", "del"), ("context", "add")):
            lines = [line for line in hunk.lines if line.kind in side]
            if not lines:
                continue
            html = highlight(
                "\n".join(line.text for line in lines) + "\n",
                _lexer(diff.path),
                HtmlFormatter(nowrap=True, cssclass=CSS_CLASS),
            )
            for line, part in zip(lines, html.split("\n"), strict=False):
                # Context lines are highlighted on both sides; either result is the same.
                line.html = Markup(part)


def pygments_css() -> str:
    """The CSS for the highlighted lines."""
    return HtmlFormatter(cssclass=CSS_CLASS, style="default").get_style_defs(f".{CSS_CLASS}")
