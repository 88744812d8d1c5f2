"""Plots of a report: a Pareto plot of recovered top-1 against measured latency per model, and the operating
curves (top-1 against MACs speedup) of each method."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure

from .ranking import pair
from .report import CONTROL, ReportRow, latency_size_label


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(latency, top1)`` points no other point beats on both (as fast or faster and at least as
    accurate, better on one), sorted by latency."""
    front: list[tuple[float, float]] = []
    for latency, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or top1 > front[-1][1]:
            front.append((latency, top1))
    return front


# One marker per method or case, cycled.
MARKERS = "osD^vP*Xhp<>"


def _png(fig: Figure, legend_ax) -> bytes:
    """``fig`` as PNG bytes, the legend of ``legend_ax`` to its right."""
    legend_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_model(model: str, rows: Sequence[ReportRow]) -> bytes:
    """PNG of ``model``'s cases: recovered top-1 against measured pruned latency, one marker per method and
    ratio, the dense baseline as a star, the Pareto front as a step line."""
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        ax.scatter(
            row.latency_pruned_ms,
            row.pruned_top1,
            marker=MARKERS[i % len(MARKERS)],
            s=45,
            label=f"{row.method} @ {row.cost}",
        )
    dense_latency = sorted(row.latency_dense_ms for row in rows)[len(rows) // 2]
    dense_top1 = sorted(row.dense_top1 for row in rows)[len(rows) // 2]
    ax.scatter(dense_latency, dense_top1, marker="*", s=220, c="black", label="dense (median of cases)")
    front = pareto_front([(r.latency_pruned_ms, r.pruned_top1) for r in rows] + [(dense_latency, dense_top1)])
    ax.step(*zip(*front, strict=True), where="post", c="grey", lw=1, ls="--", label="Pareto front")
    xlabel = f"pruned latency (ms, median{latency_size_label(rows)})"
    ax.set(xlabel=xlabel, ylabel="recovered top-1 (%)", title=model)
    ax.grid(alpha=0.3)
    return _png(fig, ax)


def front_methods(rows: Sequence[ReportRow]) -> list[str]:
    """``method @ ratio`` of the cases on the Pareto front of ``rows`` (one model), fastest first."""
    front = set(pareto_front([(r.latency_pruned_ms, r.pruned_top1) for r in rows]))
    on_front = [r for r in rows if (r.latency_pruned_ms, r.pruned_top1) in front]
    return [f"{r.method} @ {r.cost}" for r in sorted(on_front, key=lambda r: r.latency_pruned_ms)]


def recalibrated_se(row: ReportRow) -> float:
    """Paired SE of ``row``'s recalibrated top-1 against its dense model (0 without saved vectors)."""
    verdict = pair(row, row, "dense", "recalibrated")
    return 0.0 if verdict is None else verdict.noise


def plot_curves(model: str, rows: Sequence[ReportRow]) -> bytes:
    """PNG of ``model``'s operating curves, one line per structured method over its MACs targets, the
    dense model as a star at 1x: recovered top-1 (paired SE as error bars) against MACs x and against
    measured latency x, and the BatchNorm-recalibrated top-1 without fine-tuning against MACs x."""
    fig = Figure(figsize=(15, 4.5), dpi=110)
    axes = fig.subplots(1, 3)
    targeted = [r for r in rows if r.target_speedup]
    dense_top1 = sorted(r.dense_top1 for r in targeted)[len(targeted) // 2]
    panels = (
        (axes[0], "macs_speedup", "pruned_top1", lambda r: r.recovered_se, "recovered top-1 (%)"),
        (axes[1], "measured_speedup", "pruned_top1", lambda r: r.recovered_se, "recovered top-1 (%)"),
        (
            axes[2],
            "macs_speedup",
            "recalibrated_top1",
            recalibrated_se,
            "BN-recalibrated top-1, no fine-tune (%)",
        ),
    )
    for i, method in enumerate(sorted({r.method for r in targeted})):
        line = sorted((r for r in targeted if r.method == method), key=lambda r: r.target_speedup)
        for ax, x, y, se, _ in panels:
            if any(getattr(r, y) is None for r in line):
                continue
            ax.errorbar(
                [getattr(r, x) for r in line],
                [getattr(r, y) for r in line],
                yerr=[se(r) for r in line],
                marker=MARKERS[i % len(MARKERS)],
                color=colormaps["tab20"](i % 20),
                capsize=3,
                lw=1.2,
                ls="--" if method == CONTROL else "-",
                label=method,
            )
    xlabels = (
        "MACs x (dense / pruned)",
        f"measured latency x (dense / pruned{latency_size_label(targeted)})",
        "MACs x (dense / pruned)",
    )
    for (ax, _, _, _, ylabel), xlabel in zip(panels, xlabels, strict=True):
        ax.scatter([1.0], [dense_top1], marker="*", s=220, c="black", zorder=5, label="dense")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=model)
        ax.grid(alpha=0.3)
    return _png(fig, axes[2])
