#!/usr/bin/env python3
"""An OpenRewrite-style deterministic transformation: rename an identifier in Python files.

The entrypoint of campaign-example-rewrite:latest. It walks the current directory (the
workspace) and, in every `*.py` file, renames the identifier `--from` to `--to`: Python's own
tokenizer finds the names, so strings, comments and longer names that merely contain the word are
left alone, and everything else in the file (formatting, line endings) stays byte for byte. It
prints one line per changed file and a summary. Files that do not tokenize as UTF-8 Python are
skipped with a warning. Exit status: 0 whether or not anything changed, 1 when a file could not be
read or written, 2 on bad arguments. A campaign uses it as

    transformation:
      kind: deterministic
      image: campaign-example-rewrite:latest
      args: ["--from", "foo", "--to", "bar"]

Files are visited in sorted order, so the same input always gives the same output and log. Hidden
directories (.git, .venv, ...) and build or vendored folders are skipped. Python 3.11 tokenizes an
f-string as one string, so names inside its replacement fields are not renamed.
"""

from __future__ import annotations

import argparse
import io
import keyword
import os
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "site-packages", "venv"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rewrite",
        description="Rename a Python identifier in every *.py file under a directory.",
    )
    parser.add_argument("--from", dest="old", required=True, help="identifier to rename")
    parser.add_argument("--to", dest="new", required=True, help="its new name")
    parser.add_argument("--root", default=".", help="directory to walk (default: current)")
    parser.add_argument("--dry-run", action="store_true", help="report, do not write")
    args = parser.parse_args(argv)
    for flag, value in (("--from", args.old), ("--to", args.new)):
        if not value.isidentifier() or keyword.iskeyword(value):
            parser.error(f"{flag} must be a Python identifier (not a keyword), got {value!r}")
    return args


def python_files(root: Path) -> Iterator[Path]:
    """Every *.py file under root in a stable order, skipping hidden and build directories."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(".py") and path.is_file() and not path.is_symlink():
                yield path


def rename(source: str, old: str, new: str) -> tuple[str, int]:
    """The source with every NAME token `old` renamed to `new`, and how many were renamed.

    Raises tokenize.TokenError or SyntaxError when the source does not tokenize."""
    lines = io.StringIO(source).readlines()  # the rows tokenize counts ("\n"-terminated)
    hits = [
        tok.start
        for tok in tokenize.generate_tokens(iter(lines).__next__)
        if tok.type == tokenize.NAME and tok.string == old
    ]
    # Replace from the end so earlier columns on the same line stay valid.
    for row, col in reversed(hits):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[col + len(old) :]
    return "".join(lines), len(hits)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    changed = renamed = scanned = skipped = failed = 0
    for path in python_files(root):
        scanned += 1
        shown = path.relative_to(root)
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                source = handle.read()
            new_source, count = rename(source, args.old, args.new)
        except (UnicodeDecodeError, SyntaxError, tokenize.TokenError) as exc:
            print(f"skipped {shown} (not UTF-8 Python): {exc}", file=sys.stderr)
            skipped += 1
            continue
        except OSError as exc:
            print(f"cannot read {shown}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not count:
            continue
        if not args.dry_run:
            try:
                with path.open("w", encoding="utf-8", newline="") as handle:
                    handle.write(new_source)
            except OSError as exc:
                print(f"cannot write {shown}: {exc}", file=sys.stderr)
                failed += 1
                continue
        changed += 1
        renamed += count
        print(f"rewrote {shown}: {count} x {args.old} -> {args.new}")
    verb = "would change" if args.dry_run else "changed"
    problems = "".join(
        f", {n} {what}" for n, what in ((skipped, "skipped"), (failed, "failed")) if n
    )
    print(
        f"rewrite: {verb} {changed} of {scanned} Python files "
        f"({renamed} renames of {args.old} -> {args.new}){problems}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
