"""Reading each target's newest record back from the event log (assets/history.py), on SQLite and
on PostgreSQL: partitions with several materializations, from runs that wrote only some stages
or only observed, events that lack the metadata a reader wants, and reads of some targets only.
"""

from __future__ import annotations

import random

import dagster as dg
import pytest
import yaml

from orchestrator_assets.assets import history
from orchestrator_assets.reports.report import build_report
from orchestrator_assets.spec.campaign import CampaignSpec, load_campaign
from orchestrator_assets.stages import review
from orchestrator_assets.stages.records import (
    ChangeRecord,
    PullRequestRecord,
    ReviewDecision,
    VerificationRecord,
    VerifierResult,
)
from orchestrator_assets.stages.status import ChangeOutcome
from resources.forges.base import PullRequestStatus
from tests.conftest import Platform, statuses


@pytest.fixture(params=["sqlite", "postgres"])
def storage_platform(request: pytest.FixtureRequest) -> Platform:
    """The platform with its instance on SQLite, then on a real PostgreSQL server."""
    return request.getfixturevalue("platform" if request.param == "sqlite" else "pg_platform")


def _spec(platform: Platform, n: int) -> CampaignSpec:
    path = platform.campaigns / "hist.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "name": "hist",
                "targets": [f"/srv/fleet/repo{i}.git" for i in range(n)],
                "transformation": {"kind": "deterministic", "command": "true"},
                "verifiers": [{"name": "test", "command": "true"}],
            }
        )
    )
    return load_campaign(path)


def _in_run(instance: dg.DagsterInstance, events: list) -> None:
    """Log `events` from a run's step, as a campaign run logs its targets' events."""

    @dg.op
    def write(context) -> None:
        for event in events:
            context.log_event(event)

    @dg.job
    def history_writer() -> None:
        write()

    assert history_writer.execute_in_process(instance=instance).success


def _change(spec: CampaignSpec, head: str) -> ChangeRecord:
    return ChangeRecord(outcome=ChangeOutcome.CHANGED, repo="/srv/x.git", branch=spec.branch_name,
                        head_sha=head, files=["app.py"],
                        fingerprint=spec.transformation_fingerprint())  # fmt: skip


def _verification(head: str, passed: bool) -> VerificationRecord:
    result = VerifierResult(name="test", passed=passed, exit_code=0 if passed else 1, duration_s=1)
    return VerificationRecord(head_sha=head, results=[result])


def _mat(spec: CampaignSpec, stage: str, key: str, record) -> dg.AssetMaterialization:
    from orchestrator_assets.assets.metadata import (
        change_metadata,
        pull_request_metadata,
        verification_metadata,
    )

    meta = {"change": change_metadata, "verification": verification_metadata,
            "pull_request": pull_request_metadata}[stage](record)  # fmt: skip
    return dg.AssetMaterialization(history.asset_key(spec, stage), partition=key, metadata=meta)


def _pr_seen(spec: CampaignSpec, key: str, number: int, state: str) -> dg.AssetObservation:
    status = PullRequestStatus(number=number, url=f"file:///pulls/{number}.json", state=state)
    return dg.AssetObservation(
        history.asset_key(spec, "pull_request"),
        partition=key,
        metadata=history.pr_status_metadata(status),
    )


def test_newest_record_per_target_across_runs_that_wrote_other_stages(
    storage_platform: Platform,
):
    spec = _spec(storage_platform, 4)
    a, b, c, d = (t.key for t in spec.targets)
    change_key = history.asset_key(spec, "change")
    decision = ReviewDecision(decision="approve", target=a, actor="ana", head_sha="a2")
    with storage_platform.instance() as instance:
        # run 1: every stage for a and b
        _in_run(instance, [
            _mat(spec, "change", a, _change(spec, "a1")),
            _mat(spec, "change", b, _change(spec, "b1")),
            _mat(spec, "verification", a, _verification("a1", True)),
            _mat(spec, "verification", b, _verification("b1", True)),
            _mat(spec, "pull_request", a, PullRequestRecord(outcome="opened", number=7,
                                                             state="open", head_sha="a1")),
            _mat(spec, "pull_request", b, PullRequestRecord(outcome="opened", number=8,
                                                             state="open", head_sha="b1")),
        ])  # fmt: skip
        instance.report_runless_asset_event(_pr_seen(spec, a, 7, "open"))
        # run 2 wrote a's change and verification only: a new commit that fails its test
        _in_run(instance, [_mat(spec, "change", a, _change(spec, "a2")),
                           _mat(spec, "verification", a, _verification("a2", False))])  # fmt: skip
        # a review decision: now a's newest `pull_request` observation is not a PR state
        review.record_decision(instance, spec, decision)
        # run 3 wrote a's pull request stage only, blocked: a record without a PR number
        _in_run(instance, [_mat(spec, "pull_request", a, PullRequestRecord(
            outcome="blocked", reason="verifier failed: test"))])  # fmt: skip
        # b: a materialization reported by hand (no record), an observation of its PR merged,
        # and an observation of its change that is not a removal mark
        instance.report_runless_asset_event(
            dg.AssetMaterialization(change_key, partition=b, metadata={"note": "by hand"})
        )
        _in_run(instance, [_pr_seen(spec, b, 8, "merged")])
        instance.report_runless_asset_event(
            dg.AssetObservation(change_key, partition=b, metadata={"note": "looked at"})
        )
        # removal marks: c was removed and came back, d was removed
        for key, flag in ((c, True), (d, True), (c, False)):
            instance.report_runless_asset_event(
                dg.AssetObservation(change_key, partition=key, metadata={history.REMOVED: flag})
            )

        changes = history.latest_changes(instance, spec)
        assert {k: r.head_sha for k, r in changes.items()} == {a: "a2", b: "b1"}
        verifications = history.latest_verifications(instance, spec)
        assert {k: (r.head_sha, r.passed) for k, r in verifications.items()} == {
            a: ("a2", False), b: ("b1", True)
        }  # fmt: skip
        prs = history.latest_pull_requests(instance, spec)
        assert {k: (r.outcome, r.number) for k, r in prs.items()} == {
            a: ("blocked", None), b: ("opened", 8)
        }  # fmt: skip
        numbered = history.latest_numbered_pull_requests(instance, spec)
        assert {k: (r.outcome, r.number) for k, r in numbered.items()} == {
            a: ("opened", 7), b: ("opened", 8)
        }  # fmt: skip
        seen = history.latest_pr_observations(instance, spec)
        assert {k: (o.number, o.state) for k, o in seen.items()} == {a: (7, "open"),
                                                                     b: (8, "merged")}  # fmt: skip
        assert review.latest_decisions(instance, spec) == {a: decision}
        assert history.removed_targets(instance, spec) == {d}

        # reads of some targets only, and of none (not: of every target)
        assert set(history.latest_changes(instance, spec, [b, c])) == {b}
        assert history.latest_changes(instance, spec, []) == {}
        assert set(history.latest_numbered_pull_requests(instance, spec, [a])) == {a}

        # what a check evaluation points at: each target's newest verification
        verification_key = history.asset_key(spec, "verification")
        pointers = history.latest_materializations(instance, verification_key, [a, b, c])
        assert set(pointers) == {a, b}
        for key in (a, b):
            newest = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=verification_key, asset_partitions=[key]), limit=1
            ).records[0]
            assert pointers[key].storage_id == newest.storage_id
            assert pointers[key].run_id == newest.run_id

        frame = build_report(instance, spec)
    # (d is marked removed but still in the campaign file: the file decides, d is pending)
    assert statuses(frame) == {a: "verification_failed", b: "merged", c: "pending",
                               d: "pending"}  # fmt: skip


