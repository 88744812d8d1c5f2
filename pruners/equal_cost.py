"""Methods at equal cost: per MACs target (structured) or sparsity (masks), each method's one-shot,
recalibrated and recovered top-1, and its paired difference from ``random`` over images and seeds."""

from __future__ import annotations

from collections.abc import Sequence

from .gate import Verdict, paired_difference
from .report import CONTROL, ReportRow, latency_size_label
from .tables import markdown_table


def pair(
    first: ReportRow, second: ReportRow, which: str = "recovered", second_which: str | None = None
) -> Verdict | None:
    """``first``'s ``which`` model (``"dense"``, ``"recalibrated"`` or ``"recovered"``) minus ``second``'s
    ``second_which`` model (default: the same) in top-1 points, paired on the same held-out images over the
    seeds both ran; ``None`` without shared saved vectors. ``pair(row, row, "dense", "recalibrated")``
    pairs two models of one case."""
    second_which = second_which or which
    seeds = [
        s
        for s in sorted(first.correct.keys() & second.correct.keys())
        if which in first.correct[s] and second_which in second.correct[s]
    ]
    if not seeds or any(len(first.correct[s][which]) != len(second.correct[s][second_which]) for s in seeds):
        return None
    return paired_difference(
        [first.correct[s][which] for s in seeds], [second.correct[s][second_which] for s in seeds]
    )


def _signed(verdict: Verdict | None) -> str:
    return "-" if verdict is None else f"{verdict.mean_drop:+.2f} ± {verdict.noise:.2f}"


def equal_cost_tables(rows: Sequence[ReportRow]) -> str:
    """Markdown: per model and MACs target, every structured method at equal cost, paired against
    :data:`CONTROL` at the same target (``Δ vs random``: positive when the method keeps more top-1, ± its
    paired SE over images and seeds); then the mask methods apart, at equal sparsity."""
    parts = []
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model]
        for target in sorted({r.target_speedup for r in mine if r.target_speedup}):
            at = sorted((r for r in mine if r.target_speedup == target), key=lambda r: r.method)
            control = next((r for r in at if r.method == CONTROL), None)
            header = (
                "method",
                "ratio found",
                "MACs x",
                "one-shot",
                "recalibrated",
                "recovered ± SE",
                "Δ vs random, recalibrated",
                "Δ vs random, recovered",
                f"latency x{latency_size_label(at)}",
            )
            cells = []
            for r in at:
                against = control is not None and r is not control
                cells.append(
                    (
                        r.method,
                        f"{r.ratio:.3f}",
                        f"{r.macs_speedup:.2f}",
                        f"{r.one_shot_top1:.2f}",
                        _top1(r.recalibrated_top1),
                        f"{r.pruned_top1:.2f} ± {r.recovered_se:.2f}",
                        _signed(pair(r, control, "recalibrated")) if against else "-",
                        _signed(pair(r, control)) if against else "-",
                        f"{r.measured_speedup:.2f}",
                    )
                )
            parts.append(f"### {model} at {target:g}x fewer MACs\n\n" + markdown_table(header, cells))
        masks = sorted((r for r in mine if r.kind != "structured"), key=lambda r: (r.ratio, r.method))
        if masks and any(r.target_speedup for r in mine):
            header = (
                "method",
                "sparsity",
                "one-shot",
                "recalibrated",
                "recovered ± SE",
                f"latency x{latency_size_label(masks)}",
            )
            cells = [
                (
                    r.method,
                    f"{r.ratio:g}",
                    f"{r.one_shot_top1:.2f}",
                    _top1(r.recalibrated_top1),
                    f"{r.pruned_top1:.2f} ± {r.recovered_se:.2f}",
                    f"{r.measured_speedup:.2f}",
                )
                for r in masks
            ]
            title = f"### {model}: mask methods at equal sparsity (no MACs target: dense kernels)\n\n"
            parts.append(title + markdown_table(header, cells))
    return "\n\n".join(parts) + "\n" if parts else ""


def _top1(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
