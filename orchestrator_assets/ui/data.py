"""What the pages show, read from the Dagster instance (the CLI's readers, not a second copy).

Campaign reports are cached by the event log's newest storage id: a page is rebuilt only when
something was recorded since, so a 2,000-target campaign page and the live updates stay cheap.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pandas as pd
from dagster import DagsterInstance

from orchestrator_assets.assets import history
from orchestrator_assets.reports.report import build_report, status_counts
from orchestrator_assets.spec.campaign import CampaignSpec
from orchestrator_assets.spec.catalog import Catalog, load_catalog
from orchestrator_assets.spec.errors import OrchestratorError
from orchestrator_assets.spec.settings import Settings
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    VerificationRecord,
    decision_applies,
)
from orchestrator_assets.stages.review import latest_decisions

CATALOG_TTL_S = 5.0  # campaign files are read again at most this often


class NotFound(OrchestratorError):
    """An unknown campaign or target: a 404 page."""


def event_position(instance: DagsterInstance) -> int:
    """The event log's newest storage id: it moves whenever anything is recorded."""
    return instance.event_log_storage.get_maximum_record_id() or 0


class State:
    """The instance and what was last read from it."""

    def __init__(self, instance: DagsterInstance, settings: Settings | None = None):
        self.instance = instance
        self.settings = settings or Settings()
        self._lock = threading.Lock()
        self._catalog: tuple[float, Catalog] | None = None
        self._reports: dict[str, tuple[int, pd.DataFrame]] = {}

    def catalog(self) -> Catalog:
        """Every campaign (re-read every few seconds: files may be added while the UI runs)."""
        with self._lock:
            if self._catalog is None or time.monotonic() - self._catalog[0] > CATALOG_TTL_S:
                self._catalog = (time.monotonic(), load_catalog(self.settings, self.instance))
            return self._catalog[1]

    def spec(self, campaign: str) -> CampaignSpec:
        """The campaign called `campaign`; NotFound otherwise."""
        try:
            return self.catalog().get(campaign).spec
        except OrchestratorError as exc:
            raise NotFound(str(exc)) from None

    def report(self, spec: CampaignSpec) -> pd.DataFrame:
        """The campaign's report frame (one row per target), rebuilt when events were added."""
        position = event_position(self.instance)
        cached = self._reports.get(spec.name)
        if cached is not None and cached[0] == position:
            return cached[1]
        frame = build_report(self.instance, spec)
        self._reports[spec.name] = (position, frame)
        return frame

    def target(self, spec: CampaignSpec, key: str) -> TargetView:
        """Everything the target page shows; NotFound for a target the campaign never had."""
        frame = self.report(spec)
        rows = frame[frame["target"] == key]
        if not len(rows):
            try:
                spec.require_target(key)
            except OrchestratorError as exc:
                raise NotFound(str(exc)) from None
            raise NotFound(f"campaign {spec.name!r} has no target {key!r}")
        instance = self.instance
        row = rows.iloc[0].to_dict()
        change = history.latest_changes(instance, spec, [key]).get(key)
        verification = history.latest_verifications(instance, spec, [key]).get(key)
        pr = history.latest_pull_requests(instance, spec, [key]).get(key)
        decision = latest_decisions(instance, spec, [key]).get(key)
        return TargetView(
            spec=spec,
            key=key,
            row={k: (None if _missing(v) else v) for k, v in row.items()},
            change=change,
            verification=verification,
            pull_request=pr,
            decision=decision,
            decision_pending=decision_applies(decision, change)
            and row["status"] == "awaiting_review",
        )


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass
class TargetView:
    """One target's records and report row."""

    spec: CampaignSpec
    key: str
    row: dict
    change: ChangeRecord | None
    verification: VerificationRecord | None
    pull_request: PullRequestRecord | None
    decision: ReviewDecision | None
    decision_pending: bool = False

    @property
    def status(self) -> str:
        """The target's status (the report's word)."""
        return str(self.row["status"])

    @property
    def awaiting(self) -> bool:
        """True when a decision can be made now."""
        return self.status == "awaiting_review" and not self.decision_pending

    @property
    def current_verification(self) -> VerificationRecord | None:
        """The verification of the current head, if it ran."""
        v = self.verification
        if v is None or self.change is None or v.head_sha != self.change.head_sha:
            return None
        return v


@dataclass
class CampaignSummary:
    """A campaign's counts, cost and budget for the campaigns page."""

    name: str
    spec: CampaignSpec
    targets: int
    counts: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    budget_usd: float | None = None

    @property
    def cost_per_target(self) -> float:
        """The mean cost of the targets an agent or tool ran for."""
        return self.cost_usd / self.targets if self.targets else 0.0

    @property
    def budget_share(self) -> float | None:
        """The budget used, 0..1 (None without a budget)."""
        return self.cost_usd / self.budget_usd if self.budget_usd else None


def summarize(spec: CampaignSpec, frame: pd.DataFrame) -> CampaignSummary:
    """The campaigns page's figures for one campaign."""
    return CampaignSummary(
        name=spec.name,
        spec=spec,
        targets=len(frame),
        counts=status_counts(frame) if len(frame) else {},
        cost_usd=float(frame["cost_usd"].sum()) if len(frame) else 0.0,
        budget_usd=spec.budget_usd,
    )


def timeline_points(
    instance: DagsterInstance, spec: CampaignSpec
) -> tuple[list[tuple[float, str, str]], list[tuple[float, float]]]:
    """When each target reached each stage, and the spend over time.

    Stages: `processed` when its newest change was recorded, then the PR states seen (open,
    merged, closed). Spend: each target's total cost at the time of its newest change record.
    A target steered or re-run later counts from its newest record: the charts show where
    targets stand, not every detour."""
    changes = history.latest_event_records(instance, history.asset_key(spec, "change"), None, False)
    stages: list[tuple[float, str, str]] = []
    spend: list[tuple[float, float]] = []
    for key, record in changes.items():
        stages.append((record.timestamp, key, "processed"))
        meta = history.event_metadata(record.event_log_entry)
        cost = meta.get("total_cost_usd") or meta.get("cost_usd")
        value = getattr(cost, "value", cost)
        if isinstance(value, int | float):
            spend.append((record.timestamp, float(value)))
    for key, at, _, state in history.pr_timeline(instance, spec):
        stages.append((at, key, "open" if state == "draft" else state))
    stages.sort()
    spend.sort()
    return stages, spend
