"""Reports of saved bench runs: a Markdown table, one accuracy-versus-latency Pareto plot per model, and one
self-contained HTML page with both.

``prunebench report RUN.json [RUN2.json ...]`` reads pytest-benchmark JSON (``--benchmark-json`` or
``--benchmark-autosave``) and the ``extra_info`` every case records. Given several runs, the table shows the
last run and its change from the first, with regressions marked.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from .zoo import write_atomic

# A later run regresses when a case's recovered top-1 falls by more than this many points, or its pruned
# latency grows by more than this fraction.
TOP1_REGRESSION = 1.0
LATENCY_REGRESSION = 0.10


@dataclass(frozen=True)
class ReportRow:
    """One case of one run, from its pytest-benchmark ``extra_info``."""

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

    @property
    def key(self) -> tuple[str, str, float]:
        return self.model, self.method, self.ratio

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
    rows = []
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if "latency_dense_ms" not in info:
            raise ValueError(
                f"{path}: {bench.get('name')} has no latency in extra_info (run without --benchmark-disable)"
            )
        rows.append(
            ReportRow(
                model=info["model"],
                method=info["method"],
                ratio=float(info["ratio"]),
                dense_top1=info["dense_top1"],
                one_shot_top1=info["pruned_top1_before_recovery"],
                pruned_top1=info["pruned_top1"],
                macs_dense=info["macs_dense"],
                macs_pruned=info["macs_pruned"],
                params_dense=info["params_dense"],
                params_pruned=info["params_pruned"],
                latency_dense_ms=info["latency_dense_ms"],
                latency_pruned_ms=info["latency_pruned_ms"],
                passed=bool(info.get("passed", False)),
            )
        )
    if not rows:
        raise ValueError(f"{path} holds no benchmarks")
    return sorted(rows, key=lambda r: (r.model, r.method, r.ratio))


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def table_rows(runs: Sequence[Sequence[ReportRow]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report table: the last run's cases, with the change from the first run when
    there are several (``⚠`` marks a regression)."""
    header = [
        "model", "method", "ratio", "top-1 dense", "one-shot", "recovered", "gate", "MACs dense → pruned",
        "params dense → pruned", "latency dense → pruned (ms)", "MACs x", "measured x", "measured / MACs",
    ]  # fmt: skip
    first = {row.key: row for row in runs[0]} if len(runs) > 1 else {}
    if first:
        header += ["Δ recovered top-1", "Δ pruned latency"]
    cells = []
    for row in runs[-1]:
        line = [
            row.model,
            row.method,
            f"{row.ratio:g}",
            f"{row.dense_top1:.2f}",
            f"{row.one_shot_top1:.2f}",
            f"{row.pruned_top1:.2f}",
            "pass" if row.passed else "FAIL",
            f"{_millions(row.macs_dense)} → {_millions(row.macs_pruned)}",
            f"{_millions(row.params_dense)} → {_millions(row.params_pruned)}",
            f"{row.latency_dense_ms:.2f} → {row.latency_pruned_ms:.2f}",
            f"{row.macs_speedup:.2f}",
            f"{row.measured_speedup:.2f}",
            f"{row.efficiency:.2f}",
        ]
        if first:
            before = first.get(row.key)
            if before is None:
                line += ["new", "new"]
            else:
                d_top1 = row.pruned_top1 - before.pruned_top1
                d_lat = row.latency_pruned_ms / before.latency_pruned_ms - 1
                line += [
                    f"{d_top1:+.2f}" + (" ⚠" if d_top1 < -TOP1_REGRESSION else ""),
                    f"{100 * d_lat:+.1f} %" + (" ⚠" if d_lat > LATENCY_REGRESSION else ""),
                ]
        cells.append(line)
    return header, cells


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
            label=f"{row.method} @ {row.ratio:g}",
        )
    dense_latency = sorted(row.latency_dense_ms for row in rows)[len(rows) // 2]
    dense_top1 = sorted(row.dense_top1 for row in rows)[len(rows) // 2]
    ax.scatter(dense_latency, dense_top1, marker="*", s=220, c="black", label="dense (median of cases)")
    front = pareto_front([(r.latency_pruned_ms, r.pruned_top1) for r in rows] + [(dense_latency, dense_top1)])
    ax.step(*zip(*front, strict=True), where="post", c="grey", lw=1, ls="--", label="Pareto front")
    ax.set(xlabel="pruned latency (ms, median)", ylabel="recovered top-1 (%)", title=model)
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
    return [f"{r.method} @ {r.ratio:g}" for r in sorted(on_front, key=lambda r: r.latency_pruned_ms)]


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
    """Write ``report.md``, ``pareto_<model>.png`` per model and ``report.html`` under ``out_dir``."""
    runs = [load_run(path) for path in paths]
    latest = runs[-1]
    models = sorted({row.model for row in latest})
    plots = {model: plot_model(model, [r for r in latest if r.model == model]) for model in models}
    fronts = [
        f"- `{model}`: on the front, fastest first: "
        + ", ".join(front_methods([r for r in latest if r.model == model]))
        for model in models
    ]
    text = "# PruneBench report\n\n" + markdown_table(runs) + "\n## Pareto fronts\n\n" + "\n".join(fronts)
    written = []
    for name, data in [
        ("report.md", (text + "\n").encode()),
        *((f"pareto_{_slug(m)}.png", png) for m, png in plots.items()),
        ("report.html", html_page(runs, plots, paths).encode()),
    ]:
        write_atomic(out_dir / name, lambda f, data=data: f.write(data))
        written.append(out_dir / name)
    return written
