"""A laboratory series as an inline SVG line plot: values over time, the reference range as
a band, chemotherapy days as dashed lines. Drawn on the server (no script in the page);
presentation attributes only, since the page's CSP allows no inline style."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup

from hub.web.case_view import LabSeries

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40
LINE = "#0b5394"
BAND = "#d8ead3"
MARKER = "#7a4f01"
AXIS = "#4a5563"


def lab_plot(
    series: LabSeries, chemotherapy: Sequence[tuple[datetime, str]], plot_id: str
) -> Markup:
    points = series.points
    start, end = points[0].when, points[-1].when
    span = (end - start).total_seconds() or 1.0
    values = [p.value for p in points] + [v for v in (series.low, series.high) if v is not None]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad

    def x(moment: datetime) -> float:
        return LEFT + (moment - start).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM)

    title = f"{series.label} ({series.unit})" if series.unit else series.label
    description = "; ".join(f"{p.day}: {p.value:g}" for p in points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-labelledby="{plot_id}-title {plot_id}-desc">',
        f'<title id="{plot_id}-title">{escape(title)} over time</title>',
        f'<desc id="{plot_id}-desc">{escape(description)}</desc>',
    ]
    if series.low is not None and series.high is not None:
        top, bottom = y(series.high), y(series.low)
        parts.append(
            f'<rect x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}" '
            f'height="{bottom - top:.1f}" fill="{BAND}"/>'
        )
    for moment, _drug in chemotherapy:
        if start <= moment <= end:
            parts.append(
                f'<line x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="{TOP}" '
                f'y2="{HEIGHT - BOTTOM}" stroke="{MARKER}" stroke-dasharray="4 3"/>'
            )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{AXIS}"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="{AXIS}"/>'
    )
    for value in (low + pad, high - pad):
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="{AXIS}">{value:g}</text>'
        )
    ends = (
        ((points[0], "start"), (points[-1], "end")) if len(points) > 1 else ((points[0], "start"),)
    )
    for point, anchor in ends:
        parts.append(
            f'<text x="{x(point.when):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="{anchor}" '
            f'font-size="12" fill="{AXIS}">{point.day}</text>'
        )
    path = " ".join(f"{x(p.when):.1f},{y(p.value):.1f}" for p in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    parts += [
        f'<circle cx="{x(p.when):.1f}" cy="{y(p.value):.1f}" r="3.5" fill="{LINE}"/>'
        for p in points
    ]
    parts.append("</svg>")
    return Markup("".join(parts))
