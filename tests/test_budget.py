"""The campaign budget: thresholds are reported once, and no run starts past the limit."""

from __future__ import annotations

from orchestrator_assets.budget import Budget


def test_thresholds_are_reported_once_and_the_limit_stops_new_runs():
    notes: list[str] = []
    budget = Budget(10.0, spent_usd=1.0, notify=notes.append)
    assert budget.may_start()
    budget.add(4.0)  # 5.0: 50%
    budget.add(1.0)  # 6.0: nothing new
    assert notes == ["budget: 50% reached ($5.0000 of $10.00 spent)"]
    budget.add(3.5)  # 9.5: 80%
    assert budget.may_start()
    budget.add(1.0)  # 10.5: 100%
    assert notes[1:] == [
        "budget: 80% reached ($9.5000 of $10.00 spent)",
        "budget: 100% reached ($10.5000 of $10.00 spent)",
    ]
    assert not budget.may_start()


def test_spend_from_earlier_runs_counts_and_no_limit_means_no_stop():
    notes: list[str] = []
    assert not Budget(2.0, spent_usd=2.0, notify=notes.append).may_start()
    unlimited = Budget(None, spent_usd=1e9, notify=notes.append)
    unlimited.add(5.0)
    assert unlimited.may_start() and notes == []
    resumed = Budget(10.0, spent_usd=6.0, notify=notes.append)  # 50% was crossed before
    resumed.add(0.5)
    assert notes == []
