"""Reports of saved bench runs: a Markdown table, one accuracy-versus-latency Pareto plot per model, and one
self-contained HTML page with both. Runs at MACs targets (``--speedup``) also get one equal-cost table per
target, with every structured method paired against ``random`` on the same images, mask methods apart at
equal sparsity, and per model the operating curves: recovered top-1 against MACs x and latency x.

``prunebench report RUN.json [RUN2.json ...]`` reads pytest-benchmark JSON (``--benchmark-json`` or
``--benchmark-autosave``) and the ``extra_info`` every case records. Given several runs, the table shows the
last run and its change from the first, with regressions marked. Where a run was also timed at
``--latency-size``, its speedups, latency changes and plots use those figures, marked with the size.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from .files import write_atomic
from .gate import Verdict, decode_correct, paired_difference
from .matrix import Case
from .record import CaseRecord, RecordSchemaError
from .runtimes import RUNTIMES

# The control every structured method is paired against at the same MACs target.
CONTROL = "random"

# A later run regresses when a case's recovered top-1 falls by more than this many points, or its pruned
# latency grows by more than this fraction.
TOP1_REGRESSION = 1.0
LATENCY_REGRESSION = 0.10
# A baseline has plateaued when its last epoch gained at most this many held-out top-1 points.
PLATEAU_POINTS = 1.0


def plateaued(epoch_top1: Sequence[float]) -> bool | None:
    """Whether a baseline's last epoch gained at most :data:`PLATEAU_POINTS` of held-out top-1 over the
    one before; ``None`` when fewer than two epochs were recorded."""
    if len(epoch_top1) < 2:
        return None
    return epoch_top1[-1] - epoch_top1[-2] <= PLATEAU_POINTS


def dense_record(info: Mapping[str, object]) -> dict:
    """The dense baseline's and control's figures of one case, from its ``extra_info``: the part of its
    :class:`pruners.CaseRecord` that travels to the xdist controller for the convergence lines."""
    record = CaseRecord.from_extra_info(info)
    keys = ("model", "seeds", "dense_top1", "dense_control_top1", "control_gain", "control_gain_noise")
    return {k: getattr(record, k) for k in (*keys, "baseline_converged", "baseline_epoch_top1")}


def convergence_lines(records: Sequence[dict]) -> list[str]:
    """One line per model whose baseline the dense control beat by more than the noise allows: it was
    still learning, and the drops are judged against the control."""
    lines, seen = [], set()
    for r in records:
        if r["baseline_converged"] or r["model"] in seen:
            continue
        seen.add(r["model"])
        lines.append(
            f"prunebench: the {r['model']} baseline was still learning (seeds {r['seeds']}): the dense "
            f"control, fine-tuned with the recovery recipe, scores {r['dense_control_top1']:.2f}% against "
            f"its {r['dense_top1']:.2f}% (+{r['control_gain']:.2f} ± {r['control_gain_noise']:.2f} points). "
            "Drops are judged against the control; for a baseline worth pruning, train it longer (a recipe "
            "with more epochs), or pass --pretrained or --checkpoint"
        )
    return lines


@dataclass(frozen=True)
class ReportRow:
    """One case of one run, from its pytest-benchmark ``extra_info``. Where the run was also timed at
    ``--latency-size``, the latency figures are those (the size people deploy at, ``latency_img_size``)
    and ``workload_latency_ms`` keeps dense and pruned at the workload's own size."""

    model: str
    method: str
    ratio: float
    dense_top1: float
    one_shot_top1: float
    pruned_top1: float
    macs_dense: int
    macs_pruned: int
    params_dense: int
    params_pruned: int
    latency_dense_ms: float
    latency_pruned_ms: float
    passed: bool
    kind: str = "structured"
    target_speedup: float | None = None
    recalibrated_top1: float | None = None
    recovered_se: float = 0.0
    control_top1: float | None = None
    baseline_converged: bool | None = None
    baseline_epoch_top1: tuple[float, ...] = ()
    runtime_efficiency: dict[str, float] = field(default_factory=dict)
    latency_img_size: int = 0
    workload_latency_ms: tuple[float, float] | None = None
    baseline_fingerprint: str = ""
    decision_fingerprint: str = ""
    correct: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, float]:
        return self.model, self.method, self.target_speedup or self.ratio

    @property
    def cost(self) -> str:
        """The case's cost as the bench names it: ``2x`` (a MACs target) or the ratio."""
        return Case(self.model, self.method, self.ratio, self.target_speedup).cost

    @property
    def macs_speedup(self) -> float:
        return self.macs_dense / self.macs_pruned

    @property
    def measured_speedup(self) -> float:
        return self.latency_dense_ms / self.latency_pruned_ms

    @property
    def efficiency(self) -> float:
        """Measured speedup / MACs speedup: how much of the MACs cut the clock saw (1.0: all of it)."""
        return self.measured_speedup / self.macs_speedup


