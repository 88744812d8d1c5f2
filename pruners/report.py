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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import tables
from .convergence import plateau_text
from .gate import decode_correct
from .matrix import Case
from .record import CaseRecord, RecordSchemaError
from .runtimes import RUNTIMES

# The control every structured method is paired against at the same MACs target.
CONTROL = "random"

# A later run regresses when a case's recovered top-1 falls by more than this many points, or its pruned
# latency grows by more than this fraction.
TOP1_REGRESSION = 1.0
LATENCY_REGRESSION = 0.10


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
    latency_dense_ms: float | None
    latency_pruned_ms: float | None
    passed: bool
    kind: str = "structured"
    target_speedup: float | None = None
    target_latency: float | None = None
    target_latency_search: dict = field(default_factory=dict, compare=False)
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
    scratch_top1: float | None = None
    scratch_gap: float | None = None
    scratch_gap_noise: float | None = None
    scratch_verdict: str = ""
    per_class: dict = field(default_factory=dict, repr=False, compare=False)
    forgotten: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.method, self.cost

    @property
    def cost(self) -> str:
        """The case's cost as the bench names it: ``2x`` (a MACs target), ``2x-latency`` (a measured latency
        target) or the ratio."""
        return Case(self.model, self.method, self.ratio, self.target_speedup, self.target_latency).cost

    def top1(self, which: str) -> float:
        """The ``"recovered"`` or ``"recalibrated"`` top-1 (the one-shot one where there is none)."""
        value = self.recalibrated_top1 if which == "recalibrated" else self.pruned_top1
        return self.one_shot_top1 if value is None else value

    @property
    def macs_speedup(self) -> float:
        return self.macs_dense / self.macs_pruned

    @property
    def measured_speedup(self) -> float | None:
        """Dense over pruned latency; ``None`` where the run did not time the case."""
        if self.latency_dense_ms is None or self.latency_pruned_ms is None:
            return None
        return self.latency_dense_ms / self.latency_pruned_ms

    @property
    def efficiency(self) -> float | None:
        """Measured speedup / MACs speedup: how much of the MACs cut the clock saw (1.0: all of it)."""
        speedup = self.measured_speedup
        return None if speedup is None else speedup / self.macs_speedup


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


def row_from_record(record: CaseRecord, name: str, timed: bool = True) -> ReportRow:
    """One :class:`ReportRow` from ``record``; ``name`` says which case in errors. ``timed``: the record
    must hold latency (else a record without it gives a row without latency)."""
    latency = record.latency
    if timed and "latency_dense_ms" not in latency:
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
        latency_dense_ms=latency.get(f"{deploy}_dense_ms"),
        latency_pruned_ms=latency.get(f"{deploy}_pruned_ms"),
        latency_img_size=int(latency.get(f"{deploy}_img_size", 0)),
        workload_latency_ms=(
            (latency["latency_dense_ms"], latency["latency_pruned_ms"])
            if deploy == "latency_at_size"
            else None
        ),
        passed=bool(record.passed),
        kind=record.kind,
        target_speedup=record.target_speedup,
        target_latency=record.target_latency,
        target_latency_search=record.target_latency_search,
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
        scratch_top1=record.scratch_top1,
        scratch_gap=record.scratch_gap,
        scratch_gap_noise=record.scratch_gap_noise,
        scratch_verdict=record.scratch_verdict,
        per_class=record.per_class,
        forgotten=record.forgotten,
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


def scratch_table(rows: Sequence[ReportRow]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The scratch control's header and rows (``--scratch`` cases only): recovered against the pruned
    architecture trained from random initialisation, paired over images and seeds."""
    header = ("case", "recovered", "from scratch", "recovered - scratch ± SE", "verdict")
    cells = [
        (
            f"{r.model}-{r.method}-{r.cost}",
            f"{r.pruned_top1:.2f}",
            "-" if r.scratch_top1 is None else f"{r.scratch_top1:.2f}",
            "-" if r.scratch_gap is None else f"{r.scratch_gap:+.2f} ± {r.scratch_gap_noise:.2f}",
            r.scratch_verdict,
        )
        for r in rows
        if r.scratch_verdict
    ]
    return header, cells


def markdown_table(runs: Sequence[Sequence[ReportRow]]) -> str:
    """The report's table of ``runs``: a row per case, with the change from the first run to the last."""
    return tables.markdown_table(*table_rows(runs)) + "\n"