def _scanned(instance, key: dg.AssetKey, observations: bool, metadata_key: str) -> dict:
    """Every event of `key`, oldest first: the last one per partition carrying the key."""
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    found: dict = {}
    cursor = None
    while True:
        result = fetch(dg.AssetRecordsFilter(asset_key=key), limit=100, cursor=cursor,
                       ascending=True)  # fmt: skip
        for record in result.records:
            entry = record.event_log_entry
            if record.partition_key and metadata_key in history.event_metadata(entry):
                found[record.partition_key] = entry
        if not result.has_more:
            return found
        cursor = result.cursor


def test_newest_event_carrying_a_key_matches_a_full_scan(
    storage_platform: Platform, monkeypatch: pytest.MonkeyPatch
):
    # Small pages: partition lists, id lookups and the scan back all take several of them.
    monkeypatch.setattr(history, "PAGE", 3)
    spec = _spec(storage_platform, 8)
    keys = [t.key for t in spec.targets]
    pr_key = history.asset_key(spec, "pull_request")
    rng = random.Random(17)
    events: list = []
    for i in range(90):
        key = rng.choice(keys[:7])  # the last target has no event at all
        kind = rng.choice(["record", "numbered", "bare", "state", "decision", "other"])
        if kind == "record":
            events.append(_mat(spec, "pull_request", key, PullRequestRecord(outcome="held")))
        elif kind == "numbered":
            pr = PullRequestRecord(outcome="updated", number=i, state="open")
            events.append(_mat(spec, "pull_request", key, pr))
        elif kind == "bare":
            events.append(dg.AssetMaterialization(pr_key, partition=key, metadata={"i": i}))
        elif kind == "state":
            events.append(_pr_seen(spec, key, i, rng.choice(["open", "merged", "closed"])))
        elif kind == "decision":
            decision = ReviewDecision(decision="approve", target=key, actor=f"r{i}")
            events.append(review.decision_observation(spec, decision))
        else:
            events.append(dg.AssetObservation(pr_key, partition=key, metadata={"i": i}))
    with storage_platform.instance() as instance:
        _in_run(instance, events[:45])
        for event in events[45:]:
            instance.report_runless_asset_event(event)
        for observations, metadata_key in (
            (False, history.RECORD),
            (False, history.PR_NUMBER),
            (True, history.PR_STATE),
            (True, review.DECISION),
            (True, "i"),
            (False, "i"),
        ):
            expected = _scanned(instance, pr_key, observations, metadata_key)
            assert expected, metadata_key  # the draw gave every kind of event
            got = history.latest_events(instance, pr_key, None, observations, metadata_key)
            assert got == expected, (observations, metadata_key)
            some = keys[::2]
            got = history.latest_events(instance, pr_key, some, observations, metadata_key)
            assert got == {k: v for k, v in expected.items() if k in some}
            # the same events, read without building Dagster's event objects
            values = {
                k: (v.timestamp, {m: x.value for m, x in history.event_metadata(v).items()})
                for k, v in expected.items()
            }
            for partitions in (None, some):
                stored = history.latest_stored(
                    instance, pr_key, partitions, observations, metadata_key
                )
                assert {k: (e.timestamp, e.metadata) for k, e in stored.items()} == {
                    k: v for k, v in values.items() if partitions is None or k in partitions
                }
