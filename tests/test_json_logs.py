"""JSON logs take a line's target from the context bound where it was logged (the fan-out binds
each target's key in its worker), not from the line's text; the text's prefix is only the
fallback for lines logged without context."""

from __future__ import annotations

import io
import json
import logging
import threading

import dagster as dg
import pytest

from orchestrator_assets.assets.fanout import fan_out
from orchestrator_assets.reports import json_logs
from orchestrator_assets.reports.json_logs import LOGGERS, JsonFormatter, JsonLogHandler


def json_logger() -> tuple[logging.Logger, io.StringIO]:
    """A standalone logger writing JSON lines to a buffer."""
    out = io.StringIO()
    logger = logging.Logger("orchestrator.test", logging.INFO)
    logger.addHandler(JsonLogHandler(out))
    return logger, out


def entries(text: str) -> list[dict]:
    """The JSON objects of the lines of `text` that are JSON."""
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def work_logging_without_key(key: str, log) -> str:
    """A target's stage that never names its target in its lines, from two threads."""
    with json_logs.bind(stage="change"):  # what the worker binds travels with its lines
        log("changed 1 file(s)")
    log(f"agent output line one\nline two of {key}'s output")
    # A command's output arrives from its reader thread, which has no bound context of its own.
    reader = threading.Thread(target=log, args=("test: 3 passed",))
    reader.start()
    reader.join()
    log("acme__other: a line whose text names another target")
    return key


def test_fan_out_lines_carry_their_target_from_bound_context():
    logger, out = json_logger()
    keys = ["acme__alpha", "acme__beta", "acme__gamma"]
    results = dict(fan_out(keys, work_logging_without_key, lambda k, e: "failed",
                           max_workers=3, log=logger.info))  # fmt: skip
    assert results == {k: k for k in keys}
    lines = entries(out.getvalue())
    for key in keys:
        mine = [e["message"] for e in lines if e["target"] == key]
        assert sorted(mine) == sorted([
            "changed 1 file(s)", "agent output line one", f"line two of {key}'s output",
            "test: 3 passed", "acme__other: a line whose text names another target",
        ])  # fmt: skip
    assert not [e for e in lines if e["target"] in (None, "acme__other")]
    changed = [e for e in lines if e["message"] == "changed 1 file(s)"]
    assert len(changed) == 3 and all(e["stage"] == "change" for e in changed)
    assert all("stage" not in e for e in lines if e["message"] == "test: 3 passed")


def test_fan_out_failure_lines_keep_their_target(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SECRET_TOKEN", "tok-0123456789")

    def work(key: str, log) -> str:
        log("pushing with tok-0123456789")
        raise RuntimeError("boom")

    logger, out = json_logger()
    list(fan_out(["acme__alpha"], work, lambda k, e: "failed", max_workers=1, log=logger.info))
    lines = entries(out.getvalue())
    assert "tok-0123456789" not in out.getvalue()
    assert lines[0]["message"] == "pushing with ***"
    # the traceback's lines too
    assert len(lines) > 3 and all(e["target"] == "acme__alpha" for e in lines)


def test_dagster_run_log_lines_carry_bound_targets(capsys: pytest.CaptureFixture):
    @dg.asset
    def thing(context) -> None:  # (no annotation: annotations are strings in this module)
        keys = ["acme__alpha", "acme__beta"]
        list(fan_out(keys, work_logging_without_key, lambda k, e: None, max_workers=2,
                     log=context.log.info))  # fmt: skip
        context.log.info("campaign rename: a platform line of no target")

    defs = dg.Definitions(assets=[thing], loggers=LOGGERS)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, tags={"campaign": "rename"},
            run_config={"loggers": {"json": {"config": {"log_level": "INFO"}}}},
        )  # fmt: skip
    lines = entries(capsys.readouterr().out)
    changed = [e for e in lines if e["message"] == "changed 1 file(s)"]
    assert sorted(e["target"] for e in changed) == ["acme__alpha", "acme__beta"]
    assert all(e["run_id"] == result.run_id and e["campaign"] == "rename" for e in changed)
    assert all(e["step"] == "thing" for e in changed)
    passed = [e for e in lines if e["message"] == "test: 3 passed"]
    assert sorted(e["target"] for e in passed) == ["acme__alpha", "acme__beta"]
    (platform,) = [e for e in lines if e["message"].startswith("campaign rename:")]
    assert platform["target"] is None


def test_instance_handler_from_dagster_yaml_gets_the_bound_target(capsys: pytest.CaptureFixture):
    @dg.asset
    def thing(context) -> None:
        list(fan_out(["acme__alpha"], work_logging_without_key, lambda k, e: None,
                     max_workers=1, log=context.log.info))  # fmt: skip

    handlers = {"json": {"class": "orchestrator_assets.reports.json_logs.JsonLogHandler"}}
    overrides = {"python_logs": {"dagster_handler_config": {"handlers": handlers}}}
    job = dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test(overrides=overrides) as instance:
        job.execute_in_process(instance=instance, tags={"campaign": "rename"})
    lines = entries(capsys.readouterr().out)
    (changed,) = [e for e in lines if e["message"] == "changed 1 file(s)"]
    assert changed["target"] == "acme__alpha" and changed["campaign"] == "rename"


def test_a_record_logged_where_a_target_is_bound_carries_it():
    logger, out = json_logger()
    with json_logs.bind(target="acme__alpha", stage="verification"):
        logger.info("3 passed")
    logger.info("acme__beta | test: no context, so its prefix names it")
    logger.info("nothing bound, no prefix")
    logger.info("given as a field", extra={"target": "acme__gamma"})
    first, second, third, fourth = entries(out.getvalue())
    assert (first["target"], first["stage"]) == ("acme__alpha", "verification")
    assert second["target"] == "acme__beta"
    assert third["target"] is None and "stage" not in third
    assert fourth["target"] == "acme__gamma"


def test_bound_lines_apply_only_to_their_own_message():
    logger, out = json_logger()
    seen: list[str] = []

    def log(message: str) -> None:
        seen.append(message)
        logger.info("another message logged meanwhile")
        logger.info(message)

    alpha, beta = {"target": "acme__alpha"}, {"target": "acme__beta"}
    # an item of several lines, one that ends with a line break, and one that is empty
    json_logs.log_lines(log, [(alpha, "one\r\ntwo\n"), (beta, "three"), (alpha, ""), (beta, "")])
    assert seen == ["one\r\ntwo\n\nthree\n\n"]
    other, *lines = entries(out.getvalue())
    assert other["target"] is None
    assert [(e["message"], e["target"]) for e in lines] == [
        ("one", "acme__alpha"),
        ("two", "acme__alpha"),
        ("", "acme__alpha"),
        ("three", "acme__beta"),
        ("", "acme__alpha"),
    ]  # fmt: skip  (the last, empty item adds no line: "x\n".splitlines() == ["x"])


def test_json_line_format_is_kept():
    record = logging.LogRecord("orchestrator.x", logging.WARNING, __file__, 1, "hello %s",
                               ("world",), None)  # fmt: skip
    with json_logs.bind(target="acme__alpha"):
        (line,) = JsonFormatter().format(record).splitlines()
    entry = json.loads(line)
    assert list(entry)[:6] == ["ts", "level", "logger", "campaign", "target", "run_id"]
    assert list(entry)[-1] == "message"
    assert entry["ts"].endswith("Z") and entry["level"] == "warning"
    assert (entry["logger"], entry["target"], entry["message"]) == (
        "orchestrator.x", "acme__alpha", "hello world",
    )  # fmt: skip
