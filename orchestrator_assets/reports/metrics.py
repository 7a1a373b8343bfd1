"""Prometheus metrics of the platform, read from the Dagster instance (so from any process).

`EventLogCollector.refresh()` reads what the platform recorded — runs (run storage), each
target's latest status (the report), and every change, verification and pull-request
materialization since the last refresh (event log) — into the metrics below. `orchestrator
metrics serve` (cli/metrics.py) refreshes it periodically and serves it over HTTP, so it counts
campaigns run by the CLI, the daemon or a Kubernetes run pod alike. A restarted exporter reads the
history again, so counters are totals over everything stored.

What a materialization does not hold — sandbox time to ready and code-host API calls — each
campaign run measures itself and records as the run tag `orchestrator/metrics` when its step ends
(`RunStats`, written by the asset factory's step, whichever process or pod runs it).

Names (the Grafana dashboard in deploy/grafana/ uses exactly these):

| metric | type | labels |
| --- | --- | --- |
| campaign_runs | gauge | campaign, status (Dagster run status) |
| campaign_targets | gauge | campaign, status (TargetStatus) |
| campaign_stage_duration_seconds | histogram | campaign, stage (see STAGES) |
| campaign_sandbox_ready_seconds | histogram | provider |
| campaign_agent_tokens_total | counter | campaign, model, kind (input, output, cache_*) |
| campaign_agent_cost_usd_total | counter | campaign, model |
| campaign_forge_api_calls_total | counter | campaign, forge |
| campaign_forge_rate_limited_total | counter | campaign, forge |
| campaign_forge_rate_limit_wait_seconds_total | counter | campaign, forge |
| campaign_metrics_refresh_timestamp_seconds | gauge | |
| campaign_metrics_refresh_errors_total | counter | |
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator_assets.stages.status import TargetStatus

STATS_TAG = "orchestrator/metrics"  # run tag: JSON of RunStats, written when the run ends
STAGES = ("provision", "setup", "transformation", "verification", "pull_request")
# Stage durations run from tenths of a second (a cached setup) to an hour (an agent's change).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
READY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "cache_write_tokens": "cache_write",
}
RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS", "FAILURE",
                "CANCELING", "CANCELED")  # fmt: skip

log = logging.getLogger("orchestrator.metrics")


# --- what a run records ---------------------------------------------------------------------------


@dataclass
class RunStats:
    """Measurements taken while a run works, stored on the run as the `orchestrator/metrics` tag:
    each sandbox's time to ready by provider, and the code host's API counters."""

    sandbox_ready: list[tuple[str, float]] = field(default_factory=list)
    forge: dict[str, float] = field(default_factory=dict)
    forge_kind: str = "local"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe_ready(self, provider: str, seconds: float) -> None:
        """One sandbox of `provider` took `seconds` from asking to a usable workspace."""
        with self._lock:
            self.sandbox_ready.append((provider, round(seconds, 4)))

    def to_tag(self) -> str:
        """The run tag's value (compact JSON)."""
        with self._lock:
            data = {"sandbox_ready": self.sandbox_ready, "forge": self.forge,
                    "forge_kind": self.forge_kind}  # fmt: skip
        return json.dumps(data, separators=(",", ":"))


