"""Methods at equal cost: per MACs target or measured latency target (structured) or sparsity (masks),
each method's one-shot, recalibrated and recovered top-1, ranked after recovery with its tie group
(:mod:`pruners.ranking`), and its paired differences from the best method and from ``random`` over images
and seeds."""

from __future__ import annotations

from collections.abc import Sequence

from .ranking import pair, rank, signed, tie_lines
from .report import CONTROL, ReportRow, latency_size_label
from .tables import markdown_table

# The reference mask methods are paired against at the same sparsity.
MASK_CONTROL = "random_unstructured"


def _ranked(title: str, rows: Sequence[ReportRow], control: str, cost: tuple[str, ...]) -> str:
    standings = rank(rows, control)
    by_method = {r.method: r for r in rows}
    ref = by_method.get(control)
    header = (
        "group",
        "method",
        *cost,
        "one-shot",
        "recalibrated",
        "recovered ± SE",
        "Δ vs best, recovered",
        f"Δ vs {control}, recovered",
        f"Δ vs {control}, recalibrated",
        f"latency x{latency_size_label(rows)}",
    )
    cells = []
    for s in standings:
        r = by_method[s.method]
        cells.append(
            (
                str(s.group),
                r.method,
                *((f"{r.ratio:.3f}", f"{r.macs_speedup:.2f}") if len(cost) == 2 else (f"{r.ratio:g}",)),
                f"{r.one_shot_top1:.2f}",
                _top1(r.recalibrated_top1),
                f"{r.pruned_top1:.2f} ± {r.recovered_se:.2f}",
                signed(s.vs_best),
                signed(s.vs_random),
                signed(pair(r, ref, "recalibrated")) if ref is not None and r is not ref else "-",
                "-" if r.measured_speedup is None else f"{r.measured_speedup:.2f}",
            )
        )
    groups = "\n".join(tie_lines(standings, control if ref is not None else None))
    return f"{title}\n\n{markdown_table(header, cells)}\n\nTie groups after recovery:\n\n{groups}"


def equal_cost_tables(rows: Sequence[ReportRow]) -> str:
    """Markdown: per model and MACs target, every structured method at equal cost, ranked after recovery
    and paired against the best and against :data:`CONTROL` at the same target (``Δ``: positive when the
    method keeps more top-1, ± its paired SE over images and seeds), with the tie groups named; then the
    mask methods apart, at equal sparsity, paired against :data:`MASK_CONTROL`."""
    parts = []
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model]
        for target in sorted({r.target_speedup for r in mine if r.target_speedup}):
            at = [r for r in mine if r.target_speedup == target]
            title = f"### {model} at {target:g}x fewer MACs"
            parts.append(_ranked(title, at, CONTROL, ("ratio found", "MACs x")))
        for target in sorted({r.target_latency for r in mine if r.target_latency}):
            at = [r for r in mine if r.target_latency == target]
            title = f"### {model} at {target:g}x measured latency ({_where(at)})"
            parts.append(_ranked(title, at, CONTROL, ("ratio found", "MACs x")))
        masks = [r for r in mine if r.kind != "structured"]
        if masks and any(r.target_speedup for r in mine):
            for sparsity in sorted({r.ratio for r in masks}):
                title = f"### {model}: mask methods at sparsity {sparsity:g} (no MACs target: dense kernels)"
                at = [r for r in masks if r.ratio == sparsity]
                parts.append(_ranked(title, at, MASK_CONTROL, ("sparsity",)))
    return "\n\n".join(parts) + "\n" if parts else ""


def _where(rows: Sequence[ReportRow]) -> str:
    """Where a latency target was measured: ``onnxruntime at 224 px`` (each place, where rows differ)."""
    places = []
    for row in rows:
        search = row.target_latency_search
        size = f" at {search['size']} px" if search.get("size") else " at the workload's size"
        places.append(f"{search.get('runtime', 'eager')}{size}")
    return "; ".join(dict.fromkeys(places))


def _top1(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
