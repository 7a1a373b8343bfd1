"""Stage records as Dagster metadata: numbers to plot, markdown to read, the record to reload."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from orchestrator_assets.assets.history import RECORD
from orchestrator_assets.reports.report import judge_rates, report_markdown, status_counts
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    SetupSummary,
    VerificationRecord,
)


def _fenced(text: str, lang: str = "") -> dg.MarkdownMetadataValue:
    fence = "````" if "```" in text else "```"
    return dg.MetadataValue.md(f"{fence}{lang}\n{text.rstrip()}\n{fence}")


def setup_metadata(setup: SetupSummary | None) -> dict:
    """How the workspace was prepared: environment cache hit or miss, time, cached size."""
    if setup is None:
        return {}
    return {
        "setup_cache": setup.cache,
        "setup_duration_s": float(setup.duration_s),
        "setup_cache_bytes": setup.size_bytes,
    }


def change_metadata(record: ChangeRecord) -> dict:
    """Metadata of one target's `change` materialization."""
    meta: dict = {
        RECORD: dg.MetadataValue.json(record.model_dump(mode="json")),
        "outcome": record.outcome.value,
        "repo": record.repo,
        "branch": record.branch,
        "base_branch": record.base_branch or "",
        "base_sha": record.base_sha or "",
        "head_sha": record.head_sha or "",
        "files_changed": len(record.files),
        "insertions": record.insertions,
        "deletions": record.deletions,
        "cost_usd": float(record.cost_usd),
        "duration_s": float(record.duration_s),
        "reused": record.reused,
        "cached": record.reused,  # the recorded result of the same inputs, not a new run
    }
    if record.reason:
        meta["reason"] = record.reason
    meta["total_cost_usd"] = float(record.total_cost_usd)
    meta.update(setup_metadata(record.setup))
    if record.agent is not None:
        agent = record.agent
        meta.update(
            {
                "model": agent.model or "",
                "session_id": agent.session_id,
                "input_tokens": agent.input_tokens,
                "output_tokens": agent.output_tokens,
                "cache_read_tokens": agent.cache_read_tokens,
                "cache_write_tokens": agent.cache_write_tokens,
                "num_turns": agent.num_turns,
                "agent_duration_s": float(agent.duration_s),
            }
        )
        if agent.final_message:
            meta["agent_message"] = dg.MetadataValue.md(agent.final_message)
        if agent.transcript:
            meta["transcript"] = dg.MetadataValue.path(agent.transcript)
        meta["verifier_tool_calls"] = len(agent.verifier_calls)
        meta["stop_gate_blocks"] = agent.stop_blocks
        if agent.gate_decisions:
            meta["stop_gate"] = dg.MetadataValue.json({"decisions": agent.gate_decisions})
    if record.iterations:
        meta["iterations"] = len(record.iterations)
        meta["repairs"] = record.repairs
    if record.verdicts:
        last = record.verdicts[-1]
        meta.update(
            {
                "judge_verdict": last.verdict,
                "judge_reasons": "; ".join(f"{r.get('kind')}: {r.get('detail')}"
                                           for r in last.reasons),
                "judge_input_tokens": sum(v.input_tokens for v in record.verdicts),
                "judge_output_tokens": sum(v.output_tokens for v in record.verdicts),
                "judge_cost_usd": float(sum(v.cost_usd for v in record.verdicts)),
            }
        )  # fmt: skip
    if record.diff:
        note = "\n(diff truncated)" if record.diff_truncated else ""
        meta["diff"] = dg.MetadataValue.md(f"```diff\n{record.diff.rstrip()}\n```{note}")
    if record.output_tail:
        meta["output"] = _fenced(record.output_tail)
    return meta


def check_metadata(record: VerificationRecord, verifier: str) -> tuple[bool, dict]:
    """(passed, metadata) of one verifier's check evaluation for one target."""
    result = next((r for r in record.results if r.name == verifier), None)
    meta: dict = {"head_sha": record.head_sha or ""}
    if result is None:
        reason = record.error or record.skipped_reason or "verifier did not run"
        meta["reason"] = reason
        # Nothing to verify (no change) is not a failure; a crash before the verifier ran is.
        return record.error is None and record.head_sha is None, meta
    meta.update(
        {
            "exit_code": result.exit_code,
            "duration_s": float(result.duration_s),
            "timed_out": result.timed_out,
            "command": result.command,
            "output": _fenced(result.output_tail or "(no output)"),
        }
    )
    return result.passed, meta


def verification_metadata(record: VerificationRecord) -> dict:
    """Metadata of one target's `verification` materialization."""
    meta: dict = {
        RECORD: dg.MetadataValue.json(record.model_dump(mode="json")),
        "head_sha": record.head_sha or "",
        "passed": record.passed,
        "verifiers_failed": len(record.failed_verifiers),
        "duration_s": float(record.duration_s),
        "reused": record.reused,
    }
    meta.update(setup_metadata(record.setup))
    if record.skipped_reason:
        meta["skipped"] = record.skipped_reason
    if record.error:
        meta["error"] = record.error
    if record.failed_verifiers:
        meta["failed"] = ", ".join(record.failed_verifiers)
    return meta


def pull_request_metadata(record: PullRequestRecord) -> dict:
    """Metadata of one target's `pull_request` materialization."""
    meta: dict = {
        RECORD: dg.MetadataValue.json(record.model_dump(mode="json")),
        "outcome": record.outcome,
        "duration_s": float(record.duration_s),
    }
    if record.url:
        meta["url"] = dg.MetadataValue.url(record.url)
    if record.number is not None:
        meta["number"] = record.number
    if record.state:
        meta["state"] = record.state
    if record.reason:
        meta["reason"] = record.reason
    return meta


def report_metadata(frame: pd.DataFrame) -> dict:
    """Metadata of the `report` materialization: the table, totals and counts per status."""
    meta: dict = {
        "report": dg.MetadataValue.md(report_markdown(frame)),
        "dagster/row_count": len(frame),
        "targets": len(frame),
        "cost_usd": float(frame["cost_usd"].sum()) if len(frame) else 0.0,
    }
    meta.update({f"status_{k}": v for k, v in status_counts(frame).items()})
    rates = judge_rates(frame)
    if rates["judged_targets"]:
        meta.update(rates)
    return meta
