"""The Grafana dashboard's panels drawn with matplotlib from a Prometheus' data.

``cqrs dashboard-png --prometheus URL`` (or the observability test) queries
``/api/v1/query_range`` for every target of deploy/grafana/dashboards/cqrs.json and
draws one chart per panel, so the picture in the docs shows what the dashboard shows
on a real run without a Grafana.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cqrs.prometheus import DASHBOARD, api

_COLUMNS = 3
_MAX_SERIES = 8  # per panel: the busiest ones; a legend of 60 methods helps nobody
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def render(
    url: str,
    out: Path,
    *,
    start: float,
    end: float | None = None,
    dashboard: Path = DASHBOARD,
) -> Path:
    """Draw every panel of ``dashboard`` over [start, end] (epoch seconds) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = end or time.time()
    step = max(1.0, (end - start) / 240)
    board = json.loads(dashboard.read_text())
    panels = [p for p in board["panels"] if p.get("type") != "row"]
    rows = -(-len(panels) // _COLUMNS)
    fig, axes = plt.subplots(rows, _COLUMNS, figsize=(6.2 * _COLUMNS, 3.3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        series = []
        for target in panel.get("targets", []):
            data = api(
                url,
                "/api/v1/query_range",
                query=target["expr"],
                start=str(start),
                end=str(end),
                step=str(step),
            )
            for result in data["result"]:
                values = [(float(t), float(v)) for t, v in result["values"]]
                label = _label(target.get("legendFormat", ""), result["metric"])
                series.append((label, values))
        series.sort(key=lambda s: -max((abs(v) for _, v in s[1] if v == v), default=0.0))
        for label, values in series[:_MAX_SERIES]:
            ax.plot(
                [datetime.fromtimestamp(t, UTC) for t, _ in values],
                [v * 100 if unit == "percentunit" else v for _, v in values],
                label=label,
                linewidth=1.2,
            )
        ax.set_title(panel["title"], fontsize=9)
        ax.set_ylabel(_UNITS.get(unit, unit), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{board['title']} — {len(panels)} panels from a real run", fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


_UNITS = {
    "reqps": "calls/s",
    "ops": "events/s",
    "s": "seconds",
    "percentunit": "%",
    "short": "",
}


def _label(legend: str, metric: dict[str, Any]) -> str:
    text = _LEGEND.sub(lambda m: str(metric.get(m.group(1), "")), legend).strip()
    text = text.replace("/shop.v1.", "").replace("/grpc.health.v1.", "")
    return text[:48] or str(metric)
