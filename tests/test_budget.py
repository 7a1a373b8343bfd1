"""The campaign budget: thresholds are reported once, and no run starts past the limit."""

from __future__ import annotations

from orchestrator_assets.stages.budget import Budget, usd


def test_thresholds_are_reported_once_and_the_limit_stops_new_runs():
    notes: list[str] = []
    budget = Budget(10.0, spent_usd=1.0, notify=notes.append)
    assert budget.may_start()
    budget.add(4.0)  # 5.0: 50%
    budget.add(1.0)  # 6.0: nothing new
    assert notes == ["budget: 50% reached ($5.00 of $10.00 spent)"]
    budget.add(3.5)  # 9.5: 80%
    assert budget.may_start()
    budget.add(1.0)  # 10.5: 100%
    assert notes[1:] == [
        "budget: 80% reached ($9.50 of $10.00 spent)",
        "budget: 100% reached ($10.50 of $10.00 spent)",
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


def test_small_amounts_print_with_the_digits_that_tell_them_apart():
    # a budget of a fraction of a cent is what a cheap model's campaign spends per target
    assert Budget(0.005, spent_usd=0.0033).describe() == "$0.0033 of $0.005 spent"
    assert [usd(0.0), usd(0.5), usd(12.5), usd(1234.5678)] == ["$0.00", "$0.50", "$12.50",
                                                              "$1,234.5678"]  # fmt: skip
