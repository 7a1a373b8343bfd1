"""The campaign page: its targets in a table to filter, search and sort."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from orchestrator_assets.reports.report import status_counts
from orchestrator_assets.ui.data import summarize
from orchestrator_assets.ui.web import render, settings, state

SORTS = {
    "target": "target", "status": "status", "cost": "cost_usd", "duration": "duration_s",
    "files": "files_changed",
}  # fmt: skip
COLUMNS = ["target", "status", "files_changed", "cost_usd", "duration_s", "pr_number", "pr_url",
           "pr_state", "iterations", "reason"]  # fmt: skip


def campaign_page(request: Request) -> Response:
    """A campaign's targets: `status` filters, `q` searches names, `sort`/`order` sort."""
    data = state(request)
    spec = data.spec(request.path_params["campaign"])
    frame = data.report(spec)
    status = request.query_params.get("status") or ""
    query = (request.query_params.get("q") or "").strip()
    sort = request.query_params.get("sort") or "target"
    order = request.query_params.get("order") or "asc"
    shown = frame
    if status:
        shown = shown[shown["status"] == status]
    if query:
        shown = shown[shown["target"].str.contains(query, case=False, regex=False)]
    shown = shown.sort_values(
        SORTS.get(sort, "target"), ascending=order != "desc", kind="stable", na_position="last"
    )
    columns = [*COLUMNS, *(c for c in ("forge", "host") if c in shown)]  # where targets live
    rows = [
        dict(zip(columns, values, strict=True))
        for values in shown[columns].itertuples(index=False, name=None)
    ]
    return render(
        request,
        "campaign.html",
        # the host of each target, for a campaign on named forges (the forges file)
        show_hosts="forge" in frame and any(f != "default" for f in frame["forge"]),
        spec=spec,
        summary=summarize(spec, frame),
        counts=status_counts(frame) if len(frame) else {},
        rows=rows,
        status=status,
        query=query,
        sort=sort,
        order=order,
        dagster=settings(request).asset_group_url(spec.id),
    )