def load_run(path: Path) -> list[ReportRow]:
    """The cases of one pytest-benchmark JSON file; a file that is not one is a ``ValueError``."""
    try:
        benchmarks = json.loads(Path(path).read_text())["benchmarks"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file ({type(err).__name__}: {err})") from err
    rows = [
        row_from_info(bench.get("extra_info", {}), f"{path}: {bench.get('name')}") for bench in benchmarks
    ]
    if not rows:
        raise ValueError(f"{path} holds no benchmarks")
    return sorted(rows, key=lambda r: (r.model, r.method, r.target_speedup or 0.0, r.ratio))


def row_from_info(info: Mapping[str, object], name: str) -> ReportRow:
    """One :class:`ReportRow` from a case's ``extra_info`` (read as a :class:`pruners.CaseRecord`, of any
    schema it reads); ``name`` says which case in errors."""
    try:
        record = CaseRecord.from_extra_info(info)
    except (RecordSchemaError, TypeError) as err:
        raise ValueError(f"{name}: {err}") from None
    return row_from_record(record, name)


def row_from_record(record: CaseRecord, name: str) -> ReportRow:
    """One :class:`ReportRow` from ``record``; ``name`` says which case in errors."""
    latency = record.latency
    if "latency_dense_ms" not in latency:
        raise ValueError(f"{name} has no latency in extra_info (run without --benchmark-disable)")
    deploy = "latency_at_size" if "latency_at_size_dense_ms" in latency else "latency"
    return ReportRow(
        model=record.model,
        method=record.method,
        ratio=float(record.ratio),
        dense_top1=record.dense_top1,
        one_shot_top1=record.one_shot_top1,
        pruned_top1=record.recovered_top1,
        macs_dense=record.macs_dense,
        macs_pruned=record.macs_pruned,
        params_dense=record.params_dense,
        params_pruned=record.params_pruned,
        latency_dense_ms=latency[f"{deploy}_dense_ms"],
        latency_pruned_ms=latency[f"{deploy}_pruned_ms"],
        latency_img_size=int(latency.get(f"{deploy}_img_size", 0)),
        workload_latency_ms=(
            (latency["latency_dense_ms"], latency["latency_pruned_ms"])
            if deploy == "latency_at_size"
            else None
        ),
        passed=bool(record.passed),
        kind=record.kind,
        target_speedup=record.target_speedup,
        recalibrated_top1=record.recalibrated_top1,
        recovered_se=float(record.top1_drop_noise),
        control_top1=record.dense_control_top1,
        baseline_converged=record.baseline_converged,
        baseline_epoch_top1=tuple(record.baseline_epoch_top1),
        runtime_efficiency={
            key.removeprefix("latency_").removesuffix("_per_macs"): value
            for key, value in latency.items()
            if key.endswith("_per_macs")
        },
        baseline_fingerprint=record.baseline_fingerprint,
        decision_fingerprint=record.decision_fingerprint,
        correct=_seed_correct(name, record.per_seed),
    )


def decision_changes(first: Sequence[ReportRow], last: Sequence[ReportRow]) -> list[str]:
    """A line per case of both runs whose pruning decision changed while its baseline's weights did not
    ("same baseline, different decision": the method changed behaviour), then how many cases were not
    comparable (another baseline, or a run without fingerprints)."""
    before = {row.key: row for row in first}
    lines, other_baseline, unfingerprinted = [], 0, 0
    for row in last:
        old = before.get(row.key)
        if old is None:
            continue
        if not (old.decision_fingerprint and row.decision_fingerprint):
            unfingerprinted += 1
        elif old.baseline_fingerprint != row.baseline_fingerprint:
            other_baseline += 1
        elif old.decision_fingerprint != row.decision_fingerprint:
            lines.append(
                f"- `{row.model}` / `{row.method}` / {row.cost}: same baseline, different decision "
                f"({old.decision_fingerprint} -> {row.decision_fingerprint}; recovered top-1 "
                f"{old.pruned_top1:.2f} -> {row.pruned_top1:.2f})"
            )
    if not lines:
        lines.append("- no case decided differently on the same baseline")
    if other_baseline:
        lines.append(f"- {other_baseline} case(s) not compared: their baseline weights changed")
    if unfingerprinted:
        lines.append(f"- {unfingerprinted} case(s) not compared: a run without decision fingerprints")
    return lines


def _seed_correct(name: str, per_seed: Sequence[Mapping]) -> dict[int, dict[str, torch.Tensor]]:
    """Per seed, the per-image correctness the case saved (none for runs made before it was kept)."""
    try:
        return {
            int(seed["seed"]): {
                key: decode_correct(packed) for key, packed in seed.get("correct", {}).items()
            }
            for seed in per_seed
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{name} has unreadable per-image correctness ({err})") from err


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


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def size_text(row: ReportRow) -> str:
    """At what size ``row``'s latency was timed: ``224 px (--latency-size)``, ``32 px``, or ``-`` (not
    recorded, in older runs)."""
    if not row.latency_img_size:
        return "-"
    return f"{row.latency_img_size} px" + (" (--latency-size)" if row.workload_latency_ms else "")


def latency_size_label(rows: Sequence[ReportRow]) -> str:
    """`` at 224 px`` for axis labels and headers: the size ``rows`` were timed at, empty when not recorded,
    ``at several sizes`` when they differ."""
    sizes = {size_text(row) for row in rows}
    if len(sizes) > 1:
        return ", at several sizes"
    size = sizes.pop()
    return "" if size == "-" else f", at {size}"


def _runtime_columns() -> list[str]:
    """The ``--runtime`` figures a row can carry, in order: each runtime, then each at the deploy size."""
    return [*RUNTIMES, *(f"at_size_{name}" for name in RUNTIMES)]


def _runtime_header(name: str) -> str:
    runtime, at_size = name.removeprefix("at_size_"), name.startswith("at_size_")
    return f"measured / MACs, {runtime}" + (" at --latency-size" if at_size else "")


def table_rows(runs: Sequence[Sequence[ReportRow]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report table: the last run's cases, with the change from the first run when
    there are several (``⚠`` marks a regression)."""
    header = [
        "model", "method", "ratio / target", "top-1 dense", "dense control", "baseline plateaued",
        "one-shot", "recalibrated", "recovered", "gate",
        "MACs dense → pruned",
        "params dense → pruned", "latency dense → pruned (ms)", "latency timed at",
        "MACs x", "measured x", "measured / MACs",
    ]  # fmt: skip
    at_workload_size = any(row.workload_latency_ms for row in runs[-1])
    if at_workload_size:
        header.append("latency at the workload's size (ms)")
    timed = [name for name in _runtime_columns() if any(name in row.runtime_efficiency for row in runs[-1])]
    header += [_runtime_header(name) for name in timed]
    first = {row.key: row for row in runs[0]} if len(runs) > 1 else {}
    if first:
        header += ["Δ recovered top-1", "Δ pruned latency"]
    cells = []
    for row in runs[-1]:
        line = [
            row.model,
            row.method,
            row.cost,
            f"{row.dense_top1:.2f}",
            "-" if row.control_top1 is None else f"{row.control_top1:.2f}",
            plateau_text(row.baseline_epoch_top1),
            f"{row.one_shot_top1:.2f}",
            "-" if row.recalibrated_top1 is None else f"{row.recalibrated_top1:.2f}",
            f"{row.pruned_top1:.2f}",
            "pass" if row.passed else "FAIL",
            f"{_millions(row.macs_dense)} → {_millions(row.macs_pruned)}",
            f"{_millions(row.params_dense)} → {_millions(row.params_pruned)}",
            f"{row.latency_dense_ms:.2f} → {row.latency_pruned_ms:.2f}",
            size_text(row),
            f"{row.macs_speedup:.2f}",
            f"{row.measured_speedup:.2f}",
            f"{row.efficiency:.2f}",
        ]
        if at_workload_size:
            workload = row.workload_latency_ms
            line.append("-" if workload is None else f"{workload[0]:.2f} → {workload[1]:.2f}")
        line += [
            f"{row.runtime_efficiency[name]:.2f}" if name in row.runtime_efficiency else "-" for name in timed
        ]
        if first:
            before = first.get(row.key)
            if before is None:
                line += ["new", "new"]
                cells.append(line)
                continue
            d_top1 = row.pruned_top1 - before.pruned_top1
            line.append(f"{d_top1:+.2f}" + (" ⚠" if d_top1 < -TOP1_REGRESSION else ""))
            if before.latency_img_size != row.latency_img_size:
                line.append(f"not comparable ({size_text(before)} then {size_text(row)})")
            else:
                d_lat = row.latency_pruned_ms / before.latency_pruned_ms - 1
                line.append(f"{100 * d_lat:+.1f} %" + (" ⚠" if d_lat > LATENCY_REGRESSION else ""))
        cells.append(line)
    return header, cells


def plateau_text(epoch_top1: Sequence[float]) -> str:
    """``yes (99.2, 99.4, 99.4)``: whether the baseline's last epochs plateaued, with their top-1."""
    flat = plateaued(epoch_top1)
    if flat is None:
        return "not recorded"
    return f"{'yes' if flat else 'no'} ({', '.join(f'{a:.1f}' for a in epoch_top1)})"


def markdown_table(runs: Sequence[Sequence[ReportRow]]) -> str:
    header, cells = table_rows(runs)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(latency, top1)`` points no other point beats on both (as fast or faster and at least as
    accurate, better on one), sorted by latency."""
    front: list[tuple[float, float]] = []
    for latency, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or top1 > front[-1][1]:
            front.append((latency, top1))
    return front


def plot_model(model: str, rows: Sequence[ReportRow]) -> bytes:
    """PNG of ``model``'s cases: recovered top-1 against measured pruned latency, one marker per method and
    ratio, the dense baseline as a star, the Pareto front as a step line."""
    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    markers = "osD^vP*Xhp<>"
    for i, row in enumerate(rows):
        ax.scatter(
            row.latency_pruned_ms,
            row.pruned_top1,
            marker=markers[i % len(markers)],
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
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def front_methods(rows: Sequence[ReportRow]) -> list[str]:
    """``method @ ratio`` of the cases on the Pareto front of ``rows`` (one model), fastest first."""
    front = set(pareto_front([(r.latency_pruned_ms, r.pruned_top1) for r in rows]))
    on_front = [r for r in rows if (r.latency_pruned_ms, r.pruned_top1) in front]
    return [f"{r.method} @ {r.cost}" for r in sorted(on_front, key=lambda r: r.latency_pruned_ms)]


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
            lines = [
                f"### {model} at {target:g}x fewer MACs",
                "",
                "| method | ratio found | MACs x | one-shot | recalibrated | recovered ± SE "
                f"| Δ vs random, recalibrated | Δ vs random, recovered | latency x{latency_size_label(at)} |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in at:
                against = control is not None and r is not control
                lines.append(
                    f"| {r.method} | {r.ratio:.3f} | {r.macs_speedup:.2f} | {r.one_shot_top1:.2f} | "
                    f"{_top1(r.recalibrated_top1)} | {r.pruned_top1:.2f} ± {r.recovered_se:.2f} | "
                    f"{_signed(pair(r, control, 'recalibrated')) if against else '-'} | "
                    f"{_signed(pair(r, control)) if against else '-'} | {r.measured_speedup:.2f} |"
                )
            parts.append("\n".join(lines))
        masks = sorted((r for r in mine if r.kind != "structured"), key=lambda r: (r.ratio, r.method))
        if masks and any(r.target_speedup for r in mine):
            lines = [
                f"### {model}: mask methods at equal sparsity (no MACs target: dense kernels)",
                "",
                "| method | sparsity | one-shot | recalibrated | recovered ± SE "
                f"| latency x{latency_size_label(masks)} |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.method} | {r.ratio:g} | {r.one_shot_top1:.2f} | {_top1(r.recalibrated_top1)} | "
                f"{r.pruned_top1:.2f} ± {r.recovered_se:.2f} | {r.measured_speedup:.2f} |"
                for r in masks
            ]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else ""


def _top1(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
    markers = "osD^vP*Xhp<>"
    for i, method in enumerate(sorted({r.method for r in targeted})):
        line = sorted((r for r in targeted if r.method == method), key=lambda r: r.target_speedup)
        for ax, x, y, se, _ in panels:
            if any(getattr(r, y) is None for r in line):
                continue
            ax.errorbar(
                [getattr(r, x) for r in line],
                [getattr(r, y) for r in line],
                yerr=[se(r) for r in line],
                marker=markers[i % len(markers)],
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
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def html_page(runs: Sequence[Sequence[ReportRow]], plots: dict[str, bytes], sources: Sequence[Path]) -> str:
    """One HTML page: the table and every plot, the images embedded as data URIs."""
    header, cells = table_rows(runs)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells)
    figures = "".join(
        f'<h2>{html.escape(model)}</h2><img alt="{html.escape(model)} Pareto plot" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for model, png in plots.items()
    )
    names = ", ".join(html.escape(str(p)) for p in sources)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>PruneBench report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+2){text-align:left}"
        "</style></head><body><h1>PruneBench report</h1>"
        f"<p>Runs: {names}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"{figures}</body></html>\n"
    )


def _slug(model: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in model)


def write_report(paths: Sequence[Path], out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``pareto_<model>.png`` per model and ``report.html`` under ``out_dir``; for a
    run at MACs targets also its equal-cost tables (in ``report.md``) and ``curves_<model>.png``."""
    runs = [load_run(path) for path in paths]
    latest = runs[-1]
    models = sorted({row.model for row in latest})
    plots = {model: plot_model(model, [r for r in latest if r.model == model]) for model in models}
    curves = {
        model: plot_curves(model, [r for r in latest if r.model == model])
        for model in models
        if any(r.model == model and r.target_speedup for r in latest)
    }
    fronts = [
        f"- `{model}`: on the front, fastest first: "
        + ", ".join(front_methods([r for r in latest if r.model == model]))
        for model in models
    ]
    text = "# PruneBench report\n\n" + markdown_table(runs) + "\n## Pareto fronts\n\n" + "\n".join(fronts)
    if len(runs) > 1:
        text += "\n\n## Decisions, first run to last\n\n" + "\n".join(decision_changes(runs[0], latest))
    if curves:
        text += "\n\n## At equal cost\n\n" + equal_cost_tables(latest)
        text += "\n" + "\n".join(f"![{m} operating curves](curves_{_slug(m)}.png)" for m in curves)
    figures = {**plots, **{f"{m}: operating curves": png for m, png in curves.items()}}
    written = []
    for name, data in [
        ("report.md", (text + "\n").encode()),
        *((f"pareto_{_slug(m)}.png", png) for m, png in plots.items()),
        *((f"curves_{_slug(m)}.png", png) for m, png in curves.items()),
        ("report.html", html_page(runs, figures, paths).encode()),
    ]:
        write_atomic(out_dir / name, lambda f, data=data: f.write(data))
        written.append(out_dir / name)
    return written
