"""Structured logs: one JSON object per line with campaign, target and run, secrets redacted.

Switched on with `ORCHESTRATOR_LOG_FORMAT=json`:

- the CLI writes its progress as JSON lines to stderr instead of text (`orchestrator run`;
  stdout keeps the report, so `--output json` stays parseable);
- runs get the `json` Dagster logger (`json_console_logger`, also usable in run config:
  `loggers: {json: {config: {log_level: INFO}}}`);
- an instance sends every run's log through it from `dagster.yaml` (see deploy/dagster.yaml):
  `python_logs.dagster_handler_config.handlers.json.class` set to
  `orchestrator_assets.reports.json_logs.JsonLogHandler`.

The formatter is structlog's bridge for the standard library's records (`ProcessorFormatter`,
the one Dagster's own JSON logs use), so it serves Dagster's handlers and loggers as they are.

Where a line's target (and stage) comes from: the context bound where it was logged, never its
text when that context is known. The fan-out binds each target's key (`bind`, structlog's context
variables) in the worker thread that works on it; the target's log callable hands that context
along with each line to the step's thread, and `log_lines` logs a batch of several targets' lines
as one message (one event-log write) with one context per line, so each JSON line gets its own
target. A record may also carry `target` itself (`extra={"target": key}`), and a single-target
run's tags name it. Only a line none of these place falls back to its text's prefix
(`TARGET_PREFIX`): the CLI's progress lines, which it reads back from Dagster's event log (that
keeps a message's text, not the context it was logged with).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

import dagster as dg
import structlog
from structlog.contextvars import bound_contextvars, get_contextvars
from structlog.typing import EventDict

from resources.redact import redact, secret_values

ENV_VAR = "ORCHESTRATOR_LOG_FORMAT"
# The fallback for a line without bound context: it starts with the target's partition key,
# "acme__alpha: changed 1 file(s)" or "acme__alpha | test: output". Keys are slugs
# (spec/slugs.py), without ':' or ' '.
TARGET_PREFIX = re.compile(r"^(?P<target>[A-Za-z0-9][A-Za-z0-9_.-]*)(?::| \|) ")
JOB_SUFFIX = re.compile(r"_(targets|report)$")
# The bound fields a JSON line carries: only these, so whatever else a library binds with
# structlog in the same thread stays out of the platform's format.
BOUND_KEYS = ("target", "stage")
# The first keys of every JSON line, in this order; the record's other fields follow, then
# `message`.
LEADING_KEYS = ("ts", "level", "logger", "campaign", "target", "run_id")
_LINE_CONTEXT = "orchestrator_line_context"  # the attribute of a per-line record (format())

_context: dict[str, str] = {}  # what the CLI knows: campaign and current run (one run at a time)
_context_lock = threading.Lock()


@dataclass(frozen=True)
class BoundLines:
    """A message being logged by `log_lines` and the bound context of each of its lines (as
    `message.splitlines()` counts them)."""

    message: str
    contexts: tuple[Mapping[str, Any], ...]


# Set on the logging thread while `log_lines` logs: the handlers format the message on that
# same thread (Dagster dispatches a record to its handlers and loggers synchronously).
_bound_lines: ContextVar[BoundLines | None] = ContextVar("orchestrator_bound_lines", default=None)


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ORCHESTRATOR_LOG_FORMAT asks for JSON logs."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "text").strip().lower()
    if value not in ("json", "text", ""):
        from orchestrator_assets.spec.errors import OrchestratorError

        raise OrchestratorError(f"{ENV_VAR}={value!r}: expected 'json' or 'text'")
    return value == "json"


def set_context(**fields: str | None) -> None:
    """Set (or, with None, clear) fields every CLI log line carries: campaign, run_id.

    Process-wide rather than bound: the CLI's progress lines are written from the thread that
    watches the run's event log, which a context variable of the caller would not reach."""
    with _context_lock:
        for key, value in fields.items():
            if value is None:
                _context.pop(key, None)
            else:
                _context[key] = value


@contextlib.contextmanager
def bind(**fields: str) -> Iterator[None]:
    """Within, what this thread logs carries `fields` (`target`, `stage`) as bound context.

    A new thread starts without it: whoever starts one for a target binds there again."""
    with bound_contextvars(**fields):
        yield


def bound() -> dict[str, Any]:
    """The fields bound with `bind` in the current context (only `BOUND_KEYS`)."""
    context = get_contextvars()
    return {key: context[key] for key in BOUND_KEYS if context.get(key) is not None}


def log_lines(log: Callable[[str], None], items: Sequence[tuple[Mapping[str, Any], str]]) -> None:
    """Pass `items` (each a line's bound context and its text) to `log` as one message, secrets
    masked; the JSON formatter gives each line of that message its own context."""
    texts = [redact(text) for _, text in items]
    message = "\n".join(texts)
    contexts: list[Mapping[str, Any]] = []
    for i, ((context, _), text) in enumerate(zip(items, texts, strict=True)):
        # The lines an item adds to message.splitlines(): the "\n" that joins it to the next
        # item ends its last line (and an item that ends with a line break adds an empty one).
        joined = text if i == len(texts) - 1 else text + "\n"
        contexts += [context] * len(joined.splitlines())
    token = _bound_lines.set(BoundLines(message, tuple(contexts)))
    try:
        log(message)
    finally:
        _bound_lines.reset(token)


def _message(record: logging.LogRecord) -> str:
    """The record's own message, without the prefix Dagster puts before it."""
    meta = getattr(record, "dagster_meta", None)
    return (meta.get("orig_message") if meta else None) or record.getMessage()


