"""Many targets in one step: each target's failure is its own, and cancellation stops the rest."""

from __future__ import annotations

import threading

from orchestrator_assets.fanout import fan_out


def test_one_target_raising_does_not_stop_the_others():
    def work(key: str, log):
        log(f"{key}: working")
        if key == "b":
            raise RuntimeError("boom")
        return f"ok {key}"

    lines: list[str] = []
    results = dict(
        fan_out(["a", "b", "c"], work, lambda k, exc: f"failed {k}: {exc}", max_workers=2,
                log=lines.append)
    )  # fmt: skip
    assert results == {"a": "ok a", "b": "failed b: boom", "c": "ok c"}
    logged = "\n".join(lines).splitlines()  # lines arrive batched, several per log message
    assert {"a: working", "c: working"} <= set(logged)
    assert any(line.startswith("b: unexpected error: boom") for line in logged)


def test_interrupting_the_step_cancels_running_work_and_starts_no_more():
    release = threading.Event()
    started: list[str] = []
    cancelled = threading.Event()

    def work(key: str, log):
        started.append(key)
        if key != "a":
            release.wait(10)  # a long sandbox command
        return key

    def cancel():  # what the asset passes: kill the sandboxes' commands
        cancelled.set()
        release.set()

    results = fan_out(["a", "b", "c", "d"], work, lambda k, e: None, max_workers=1,
                      log=lambda _: None, cancel=cancel)  # fmt: skip
    assert next(results) == ("a", "a")
    results.close()  # the run is cancelled: Dagster interrupts the step at this point
    assert cancelled.is_set()
    assert "c" not in started and "d" not in started
