"""The sweep's files: its rows as CSV (read back to update a sweep) and as the Markdown of docs/sweep.md."""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .files import write_atomic
from .sweep import STAGES, SweepRow
from .tables import markdown_table


def write_csv(rows: Sequence[SweepRow], path: Path) -> None:
    """One line per architecture with every field of :class:`SweepRow` and ``ok``."""
    names = [f.name for f in dataclasses.fields(SweepRow)]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, [*names, "ok"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**dataclasses.asdict(row), "ok": row.ok})
    write_atomic(path, lambda f: f.write(text.getvalue().encode()))


def read_csv(path: Path) -> list[SweepRow]:
    """The rows of a ``sweep.csv`` that :func:`write_csv` wrote; ``ValueError`` naming the file if it is not
    one."""
    types = {f.name: f.type for f in dataclasses.fields(SweepRow)}
    try:
        with path.open(newline="") as f:
            records = list(csv.DictReader(f))
        return [SweepRow(**{name: _field(types[name], record[name]) for name in types}) for record in records]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a sweep.csv written by prunebench sweep: {err!r}") from err


def _field(kind: str, text: str) -> object:
    if kind == "int | None":
        return int(text) if text else None
    return float(text) if kind == "float" else text


def merge_rows(earlier: Sequence[SweepRow], rows: Sequence[SweepRow]) -> list[SweepRow]:
    """``earlier`` with the rows of the architectures checked again replaced by ``rows``; new ones last."""
    fresh = {row.arch: row for row in rows}
    merged = [fresh.pop(row.arch, row) for row in earlier]
    return [*merged, *fresh.values()]


def _ratio(before: int | None, after: int | None) -> str:
    return f"{before / after:.2f}" if before and after else ""


def markdown(rows: Sequence[SweepRow], method: str, ratio: float, how: str = "") -> str:
    """The sweep as Markdown: a summary, failures by stage and reason, a tally by family, every row.

    ``how`` is a line on how the sweep ran (command, machine, wall time), printed under the title.
    """
    ok = sum(row.ok for row in rows)
    seconds = [row.seconds for row in rows]
    lines = [
        f"# Prunability sweep: `{method}` at {ratio:g}",
        "",
        f"Written by `prunebench sweep`. {ok} of {len(rows)} architectures "
        f"({100 * ok / len(rows):.0f} %) pass every stage ({' → '.join(STAGES)}); "
        f"median {statistics.median(seconds):.1f} s per architecture. "
        f"{sum(row.onnx_exporter == 'torchscript' for row in rows)} of them export to ONNX only with torch's "
        "TorchScript exporter (its dynamo exporter fails).",
        *([how] if how else []),
        "",
        "## Failures by stage",
        "",
    ]
    failures = []
    for stage in STAGES:
        failed = [row for row in rows if row.failed_stage == stage]
        if failed:
            common = Counter(row.reason for row in failed).most_common(3)
            reasons = "; ".join(f"{_cell(reason)} ({count})" for reason, count in common)
            owners = Counter(row.raised_in or "crash or time limit" for row in failed).most_common()
            where = ", ".join(f"{owner} {count}" for owner, count in owners)
            failures.append((stage, len(failed), where, reasons))
    if ok == len(rows):
        failures.append(("none", 0, "", ""))
    lines += [markdown_table(("stage", "architectures", "raised in", "most common reasons"), failures)]
    families = [
        (fam, len(members), sum(row.ok for row in members))
        for fam in sorted({row.family for row in rows})
        for members in [[row for row in rows if row.family == fam]]
    ]
    lines += ["", "## By family", "", markdown_table(("family", "architectures", "ok"), families)]
    header = (
        "architecture", "family", "reached", "failed at", "reason", "raised in", "MACs before → after",
        "MACs x", "params before → after", "ONNX exporter", "seconds",
    )  # fmt: skip
    cells = [
        (
            row.arch,
            row.family,
            row.reached or "-",
            row.failed_stage or "",
            _cell(row.reason),
            row.raised_in,
            f"{row.macs_before:,} → {row.macs_after:,}" if row.macs_before else "",
            _ratio(row.macs_before, row.macs_after),
            f"{row.params_before:,} → {row.params_after:,}" if row.params_before else "",
            row.onnx_exporter,
            f"{row.seconds:.1f}",
        )
        for row in rows
    ]
    lines += ["", "## Architectures", "", markdown_table(header, cells)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
