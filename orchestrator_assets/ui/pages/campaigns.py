"""The campaigns page: every campaign with its counts, cost, budget and charts."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from orchestrator_assets.ui.charts import burndown_svg, cost_svg
from orchestrator_assets.ui.data import summarize, timeline_points
from orchestrator_assets.ui.web import render, settings, state


def campaigns_page(request: Request) -> Response:
    """Every campaign: targets per status, total and per-target cost, budget used, charts."""
    data = state(request)
    catalog = data.catalog()
    now = time.time()
    cards = []
    for _name, loaded in sorted(catalog.campaigns.items()):
        spec = loaded.spec
        frame = data.report(spec)
        stages, spend = timeline_points(data.instance, spec)
        cards.append(
            {
                "summary": summarize(spec, frame),
                "burndown": burndown_svg(len(frame), stages, now),
                "cost": cost_svg(spend, spec.budget_usd, now),
                "dagster": settings(request).asset_group_url(spec.id),
            }
        )
    return render(request, "campaigns.html", cards=cards, errors=catalog.errors)
