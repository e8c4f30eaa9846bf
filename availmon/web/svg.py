"""Inline SVG: shields-style badges and response-time sparklines. Pure string building; every
piece of text is XML-escaped."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

# shields.io's colours
COLOURS = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "blue": "#007ec6",
    "lightgrey": "#9f9f9f",
}
STATUS_COLOURS = {
    "UP": "brightgreen",
    "DEGRADED": "yellow",
    "DOWN": "red",
    "MAINTENANCE": "blue",
    "UNKNOWN": "lightgrey",
}
_NARROW = set("fijlrtI1.,:;!'|()[] ")
_WIDE = set("mwMW@%")


def text_width(text: str) -> float:
    """Approximate width in px of `text` in 11 px Verdana (what the badge is drawn in)."""
    width = 0.0
    for ch in text:
        if ch in _NARROW:
            width += 4.2
        elif ch in _WIDE:
            width += 10.5
        elif ch.isupper() or ch.isdigit():
            width += 7.4
        else:
            width += 6.6
    return width


def uptime_colour(availability: float | None) -> str:
    if availability is None:
        return "lightgrey"
    if availability >= 0.999:
        return "brightgreen"
    if availability >= 0.99:
        return "green"
    if availability >= 0.95:
        return "yellow"
    if availability >= 0.90:
        return "orange"
    return "red"


def badge(label: str, message: str, colour: str) -> str:
    """A flat shields-style badge: grey label, coloured message, 20 px high."""
    fill = COLOURS.get(colour, colour)
    left = round(text_width(label) + 10)
    right = round(text_width(message) + 10)
    total = left + right
    title = escape(f"{label}: {message}")
    lx, rx = left / 2, left + right / 2

    def text(x: float, value: str) -> str:
        v = escape(value)
        return (
            f'<text x="{x:.1f}" y="15" fill="#010101" fill-opacity=".3">{v}</text>'
            f'<text x="{x:.1f}" y="14">{v}</text>'
        )

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f"aria-label={quoteattr(f'{label}: {message}')}><title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{fill}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f"{text(lx, label)}{text(rx, message)}</g></svg>"
    )


def sparkline(
    values: Sequence[float | None], title: str, width: int = 120, height: int = 24
) -> str:
    """A line through the values (gaps where None), scaled from 0 to the highest value."""
    head = (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f"aria-label={quoteattr(title)}><title>{escape(title)}</title>"
    )
    known = [v for v in values if v is not None]
    if not known:
        return head + "</svg>"
    top = max(known) or 1.0
    step = (width - 4) / max(len(values) - 1, 1)
    parts: list[str] = []
    pen_down = False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        x = 2 + i * step
        y = height - 2 - value / top * (height - 4)
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
        pen_down = True
        if i + 1 == len(values) or values[i + 1] is None:
            parts.append("h0.01")  # a lone point still shows, as a dot (round caps)
    return head + f'<path d="{"".join(parts)}"/></svg>'
