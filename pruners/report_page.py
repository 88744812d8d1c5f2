"""The files prunebench report writes: report.md, a plot per model and report.html, from saved runs."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from . import tables
from .equal_cost import equal_cost_tables
from .files import write_atomic
from .forgetting import forgetting_html, forgetting_markdown
from .plots import front_methods, plot_curves, plot_model
from .report import ReportRow, decision_changes, load_run, markdown_table, scratch_table, table_rows


def _forgetting_cases(rows: Sequence[ReportRow]) -> list[tuple[str, dict, dict]]:
    return [(f"{r.model}-{r.method}-{r.cost}", r.per_class, r.forgotten) for r in rows if r.per_class]


def html_page(runs: Sequence[Sequence[ReportRow]], plots: dict[str, bytes], sources: Sequence[Path]) -> str:
    """One HTML page: the table, every plot (the images embedded as data URIs) and, per case of the last run,
    what pruning forgot (:mod:`pruners.forgetting`)."""
    header, cells = table_rows(runs)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells)
    figures = "".join(
        f'<h2>{html.escape(model)}</h2><img alt="{html.escape(model)} Pareto plot" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for model, png in plots.items()
    )
    names = ", ".join(html.escape(str(p)) for p in sources)
    header, cells = scratch_table(runs[-1])
    scratch = (
        "<h2>The scratch control</h2><table><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells)
        + "</tbody></table>"
        if cells
        else ""
    )
    forgot = forgetting_html(_forgetting_cases(runs[-1]))
    if forgot:
        forgot = (
            "<h2>What pruning forgets</h2><p>Per class, the recovered model against the dense control on "
            "the same held-out images, paired over images and seeds; flagged where the drop is significant "
            "at 99 % one-sided, Bonferroni-corrected for the number of classes.</p>" + forgot
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>PruneBench report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+2){text-align:left}"
        "tr.flag td{background:#fde2e2}.grid{display:flex;flex-wrap:wrap;gap:6px}"
        "figure{margin:0;text-align:center;font-size:11px}figure img{width:64px;height:64px;"
        "image-rendering:pixelated;border:1px solid #ccc}"
        "</style></head><body><h1>PruneBench report</h1>"
        f"<p>Runs: {names}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"{figures}{scratch}{forgot}</body></html>\n"
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
    header, cells = scratch_table(latest)
    if cells:
        text += "\n\n## The scratch control\n\n" + tables.markdown_table(header, cells)
    forgot = forgetting_markdown(_forgetting_cases(latest))
    if forgot:
        text += "\n\n## What pruning forgets\n\n" + forgot
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
