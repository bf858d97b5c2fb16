"""Charts of results as PNG files (matplotlib, no display needed).

- :func:`quality_chart`: every model's NDCG and R-precision per challenge category, and warm vs
  cold hidden tracks — from the JSON of ``llarapp benchmark quality`` or of the pipeline's
  evaluate stage (``{"models": {NAME: {"categories", "warm", "cold", ...}}}``);
- :func:`latency_histogram`: request latencies of ``llarapp benchmark serving``, per run;
- :func:`scale_chart`: log-log cost curves of ``llarapp benchmark scale``;
- :func:`png_img_tag`: a PNG as an ``<img>`` with the bytes inline (the KFP UI shows an HTML
  artifact on its own, without the files beside it).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from llarapp.data.split import CATEGORY_NAMES

QUALITY_METRICS = ("ndcg", "r_precision")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in a container
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: Path | str) -> Path:
    """Write ``fig`` as a PNG to ``out`` (folders created) and free it; returns the path."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _bars(ax, groups: Sequence[str], values: Mapping[str, Sequence[float]], title: str) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per model in ``values``."""
    x = np.arange(len(groups))
    width = 0.8 / max(len(values), 1)
    for i, (name, vals) in enumerate(values.items()):
        ax.bar(x + (i - (len(values) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, [g.replace("_", " ") for g in groups], rotation=30, ha="right")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def quality_chart(result: Mapping, out: Path | str, title: str | None = None) -> Path:
    """Bar charts of every model: NDCG and R-precision per challenge category, then NDCG on
    warm and recall@500 on cold hidden tracks. Writes a PNG to ``out``; returns its path.

    Raises:
        ValueError: ``result`` has no models.
    """
    models = result.get("models") or {}
    if not models:
        raise ValueError("quality chart: the result has no models; expected {'models': {...}}")
    cats = [c for c in CATEGORY_NAMES if any(c in r["categories"] for r in models.values())]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [4, 4, 2]})
    for ax, metric in zip(axes, QUALITY_METRICS, strict=False):
        values = {
            name: [r["categories"].get(c, {}).get(metric, np.nan) for c in cats]
            for name, r in models.items()
        }
        _bars(ax, cats, values, f"{metric.replace('_', '-')} per challenge category")
    warm_cold = {
        name: [r["warm"].get("ndcg", np.nan), r["cold"].get("recall@500", 0.0)]
        for name, r in models.items()
    }
    _bars(axes[2], ["warm: ndcg", "cold: recall@500"], warm_cold, "warm vs cold tracks")
    axes[0].legend(fontsize=8, loc="upper left")
    cases = (result.get("dataset") or {}).get("test_cases")
    fig.suptitle(title or (f"quality on {cases} test cases" if cases else "quality"))
    return _save(plt, fig, out)


def latency_histogram(
    latencies_ms: Mapping[str, Sequence[float]], out: Path | str, title: str = "latency"
) -> Path:
    """Overlaid histograms of request latencies (ms), one per run (e.g. ``concurrency 1``),
    with each run's p50 / p95 in the legend. Writes a PNG to ``out``; returns its path.

    Raises:
        ValueError: no latencies at all.
    """
    runs = {name: np.asarray(v, dtype=float) for name, v in latencies_ms.items() if len(v)}
    if not runs:
        raise ValueError("latency histogram: no latencies to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = max(float(np.percentile(v, 99.5)) for v in runs.values())
    bins = np.linspace(0, top * 1.05, 50)
    for name, v in runs.items():
        p50, p95 = np.percentile(v, [50, 95])
        ax.hist(np.minimum(v, bins[-1]), bins=bins, alpha=0.55,
                label=f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms (n={len(v)})")  # fmt: skip
    ax.set_xlabel("latency per request, ms (the slowest 0.5 % in the last bin)")
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def png_img_tag(png: Path | str, alt: str) -> str:
    """``<img src="data:image/png;base64,...">``: the picture inside the HTML itself."""
    import html

    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f'<img alt="{html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}">'
    )


def scale_chart(result: Mapping, out: Path | str) -> Path:
    """Log-log cost curves of ``llarapp benchmark scale``: wall time per stage, memory, and
    serving latency against playlists; measured points filled and joined, extrapolated ones
    hollow on a dashed line. Writes a PNG to ``out``; returns its path.

    Raises:
        ValueError: no metric has a value.
    """
    panels = (("s", "wall time per stage, s"), ("MiB", "memory, MiB"), ("ms", "latency, ms"))
    metrics = [m for m in result.get("metrics", {}).values() if m["values"]]
    if not metrics:
        raise ValueError("scale chart: the result has no values")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for ax, (unit, title) in zip(axes, panels, strict=True):
        for i, m in enumerate(x for x in metrics if x["unit"] == unit):
            points = sorted((int(n), v["value"], v["source"]) for n, v in m["values"].items())
            points = [p for p in points if p[1] > 0]
            if not points:
                continue
            color = f"C{i % 10}"
            label = m["label"] + (f" (b={m['exponent']:.2f})" if m["exponent"] is not None else "")
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, color=color, linestyle=":", alpha=0.6)
            done = [(x, y) for x, y, s in points if s == "measured"]
            if done:
                ax.plot(*zip(*done, strict=True), color=color, marker="o", label=label)
            extra = [(x, y) for x, y, s in points if s != "measured"]
            if extra:
                ax.plot(*zip(*extra, strict=True), color=color, marker="o", linestyle="none",
                        markerfacecolor="none", label=None if done else label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("playlists")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("cost curves (filled: measured; hollow: extrapolated from the fitted exponent b)")
    return _save(plt, fig, out)
