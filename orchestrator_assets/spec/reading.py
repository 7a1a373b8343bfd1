"""Read YAML files strictly, and turn YAML and pydantic errors into `Problem`s with a field path
a user can find.

Campaign and profiles files are read by `read_yaml_file` alone: PyYAML on its own lets a later
duplicate key silently win, reports a file that is not UTF-8 as a bare `UnicodeDecodeError` and
one nested too deep as a `RecursionError`, none of them naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator_assets.spec.errors import Problem, SpecError

# Real campaign and profiles files nest fewer than ten levels. A bound well below Python's
# recursion limit (PyYAML's composer recurses once per level) makes "too deep" an answer that
# names the place, whatever the stack depth of the caller.
MAX_DEPTH = 100
MERGE_TAG = "tag:yaml.org,2002:merge"


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """One `Problem` per pydantic error, its location as a dotted path (`targets.2.repo`)."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # Discriminated unions add the tag to the path (`transformation.deterministic.command`);
        # keep it: it tells which kind was assumed.
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (not allowed here)"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(Problem(".".join(loc), message))
    return problems


def yaml_problem(exc: yaml.YAMLError, text: str | None = None) -> Problem:
    """A YAML error as a one-line `Problem` that names line and column (or line and character
    offset, for a character YAML does not allow; `text` is what was parsed)."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1 if text is not None else None
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem(
            f"line {line}" if line else "",
            f"invalid YAML: character #x{char:04x} at character offset {exc.position} is not "
            "allowed",
        )
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem(where, f"invalid YAML: {what}")


class _TooDeep(yaml.MarkedYAMLError):
    """Nesting deeper than `MAX_DEPTH`, found at `problem_mark`."""


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses nesting deeper than `MAX_DEPTH` while composing.

    Duplicate keys are found on the composed node tree (`duplicate_keys`), where each one's
    field path is known; `read_yaml_file` and `load_yaml_text` do both.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, counting how deep it is."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(problem="too deep", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def duplicate_keys(node: Node, path: str = "") -> list[Problem]:
    """Every key given twice in one mapping of the tree under `node`, named by its field path
    (`targets.1.base`) and both lines. A YAML merge (`<<: *defaults`) may be overridden."""
    problems: list[Problem] = []
    seen: set[int] = set()  # an alias shares its node: look at each once (and stop on cycles)

    def walk(node: Node, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}.{i}" if path else str(i))
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else None
                here = f"{path}.{name}" if path else str(name)
                if name is not None and key.tag != MERGE_TAG:
                    line = key.start_mark.line + 1
                    if (key.tag, name) in first:
                        problems.append(
                            Problem(
                                here,
                                f"duplicate key {name!r} at line {line} "
                                f"(first at line {first[key.tag, name]})",
                            )
                        )
                    else:
                        first[key.tag, name] = line
                walk(value, here)

    walk(node, path)
    return problems


def load_yaml_text(text: str, file: str, what: str = "a campaign file") -> Any:
    """Parse YAML text strictly (see `StrictLoader`); raise `SpecError` naming `file` (a path,
    or the variable the text came from) and where the text is wrong. `what` names the kind of
    file in messages."""
    try:
        loader = StrictLoader(text)  # the reader refuses control characters here already
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            problems = duplicate_keys(node)
            if problems:
                raise SpecError(file, problems)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _TooDeep as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = Problem(
            where, f"nested more than {MAX_DEPTH} levels deep ({what} needs far fewer)"
        )
        raise SpecError(file, [problem]) from None
    except yaml.YAMLError as exc:
        raise SpecError(file, [yaml_problem(exc, text)]) from None
    except RecursionError:  # the depth bound should stop this first; never show a bare one
        problem = Problem(
            "", f"nested too deep to read ({what} nests fewer than {MAX_DEPTH} levels)"
        )
        raise SpecError(file, [problem]) from None


def read_yaml_file(path: Path, what: str = "a campaign file") -> Any:
    """Read one YAML file that must be UTF-8; raise `SpecError` naming the file and, for a byte
    that is not UTF-8, its byte offset and line."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(file, [Problem("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problem = Problem(
            f"line {line}",
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} cannot be "
            f"decoded ({what} must be UTF-8)",
        )
        raise SpecError(file, [problem]) from None
    return load_yaml_text(text, file, what)
