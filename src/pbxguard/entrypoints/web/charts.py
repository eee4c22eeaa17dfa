"""Server-rendered SVG charts that read in print: black text, outlined bars, hatching by series.

No script, no web font: plain SVG the browser (and its print view) draws as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape

_WIDTH, _HEIGHT = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 48
_FILLS = ("#4a4a4a", "#9a9a9a", "#d0d0d0", "#ffffff", "#6f6f6f", "#b8b8b8")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _frame(title: str, body: list[str], peak: float) -> str:
    plot_h = _HEIGHT - _TOP - _BOTTOM
    ticks = []
    for i in range(5):
        value = peak * i / 4
        y = _TOP + plot_h - plot_h * i / 4
        ticks.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
            'stroke="#ccc" stroke-width="0.5"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{_number(value)}</text>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="100%" class="chart"><title>{escape(title)}</title>'
        f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="#fff"/>'
        + "".join(ticks)
        + "".join(body)
        + f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - _RIGHT}" '
        f'y2="{_TOP + plot_h}" stroke="#000"/></svg>'
    )


def bar_chart(title: str, values: Mapping[str, float | Decimal | int]) -> str:
    """Return one bar per label, its value written above it."""
    labels = list(values)
    peak = max([float(v) for v in values.values()] + [1.0])
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(labels), 1)
    body = []
    for i, label in enumerate(labels):
        value = float(values[label])
        h = plot_h * value / peak
        x = _LEFT + i * step + step * 0.15
        y = _TOP + plot_h - h
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
            f'fill="{_FILLS[0]}" stroke="#000"/>'
            f'<text x="{x + step * 0.35:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
            f'font-size="11">{_number(value)}</text>'
            f'<text x="{x + step * 0.35:.1f}" y="{_HEIGHT - _BOTTOM + 16}" '
            f'text-anchor="middle" font-size="11">{escape(label)}</text>'
        )
    return _frame(title, body, peak)


def grouped_bar_chart(
    title: str, groups: Sequence[str], series: Mapping[str, Mapping[str, float | Decimal]]
) -> str:
    """Return bars per group (month) and series (department), with a legend."""
    names = list(series)
    peak = max([float(v) for s in series.values() for v in s.values()] + [1.0])
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(groups), 1)
    width = step * 0.8 / max(len(names), 1)
    body = []
    for g, group in enumerate(groups):
        for n, name in enumerate(names):
            value = float(series[name].get(group, 0))
            h = plot_h * value / peak
            x = _LEFT + g * step + step * 0.1 + n * width
            body.append(
                f'<rect x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" width="{width:.1f}" '
                f'height="{h:.1f}" fill="{_FILLS[n % len(_FILLS)]}" stroke="#000">'
                f"<title>{escape(name)} {escape(group)}: {_number(value)}</title></rect>"
            )
        body.append(
            f'<text x="{_LEFT + g * step + step / 2:.1f}" y="{_HEIGHT - _BOTTOM + 16}" '
            f'text-anchor="middle" font-size="11">{escape(group[2:])}</text>'
        )
    for n, name in enumerate(names):
        x = _LEFT + n * 120
        body.append(
            f'<rect x="{x}" y="{_HEIGHT - 18}" width="10" height="10" '
            f'fill="{_FILLS[n % len(_FILLS)]}" stroke="#000"/>'
            f'<text x="{x + 14}" y="{_HEIGHT - 9}" font-size="11">{escape(name)}</text>'
        )
    return _frame(title, body, peak)


def line_chart(title: str, points: Mapping[str, float | Decimal]) -> str:
    """Return a line through the points (a balance over months), each value labelled."""
    labels = list(points)
    peak = max([float(v) for v in points.values()] + [1.0])
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(labels), 1)
    coords = []
    body = []
    for i, label in enumerate(labels):
        value = float(points[label])
        x = _LEFT + i * step + step / 2
        y = _TOP + plot_h - plot_h * value / peak
        coords.append(f"{x:.1f},{y:.1f}")
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#000"/>'
            f'<text x="{x:.1f}" y="{y - 6:.1f}" text-anchor="middle" font-size="11">'
            f"{_number(value)}</text>"
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11">{escape(label[2:])}</text>'
        )
    body.insert(
        0, f'<polyline points="{" ".join(coords)}" fill="none" stroke="#000" stroke-width="2"/>'
    )
    return _frame(title, body, peak)
