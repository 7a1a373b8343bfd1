"""Steering an agentic change: the real Claude Code CLI resumes its session with the reviewer's
prompt (only the model behind it is scripted)."""

from __future__ import annotations

import json

import pytest

from orchestrator_assets.assets import history
from orchestrator_assets.demo_fleet import create_repo
from orchestrator_assets.spec.catalog import load_one
from tests.conftest import Platform, app_repo, statuses
from tests.fake_model import last_user_text, text, tool
from tests.test_agentic import model  # noqa: F401 (the scripted model server fixture)

pytestmark = pytest.mark.usefixtures("bwrap")


def test_steer_resumes_the_session_and_each_iteration_is_kept(platform: Platform, model):  # noqa: F811
    repo = create_repo(platform.fleet, app_repo("alpha", "GREETING = 'OLD'\n"))
    path = platform.write_campaign(
        "steered",
        targets=[str(repo)],
        transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 6},
        review={"policy": "required"},
    )
    model.script = [
        tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
        text("Renamed OLD to NEW."),
    ]
    first = platform.run(path)
    assert statuses(first.report) == {"acme__alpha": "awaiting_review"}
    first_requests = len(model.conversation_requests)

    platform.env["ORCHESTRATOR_ACTOR"] = "carol"
    proc = platform.cli(
        "steer", "steered", "acme__alpha", "--prompt", "Also add a comment '# renamed' on top.",
        "--files", "app.py", "--reason", "needs a note",
    )  # fmt: skip
    assert "steered by carol" in proc.stdout
    model.script = [
        tool("Bash", {"command": "sed -i '1i # renamed' app.py", "description": "comment"}),
        text("Added the comment."),
    ]
    second = platform.run(path)
    assert statuses(second.report) == {"acme__alpha": "awaiting_review"}

    # The resumed request carries the earlier conversation and then the reviewer's prompt.
    resumed = model.conversation_requests[first_requests]["json"]
    history_text = json.dumps(resumed["messages"])
    assert "Rename OLD to NEW." in history_text  # the first prompt
    assert "sed -i s/OLD/NEW/ app.py" in history_text  # the first tool call
    assert "Renamed OLD to NEW." in history_text  # the first answer
    steer_prompt = last_user_text(resumed)
    assert "Also add a comment '# renamed' on top." in steer_prompt
    assert "Work on these files only" in steer_prompt and "`app.py`" in steer_prompt

    spec = load_one(path, platform.settings()).spec
    with platform.instance() as instance:
        change = history.latest_changes(instance, spec)["acme__alpha"]
    assert [(i.number, i.kind) for i in change.iterations] == [(1, "initial"), (2, "steer")]
    one, two = change.iterations
    assert one.session_id == two.session_id == change.agent.session_id
    assert "# renamed" not in one.diff and "+# renamed" in two.diff
    assert two.prompt == "Also add a comment '# renamed' on top." and two.files == ["app.py"]
    assert one.cost_usd > 0 and two.cost_usd > 0
    assert change.total_cost_usd == pytest.approx(one.cost_usd + two.cost_usd)
    row = second.report.set_index("target").loc["acme__alpha"]
    assert row["iterations"] == 2 and row["cost_usd"] == pytest.approx(change.total_cost_usd)
    # The branch holds one commit on the base with both iterations' work.
    diff = platform.cli("diff", "steered", "acme__alpha").stdout
    assert "+# renamed" in diff and "+GREETING = 'NEW'" in diff
    logs = platform.cli("logs", "steered", "acme__alpha", "--agent").stdout
    assert "iteration 1 (initial)" in logs and "iteration 2 (steer)" in logs
    assert "sed -i '1i # renamed' app.py" in logs

    platform.cli("approve", "steered", "acme__alpha")
    third = platform.run(path)
    assert statuses(third.report) == {"acme__alpha": "pr_open"}
    assert len(model.conversation_requests) == first_requests + 2  # approving ran no agent


def test_a_budget_alert_is_posted_to_slack(platform: Platform, model, monkeypatch):  # noqa: F811
    from tests.test_review import SlackReceiver

    receiver = SlackReceiver()
    monkeypatch.setenv("ORCHESTRATOR_SLACK_WEBHOOK_URL", receiver.url)
    try:
        repos = [create_repo(platform.fleet, app_repo(n, "GREETING = 'OLD'\n"))
                 for n in ("alpha", "beta")]  # fmt: skip
        path = platform.write_campaign(
            "budgeted", targets=[str(r) for r in repos], concurrency=1, budget_usd=0.0001,
            transformation={"kind": "agentic", "prompt": "Rename OLD to NEW.", "max_turns": 4},
        )  # fmt: skip
        model.script = [
            tool("Bash", {"command": "sed -i s/OLD/NEW/ app.py", "description": "rename"}),
            text("Renamed."),
        ]
        outcome = platform.run(path)
        # The first run spends past the tiny budget (its own --max-budget-usd stops it); the
        # second target is not started.
        assert statuses(outcome.report) == {"acme__alpha": "change_failed",
                                            "acme__beta": "over_budget"}  # fmt: skip
        alerts = receiver.texts("budget")
        assert alerts and "budgeted" in alerts[-1] and "100% reached" in alerts[-1]
    finally:
        receiver.close()