def _line_contexts(record: logging.LogRecord, message: str) -> list[Mapping[str, Any]]:
    """The bound context of each line of `message`, where `log_lines` is logging it."""
    bound_lines = _bound_lines.get()
    if bound_lines is None or bound_lines.message != message:
        return []
    contexts = list(bound_lines.contexts)
    # A secret spanning two items, masked in the joined message, would shift the lines.
    return contexts if len(contexts) == len(message.splitlines()) else []


def _record_fields(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: ts, level, logger, campaign, run_id, step, event of the record (from
    Dagster's metadata when it has it, else from `set_context`), and its line as `message`."""
    record: logging.LogRecord = event["_record"]
    message = event.pop("event")  # structlog's key for the text; `event` is Dagster's here
    with _context_lock:
        event.update(_context)
    event["ts"] = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )
    event["level"] = record.levelname.lower()
    event["logger"] = record.name
    for key in ("campaign", "run_id"):
        if getattr(record, key, None):
            event[key] = getattr(record, key)
    meta = getattr(record, "dagster_meta", None)
    if meta:
        tags = meta.get("job_tags") or {}
        job = meta.get("job_name") or ""
        event["run_id"] = meta.get("run_id") or event.get("run_id")
        event["campaign"] = tags.get("campaign") or JOB_SUFFIX.sub("", job) or event.get("campaign")
        if tags.get("target"):  # a single-target run: every line is that target's
            event["target"] = tags["target"]
        if meta.get("step_key"):
            event["step"] = meta["step_key"]
        dagster_event = meta.get("dagster_event")
        if dagster_event is not None:
            event["event"] = dagster_event.event_type_value
    event["message"] = message
    return event


def _bound_fields(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: the target and stage bound where the line was logged, the most
    specific last: the thread's context, the record's own (`extra=`), the line's (`log_lines`)."""
    record: logging.LogRecord = event["_record"]
    event.update(bound())  # the thread that logs it, e.g. a worker through a Python logger
    for key in BOUND_KEYS:
        if getattr(record, key, None):
            event[key] = getattr(record, key)
    event.update(getattr(record, _LINE_CONTEXT, None) or {})
    return event


def _target_from_text(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor, the fallback: a line with no bound target names it at its start."""
    if event.get("target") is None:
        match = TARGET_PREFIX.match(str(event.get("message", "")))
        if match:
            event["target"] = match.group("target")
    return event


def _ordered(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: the platform's key order (LEADING_KEYS first, `message` last)."""
    message = event.pop("message", "")
    ordered = {key: event.pop(key, None) for key in LEADING_KEYS}
    return {**ordered, **event, "message": message}


def _masked(logger: Any, method: str, event: EventDict) -> EventDict:
    """structlog processor: every secret of the environment masked, in every field."""
    return redact(event, secret_values())


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """Formats a record as JSON lines: `ts`, `level`, `logger`, `campaign`, `target`, `run_id`,
    `message` (and `step`, `event`, `stage` when known); secrets in the environment are masked.

    Each line of the record's message is its own JSON object, with the target bound where it
    was logged (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=[_record_fields, _bound_fields, _target_from_text],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _ordered,
                _masked,
                structlog.processors.JSONRenderer(default=str),
            ],
        )

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per line of the record's message (a traceback's lines included)."""
        message = _message(record)
        contexts = _line_contexts(record, message)
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        lines = message.splitlines() or [""]
        contexts += [{}] * (len(lines) - len(contexts))
        rendered = []
        for line, context in zip(lines, contexts, strict=True):
            # A record per line: structlog renders one event per record; the line keeps the
            # record's fields (level, time, Dagster's metadata) and gets its own context.
            one = logging.makeLogRecord(record.__dict__)
            one.msg, one.args = line, ()
            one.exc_info, one.exc_text, one.stack_info = None, None, None
            setattr(one, _LINE_CONTEXT, context)
            rendered.append(super().format(one))
        return "\n".join(rendered)


class JsonLogHandler(logging.StreamHandler):
    """A stream handler (stdout by default) with the JSON formatter; usable from dagster.yaml's
    `python_logs.dagster_handler_config.handlers` and from `logging.config.dictConfig`."""

    def __init__(self, stream: TextIO | None = None, level: int | str = logging.NOTSET):
        super().__init__(stream or sys.stdout)
        self.setLevel(level)
        self.setFormatter(JsonFormatter())


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="JSON lines on stdout with campaign, target and run (json_logs.py)",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """The Dagster logger definition of the JSON log format."""
    level = str(init_context.logger_config["log_level"]).upper()
    logger = logging.Logger(f"orchestrator.run.{init_context.run_id or 'run'}", level=level)
    logger.addHandler(JsonLogHandler(level=level))
    return logger


LOGGERS = {"console": dg.colored_console_logger, "json": json_console_logger}


def cli_logger() -> logging.Logger:
    """The logger the CLI writes its progress to in JSON mode (stderr, one line per message)."""
    logger = logging.getLogger("orchestrator.cli")
    if not any(isinstance(h, JsonLogHandler) for h in logger.handlers):
        logger.addHandler(JsonLogHandler(sys.stderr))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def emit(stage: str, message: str) -> None:
    """The CLI's progress callback in JSON mode: `stage` and the line, with the context's
    campaign and run (the run's own Dagster log lines come from the `json` logger)."""
    level = logging.ERROR if "failed" in message.lower() else logging.INFO
    cli_logger().log(level, message, extra={"stage": stage})