class TimedProvider:
    """A sandbox provider that reports each sandbox's time to ready to a `RunStats`; everything
    else goes to the provider it wraps."""

    def __init__(self, inner: Any, kind: str, stats: RunStats):
        self._inner, self._kind, self._stats = inner, kind, stats

    @contextmanager
    def open(self, label: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
        """The wrapped provider's sandbox, timed from the call until it is ready."""
        started = time.monotonic()
        with self._inner.open(label, tags) as sandbox:
            opened = time.monotonic() - started
            try:
                yield sandbox
            finally:
                # A cluster sandbox gets its pod at its first command and measures that wait
                # itself (`ready_s`, None when it never became ready: no time to ready then).
                waited = getattr(sandbox, "ready_s", 0.0)
                if waited is not None:
                    self._stats.observe_ready(self._kind, opened + waited)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def forge_counters(forge: Any) -> dict[str, float]:
    """The code host client's counters (`GitHubForge.stats`), or none for a forge without."""
    stats = getattr(forge, "stats", None)
    return dict(stats) if isinstance(stats, Mapping) else {}


def forge_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What a run added to the forge's cumulative counters."""
    return {k: round(float(v) - float(before.get(k, 0)), 6) for k, v in after.items()}


# --- the exporter's metrics -----------------------------------------------------------------------


class Metrics:
    """The metric families, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Gauge("campaign_runs", "Dagster runs of a campaign by run status",
                          ["campaign", "status"], registry=r)  # fmt: skip
        self.targets = Gauge("campaign_targets", "Targets of a campaign by status",
                             ["campaign", "status"], registry=r)  # fmt: skip
        self.stage = Histogram(
            "campaign_stage_duration_seconds",
            "Time one target spent in a stage (work done, not reused results)",
            ["campaign", "stage"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.ready = Histogram(
            "campaign_sandbox_ready_seconds", "Time from asking for a sandbox to a usable one",
            ["provider"], buckets=READY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("campaign_agent_tokens", "Tokens the coding agent used",
                              ["campaign", "model", "kind"], registry=r)  # fmt: skip
        self.cost = Counter("campaign_agent_cost_usd", "What the coding agent's runs cost (USD)",
                            ["campaign", "model"], registry=r)  # fmt: skip
        self.api_calls = Counter("campaign_forge_api_calls", "Code host API requests",
                                 ["campaign", "forge"], registry=r)  # fmt: skip
        self.rate_limited = Counter(
            "campaign_forge_rate_limited", "Code host answers that were rate limits",
            ["campaign", "forge"], registry=r,
        )  # fmt: skip
        self.rate_wait = Counter(
            "campaign_forge_rate_limit_wait_seconds",
            "Time spent waiting for the code host's rate limits (and write pacing)",
            ["campaign", "forge"], registry=r,
        )  # fmt: skip
        self.refreshed = Gauge("campaign_metrics_refresh_timestamp_seconds",
                               "When the exporter last read the instance", registry=r)  # fmt: skip
        self.errors = Counter(
            "campaign_metrics_refresh_errors", "Refreshes that failed (see the log)", registry=r
        )


def _value(metadata: Mapping[str, Any], key: str, default: Any = None) -> Any:
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


class EventLogCollector:
    """Reads the instance into `Metrics`: gauges anew on each refresh, counters and histograms
    from the events stored since the last refresh (a storage-id cursor per asset)."""

    def __init__(self, metrics: Metrics | None = None, settings: Any = None):
        self.metrics = metrics or Metrics()
        self.settings = settings
        self._cursors: dict[tuple[str, ...], int] = defaultdict(int)
        self._runs_done: set[str] = set()

    def refresh(self, instance: Any) -> None:
        """Read what was stored since the last refresh; a failure is counted and logged."""
        try:
            campaigns = self._campaigns()
            self._runs(instance)
            for spec in campaigns:
                self._targets(instance, spec)
                self._materializations(instance, spec)
            self.metrics.refreshed.set(time.time())
        except Exception:
            self.metrics.errors.inc()
            log.exception("metrics refresh failed")

    def _campaigns(self) -> list[Any]:
        from orchestrator_assets.spec.catalog import load_catalog
        from orchestrator_assets.spec.settings import Settings

        catalog = load_catalog(self.settings or Settings())
        return [c.spec for _, c in sorted(catalog.campaigns.items())]

    def _runs(self, instance: Any) -> None:
        from dagster import DagsterRunStatus, RunsFilter

        m = self.metrics
        m.runs.clear()
        names = next((set(v) for k, v in instance.get_run_tags(tag_keys=["campaign"])), set())
        for name in sorted(names):
            for status in RUN_STATUSES:
                count = instance.get_runs_count(
                    RunsFilter(tags={"campaign": name}, statuses=[DagsterRunStatus[status]])
                )
                m.runs.labels(name, status.lower()).set(count)
            self._run_stats(instance, name)

    def _run_stats(self, instance: Any, campaign: str) -> None:
        from dagster import RunsFilter

        m = self.metrics
        for record in instance.get_run_records(RunsFilter(tags={"campaign": campaign})):
            run = record.dagster_run
            if run.run_id in self._runs_done or not run.is_finished:
                continue
            # A campaign run tags itself before it finishes; a finished run without the tag
            # (a report or review run) has nothing to count.
            raw = run.tags.get(STATS_TAG)
            self._runs_done.add(run.run_id)
            if raw is None:
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            for provider, seconds in data.get("sandbox_ready", []):
                m.ready.labels(provider).observe(seconds)
                m.stage.labels(campaign, "provision").observe(seconds)
            forge, kind = data.get("forge") or {}, data.get("forge_kind", "local")
            m.api_calls.labels(campaign, kind).inc(max(0.0, forge.get("api_calls", 0)))
            m.rate_limited.labels(campaign, kind).inc(max(0.0, forge.get("rate_limited", 0)))
            wait = forge.get("rate_limit_wait_s", 0) + forge.get("write_pacing_wait_s", 0)
            m.rate_wait.labels(campaign, kind).inc(max(0.0, wait))

    def _targets(self, instance: Any, spec: Any) -> None:
        from orchestrator_assets.reports.report import build_report

        frame = build_report(instance, spec)
        counts = frame["status"].value_counts().to_dict() if len(frame) else {}
        for status in TargetStatus:
            self.metrics.targets.labels(spec.name, status.value).set(counts.get(status.value, 0))
        # Every campaign's spend shows, zero included (model "none": no agent ran yet).
        self.metrics.cost.labels(spec.name, "none")
        for kind in TOKEN_KINDS.values():
            self.metrics.tokens.labels(spec.name, "none", kind)

    def _materializations(self, instance: Any, spec: Any) -> None:
        from orchestrator_assets.assets import history

        for stage in ("change", "verification", "pull_request"):
            key = history.asset_key(spec, stage)
            for metadata in self._new_metadata(instance, key):
                self._observe(spec.name, stage, metadata)

    def _new_metadata(self, instance: Any, key: Any) -> Iterator[Mapping[str, Any]]:
        from dagster import AssetRecordsFilter

        cursor_key = tuple(key.path)
        while True:
            result = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=self._cursors[cursor_key]),
                limit=500,
                ascending=True,
            )
            for record in result.records:
                self._cursors[cursor_key] = max(self._cursors[cursor_key], record.storage_id)
                yield record.asset_materialization.metadata
            if not result.has_more:
                return

    def _observe(self, campaign: str, stage: str, meta: Mapping[str, Any]) -> None:
        m = self.metrics
        if _value(meta, "reused", False):
            return  # a recorded result used again: no work, nothing to time or pay for
        setup = float(_value(meta, "setup_duration_s", 0.0) or 0.0)
        if _value(meta, "setup_cache") in ("hit", "miss"):
            m.stage.labels(campaign, "setup").observe(setup)
        duration = float(_value(meta, "duration_s", 0.0) or 0.0)
        if stage == "change":
            # The change stage less its setup: checkout, the transformation, commit and push.
            m.stage.labels(campaign, "transformation").observe(max(0.0, duration - setup))
            model = str(_value(meta, "model", "") or "none")
            cost = float(_value(meta, "cost_usd", 0.0) or 0.0)
            if _value(meta, "session_id") or cost:
                m.cost.labels(campaign, model).inc(max(0.0, cost))
                for key, kind in TOKEN_KINDS.items():
                    m.tokens.labels(campaign, model, kind).inc(max(0, _value(meta, key, 0) or 0))
        elif stage == "verification":
            if _value(meta, "head_sha"):
                m.stage.labels(campaign, "verification").observe(max(0.0, duration - setup))
        elif _value(meta, "outcome") in ("opened", "updated", "unchanged", "closed_stale"):
            m.stage.labels(campaign, "pull_request").observe(duration)


def exported_names(metrics: Metrics) -> set[str]:
    """Every sample name the registry exports (`_total`, `_bucket`, `_sum`, `_count` included)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    return names


# --- recording, from inside a run ---------------------------------------------------------------


def record_run_stats(instance: Any, run_id: str, stats: RunStats, campaign: str) -> None:
    """Store a run's stats as its `orchestrator/metrics` tag (read by the exporter), with the
    `campaign` tag the exporter finds runs by (a run of the UI's asset graph has none of its
    own)."""
    try:
        instance.add_run_tags(run_id, {STATS_TAG: stats.to_tag(), "campaign": campaign})
    except Exception:  # metrics must never fail a campaign
        log.warning("could not record run metrics for %s", run_id, exc_info=True)
