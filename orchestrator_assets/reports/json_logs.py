"""Structured logs: one JSON object per line with campaign, target and run, secrets redacted.

Switched on with `ORCHESTRATOR_LOG_FORMAT=json`:

- the CLI writes its progress as JSON lines to stderr instead of text (`orchestrator run`;
  stdout keeps the report, so `--output json` stays parseable);
- runs get the `json` Dagster logger (`json_console_logger`, also usable in run config:
  `loggers: {json: {config: {log_level: INFO}}}`);
- an instance sends every run's log through it from `dagster.yaml` (see deploy/dagster.yaml):
  `python_logs.dagster_handler_config.handlers.json.class` set to
  `orchestrator_assets.reports.json_logs.JsonLogHandler`.

A platform message that holds several targets' lines (they are batched into one event-log entry)
becomes one JSON line per line, each with the target its line names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import dagster as dg

from resources.redact import redact, secret_values

ENV_VAR = "ORCHESTRATOR_LOG_FORMAT"
# A platform line starts with the target's partition key: "acme__alpha: changed 1 file(s)" or
# "acme__alpha | test: output". Keys are slugs (spec/slugs.py), without ':' or ' '.
TARGET_PREFIX = re.compile(r"^(?P<target>[A-Za-z0-9][A-Za-z0-9_.-]*)(?::| \|) ")
JOB_SUFFIX = re.compile(r"_(targets|report)$")

_context: dict[str, str] = {}  # what the CLI knows: campaign and current run (one run at a time)
_context_lock = threading.Lock()


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ORCHESTRATOR_LOG_FORMAT asks for JSON logs."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "text").strip().lower()
    if value not in ("json", "text", ""):
        from orchestrator_assets.spec.errors import OrchestratorError

        raise OrchestratorError(f"{ENV_VAR}={value!r}: expected 'json' or 'text'")
    return value == "json"


def set_context(**fields: str | None) -> None:
    """Set (or, with None, clear) fields every CLI log line carries: campaign, run_id."""
    with _context_lock:
        for key, value in fields.items():
            if value is None:
                _context.pop(key, None)
            else:
                _context[key] = value


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """campaign, run_id, step and message of a record, from Dagster's metadata when it has it."""
    meta = getattr(record, "dagster_meta", None)
    with _context_lock:
        fields: dict[str, Any] = dict(_context)
    for key in ("campaign", "target", "run_id", "stage"):
        if getattr(record, key, None):
            fields[key] = getattr(record, key)
    if not meta:
        fields["message"] = record.getMessage()
        return fields
    tags = meta.get("job_tags") or {}
    job = meta.get("job_name") or ""
    fields["run_id"] = meta.get("run_id") or fields.get("run_id")
    fields["campaign"] = tags.get("campaign") or JOB_SUFFIX.sub("", job) or fields.get("campaign")
    if tags.get("target"):
        fields["target"] = tags["target"]
    if meta.get("step_key"):
        fields["step"] = meta["step_key"]
    event = meta.get("dagster_event")
    if event is not None:
        fields["event"] = event.event_type_value
    fields["message"] = meta.get("orig_message") or record.getMessage()
    return fields


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON lines: `ts`, `level`, `logger`, `campaign`, `target`, `run_id`,
    `message` (and `step`, `event`, `stage` when known); secrets in the environment are masked."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per line of the record's message."""
        fields = _record_fields(record)
        message = str(fields.pop("message", ""))
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        base = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "campaign": fields.pop("campaign", None),
            "target": fields.pop("target", None),
            "run_id": fields.pop("run_id", None),
            **fields,
        }
        secrets = secret_values()
        lines = []
        for line in message.splitlines() or [""]:
            entry = dict(base)
            match = TARGET_PREFIX.match(line)
            if match and entry["target"] is None:
                entry["target"] = match.group("target")
            entry["message"] = line
            lines.append(json.dumps(redact(entry, secrets), default=str))
        return "\n".join(lines)


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
