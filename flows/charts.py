"""Small inline SVG charts for the readiness report: no library, no script, no fetch.

A chart is one ``<svg>``: axes, the measured series as a ``<path>``, the target (RTO,
RPO) as a dashed ``<path>``, a red dot for each verification that did not pass (and, in
a short series, a dot for each that did).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from restoredrill.durations import format_duration

W, H = 340, 130
DOTS = 60
"""Up to this many samples each gets a dot (a single run shows); beyond, only failures."""
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 18, 22


@dataclass(frozen=True)
class Sample:
    at: datetime
    value: float | None
    ok: bool


def line_chart(
    title: str,
    samples: Sequence[Sample],
    target: float | None,
    start: datetime,
    end: datetime,
    *,
    target_label: str = "target",
) -> Markup:
    """Values over time against a target line (seconds, shown as durations)."""
    values = [s.value for s in samples if s.value is not None]
    top = max([*values, target or 0.0, 1.0]) * 1.1
    span = max((end - start).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return LEFT + (W - LEFT - RIGHT) * min(max((at - start).total_seconds() / span, 0), 1)

    def y(value: float) -> float:
        return H - BOTTOM - (H - TOP - BOTTOM) * value / top

    parts = [
        f'<svg class="chart" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="12" class="t">{escape(title)}</text>',
        f'<path class="axis" d="M{LEFT} {TOP}V{H - BOTTOM}H{W - RIGHT}"/>',
    ]
    for value in (0.0, top / 1.1 / 2, top / 1.1):
        parts.append(
            f'<text x="{LEFT - 4}" y="{y(value) + 3:.1f}" class="l" text-anchor="end">'
            f"{escape(format_duration(value))}</text>"
        )
    parts.append(f'<text x="{LEFT}" y="{H - 6}" class="l">{start:%Y-%m-%d}</text>')
    parts.append(
        f'<text x="{W - RIGHT}" y="{H - 6}" class="l" text-anchor="end">{end:%Y-%m-%d}</text>'
    )
    if target:
        parts.append(
            f'<path class="target" d="M{LEFT} {y(target):.1f}H{W - RIGHT}"><title>'
            f"{escape(target_label)} {escape(format_duration(target))}</title></path>"
        )
    series = _path([(x(s.at), y(s.value)) if s.value is not None else None for s in samples])
    if series:
        parts.append(f'<path class="series" d="{series}"/>')
    parts.extend(_marks(samples, x, y))
    if not samples:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" class="l" text-anchor="middle">no runs</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _marks(
    samples: Sequence[Sample], x: Callable[[datetime], float], y: Callable[[float], float]
) -> list[str]:
    """A red mark on each sample not passed; a dot on each value when there are few."""
    marks = []
    dots = len(samples) <= DOTS
    for s in samples:
        value = s.value if s.value is not None else 0.0
        if not s.ok:
            marks.append(
                f'<circle class="bad" cx="{x(s.at):.1f}" cy="{y(value):.1f}" r="2.5"><title>'
                f"{s.at:%Y-%m-%d %H:%M} not passed</title></circle>"
            )
        elif dots and s.value is not None:
            marks.append(
                f'<circle class="dot" cx="{x(s.at):.1f}" cy="{y(value):.1f}" r="2"><title>'
                f"{s.at:%Y-%m-%d %H:%M} {escape(format_duration(s.value))}</title></circle>"
            )
    return marks


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through the points; a gap where a value is missing."""
    out, pen = [], "M"
    for point in points:
        if point is None:
            pen = "M"
            continue
        out.append(f"{pen}{point[0]:.1f} {point[1]:.1f}")
        pen = "L"
    return "".join(out)
