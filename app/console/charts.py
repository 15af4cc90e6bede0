"""Charts as inline SVG, drawn on the server: no chart library, nothing to download, no script.

Only presentation attributes and classes are used (no ``style=``), so the console's
Content-Security-Policy needs no ``'unsafe-inline'`` for styles either.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

# The evidence a chart compares, on a 0-100 scale, in reading order.
EVIDENCE_METRICS = ("FA", "RA", "TA", "MIA_entropy", "MIA_efficacy")
SERIES = ("original", "unlearned", "retrained")


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def evidence_chart(metrics: dict[str, dict[str, float]]) -> Markup | None:
    """Grouped bars: each metric, for the original, the unlearned and (when run) the retrained
    model. Each bar carries its value as text and a <title>, so it reads without colour."""
    series = [s for s in SERIES if isinstance(metrics.get(s), dict)]
    names = [m for m in EVIDENCE_METRICS if any(m in metrics[s] for s in series)]
    if not series or not names:
        return None
    bar, gap, left, top, height = 28, 20, 44, 16, 200
    group = bar * len(series) + gap
    width = left + group * len(names) + 8
    legend_y = top + height + 44
    parts = [
        f'<svg class="chart evidence" role="img" viewBox="0 0 {width} {legend_y + 20}"'
        f' width="{width}" height="{legend_y + 20}" aria-labelledby="evidence-title">',
        '<title id="evidence-title">Evidence: original vs unlearned'
        + (" vs retrained" if "retrained" in series else "")
        + " (percent)</title>",
    ]
    for tick in (0, 25, 50, 75, 100):
        y = top + height - tick * height / 100
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    for gi, name in enumerate(names):
        x0 = left + gi * group + gap / 2
        for si, s in enumerate(series):
            value = metrics[s].get(name)
            if value is None:
                continue
            v = max(0.0, min(100.0, float(value)))
            h = v * height / 100
            x, y = x0 + si * bar, top + height - h
            parts.append(
                f'<g class="bar {s}" data-series="{s}" data-metric="{escape(name)}">'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 3}" height="{h:.1f}">'
                f"<title>{escape(name)}, {s}: {_fmt(float(value))}</title></rect>"
                f'<text class="value" x="{x + (bar - 3) / 2:.1f}" y="{y - 3:.1f}"'
                f' text-anchor="middle">{float(value):.0f}</text></g>'
            )
        parts.append(
            f'<text class="label" x="{x0 + bar * len(series) / 2:.1f}" y="{top + height + 16}"'
            f' text-anchor="middle">{escape(name)}</text>'
        )
    for si, s in enumerate(series):
        x = left + si * 110
        parts.append(
            f'<g class="legend {s}"><rect x="{x}" y="{legend_y - 10}" width="12" height="12"/>'
            f'<text x="{x + 16}" y="{legend_y}">{s}</text></g>'
        )
    parts.append("</svg>")
    # Every value above is a number, a constant of this module, or passed through escape().
    return Markup("".join(parts))  # noqa: S704


@dataclass(frozen=True)
class Node:
    id: str
    version: int
    parent_id: str | None
    status: str
    verdict: str | None
    requests: int
    href: str


def lineage_graph(nodes: list[Node], head_id: str) -> Markup:
    """Versions left to right by number; a version that is not its parent's first child opens
    a new row, so a branch (a request built on an uncertified version) is visible."""
    w, h, dx, dy = 150, 64, 190, 90
    row: dict[str, int] = {}
    taken: set[str] = set()
    rows = 0
    for n in sorted(nodes, key=lambda n: n.version):
        if n.parent_id is not None and n.parent_id in row and n.parent_id not in taken:
            row[n.id] = row[n.parent_id]
            taken.add(n.parent_id)
        else:
            row[n.id] = rows
            rows += 1
    col = {n.id: i for i, n in enumerate(sorted(nodes, key=lambda n: n.version))}
    width = max(1, len(nodes)) * dx
    height = rows * dy + 10
    parts = [
        f'<svg class="chart lineage" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" aria-labelledby="lineage-title">',
        '<title id="lineage-title">Lineage: versions, their parents and verdicts</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    pos = {n.id: (10 + col[n.id] * dx, 10 + row[n.id] * dy) for n in nodes}
    for n in nodes:
        if n.parent_id in pos:
            px, py = pos[n.parent_id]
            x, y = pos[n.id]
            parts.append(
                f'<line class="edge" x1="{px + w}" y1="{py + h / 2}" x2="{x}" y2="{y + h / 2}"'
                ' marker-end="url(#arrow)"/>'
            )
    for n in nodes:
        x, y = pos[n.id]
        verdict = n.verdict or ("uploaded" if n.parent_id is None else "no certificate")
        head = " head" if n.id == head_id else ""
        parts.append(
            f'<a href="{escape(n.href)}" class="node-link">'
            f'<g class="node status-{escape(n.status)}{head}" data-version="{n.version}"'
            f' data-status="{escape(n.status)}">'
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>'
            f'<text x="{x + 8}" y="{y + 18}" class="title">v{n.version}'
            f"{' (head)' if head else ''}</text>"
            f'<text x="{x + 8}" y="{y + 36}">{escape(n.status)} · {escape(verdict)}</text>'
            f'<text x="{x + 8}" y="{y + 54}">{n.requests} request(s)</text>'
            f"<title>version {n.version}: {escape(n.status)}, {escape(verdict)}</title></g></a>"
        )
    parts.append("</svg>")
    # Every value above is a number, a constant of this module, or passed through escape().
    return Markup("".join(parts))  # noqa: S704
