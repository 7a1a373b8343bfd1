"""The campaigns page's charts as inline SVG: targets by stage over time, spend over time."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 420, 160, 28
SAMPLES = 60
STAGES = ("pending", "processed", "open", "merged", "closed")
COLORS = {
    "pending": "#d0d7de", "processed": "#54aeff", "open": "#f0ad4e", "merged": "#2da44e",
    "closed": "#8c959f",
}  # fmt: skip


def _times(start: float, end: float) -> list[float]:
    if end <= start:
        end = start + 1
    return [start + (end - start) * i / (SAMPLES - 1) for i in range(SAMPLES)]


def _x(t: float, start: float, end: float) -> float:
    return PAD + (WIDTH - 2 * PAD) * ((t - start) / ((end - start) or 1))


def _y(v: float, top: float) -> float:
    return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / (top or 1))


def _frame(start: float, end: float, top: float, label: str) -> str:
    fmt = "%m-%d %H:%M"
    first = datetime.fromtimestamp(start).strftime(fmt)
    last = datetime.fromtimestamp(end).strftime(fmt)
    bottom = HEIGHT - PAD
    return (
        f'<line x1="{PAD}" y1="{bottom}" x2="{WIDTH - PAD}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{bottom}" stroke="#888"/>'
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="10">{first}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">{last}</text>'
        f'<text x="{PAD + 4}" y="{PAD - 6}" font-size="10">{escape(label)}</text>'
        f'<text x="{PAD - 4}" y="{bottom}" font-size="10" text-anchor="end">0</text>'
    )


def burndown_svg(total: int, stages: list[tuple[float, str, str]], now: float) -> Markup:
    """Stacked areas: how many targets were pending, processed, with an open, merged or closed
    PR at each moment from the first recorded event until now."""
    if not stages:
        return Markup('<p class="muted">no targets processed yet</p>')
    start, end = stages[0][0], max(now, stages[-1][0])
    series: dict[str, list[int]] = {s: [] for s in STAGES}
    state: dict[str, str] = {}
    i = 0
    times = _times(start, end)
    for t in times:
        while i < len(stages) and stages[i][0] <= t:
            _, key, stage = stages[i]
            state[key] = stage
            i += 1
        counts = {s: 0 for s in STAGES}
        for stage in state.values():
            counts[stage] = counts.get(stage, 0) + 1
        counts["pending"] = max(total - len(state), 0)
        for s in STAGES:
            series[s].append(counts.get(s, 0))
    top = max(total, len(state), 1)
    shapes, below = [], [0] * len(times)
    for s in STAGES:
        above = [b + v for b, v in zip(below, series[s], strict=True)]
        upper = " ".join(
            f"{_x(t, start, end):.1f},{_y(v, top):.1f}" for t, v in zip(times, above, strict=True)
        )
        lower = " ".join(
            f"{_x(t, start, end):.1f},{_y(v, top):.1f}"
            for t, v in reversed(list(zip(times, below, strict=True)))
        )
        shapes.append(
            f'<polygon points="{upper} {lower}" fill="{COLORS[s]}"><title>{s}</title></polygon>'
        )
        below = above
    legend = "".join(
        f'<span class="legend"><i style="background:{COLORS[s]}"></i>{s} {series[s][-1]}</span>'
        for s in STAGES
    )
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="targets by stage over time">{"".join(shapes)}'
        f"{_frame(start, end, top, str(top))}</svg>"
    )
    return Markup(f"{svg}<div>{legend}</div>")


def cost_svg(spend: list[tuple[float, float]], budget: float | None, now: float) -> Markup:
    """The campaign's spend over time (a step line), with its budget as a dashed line."""
    if not spend:
        return Markup('<p class="muted">nothing spent yet</p>')
    start, end = spend[0][0], max(now, spend[-1][0])
    total, points = 0.0, []
    for at, cost in spend:
        if points:
            points.append((at, total))
        total += cost
        points.append((at, total))
    points.append((end, total))
    top = max(total, budget or 0.0) or 1.0
    path = " ".join(f"{_x(t, start, end):.1f},{_y(v, top):.1f}" for t, v in points)
    parts = [f'<polyline points="{path}" fill="none" stroke="#0969da" stroke-width="2"/>']
    if budget:
        y = _y(budget, top)
        parts.append(
            f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" stroke="#cf222e" '
            f'stroke-dasharray="4 3"><title>budget ${budget:.2f}</title></line>'
        )
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="spend over '
        f'time">{"".join(parts)}{_frame(start, end, top, f"${top:.2f}")}</svg>'
    )
    note = f"spent ${total:.4f}" + (f" of ${budget:.2f}" if budget else "")
    return Markup(f'{svg}<div class="muted">{note}</div>')
