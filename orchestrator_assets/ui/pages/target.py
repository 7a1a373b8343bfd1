"""The target page: the change as a diff to comment on, the review buttons, the verifiers, each
iteration with its agent timeline, and the pull request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from orchestrator_assets.reports.transcript import TimelineEntry, timeline
from orchestrator_assets.ui.diffs import parse_diff
from orchestrator_assets.ui.web import render, state


def change_diff(change) -> str:
    """The change's whole diff: from the local mirror when the stored one was cut short."""
    from orchestrator_assets.cli.review import _full_diff

    if change is None:
        return ""
    return _full_diff(change) or change.diff


def target_page(request: Request) -> Response:
    """One target: diff (split or unified), review actions, verifiers, iterations, PR."""
    data = state(request)
    spec = data.spec(request.path_params["campaign"])
    view = data.target(spec, request.path_params["target"])
    layout = "unified" if request.query_params.get("view") == "unified" else "split"
    change = view.change
    files = parse_diff(change_diff(change)) if change and change.head_sha else []
    entries = timeline(change) if change is not None else []
    by_iteration: dict[int | None, list[TimelineEntry]] = {}
    for entry in entries:
        by_iteration.setdefault(entry.iteration, []).append(entry)
    iterations = [
        {"it": it, "files": parse_diff(it.diff), "entries": by_iteration.get(it.number, [])}
        for it in (change.iterations if change else [])
    ]
    return render(
        request,
        "target.html",
        spec=spec,
        view=view,
        change=change,
        files=files,
        layout=layout,
        iterations=iterations,
        session=[e for e in entries if e.iteration is None],
        verification=view.current_verification or view.verification,
    )
