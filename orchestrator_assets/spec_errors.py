"""Turn YAML and pydantic errors into `Problem`s with a field path a user can find."""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from orchestrator_assets.errors import Problem


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


def yaml_problem(exc: yaml.YAMLError) -> Problem:
    """A YAML syntax error as a `Problem` that names line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(exc, "problem", None) or str(exc)
    return Problem(where, f"invalid YAML: {what}")
