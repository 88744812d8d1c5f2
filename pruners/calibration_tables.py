"""The calibration tables, ``bench/CALIBRATION.md`` (``CALIBRATION-FAMILY.md`` on another workload): per
case the recovery gate's runs and what they ask of the tolerance, the criterion band's levels and leads over
``random``, then the registered tolerances (digits) or each case's own (the verdict tier)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .calibration import (
    MARGIN_POINTS,
    MARGIN_STDS,
    MAX_TOLERANCE,
    MAX_VERDICT_TOLERANCE,
    REFERENCE,
    REGRESSION_BOUNDS,
    VERDICT_SEEDS,
    VERDICT_STEP,
    CaseCalibration,
    calibrations,
    drop_bound,
    entry_case,
    keeps_bounds,
    lead_over_random,
    planted_caught,
    random_runs_caught,
    rival,
    suggested_tolerance,
)
from .gate import CONFIDENCE, one_sided_z
from .matrix import Case, build_cases, default_tier
from .ranking import RANKING_CONFIDENCE, pair, rank, signed, tie_lines
from .registry import get_method
from .tables import markdown_table


def render(
    entries: list[dict], cases: Sequence[Case], family: str = "digits", gated: Sequence[Case] | None = None
) -> str:
    """The calibration tables as Markdown: the recovery gate and the criterion band per case of ``cases``,
    then per method against its registered tolerance over the ``gated`` cases (default: the default
    tier's)."""
    cals = calibrations(entries, cases, family)
    gated = build_cases(tier=default_tier(family), family=family) if gated is None else gated
    current = [e for e in entries if e.get("family", "digits") == family and e.get("reference") == REFERENCE]
    images = sorted({e["n"] for e in current})
    machines = sorted({f"{e['machine']}, torch threads={e['threads']}" for e in current})
    z = one_sided_z()
    lines = [
        "# Gate calibration",
        "",
        "Written by `prunebench calibrate`; do not edit by hand. Re-run it when a method, a recipe or",
        "the default tier changes (`tests/test_calibration.py` fails until the tables cover every case of",
        "`pytest bench/` under today's recipes).",
        "",
        f"Runs: {', '.join(machines) or 'none'}. Top-1 in points on the "
        f"{'/'.join(map(str, images)) or 'no'} held-out images of {family}; *SE* is the paired standard",
        f"error, z = {z:.2f} (one-sided {CONFIDENCE:.0%}).",
        "",
        "## Recovery gate: dense control → pruned and recovered",
        "",
        "The drop is from the dense control (the baseline fine-tuned with the same recovery recipe).",
        "*Required* is `drop - z x SE`, the tolerance a single run needs; *detects* is the smallest drop a",
        "single run with this case's mean SE fails on: the tolerance + z x SE (the method's registered one",
        "on the digits, the case's own elsewhere); *vs random, recovered* is the recovered lead over",
        "`random` at the same cost, paired over images and seeds.",
        "",
    ]
    header = (
        "model",
        "method",
        "cost",
        "runs",
        "seeds",
        "control → recovered",
        "mean drop",
        "min",
        "max",
        "std",
        "mean SE",
        "worst required",
        "needs",
        "detects",
        "vs random, recovered",
    )
    rows: list[tuple] = []
    for case, cal in cals.items():
        if not cal.runs:
            rows.append((case.model, case.method, case.cost, 0, *[""] * 11))
            continue
        drops = cal.drops
        std = statistics.stdev(drops) if len(drops) > 1 else 0.0
        control = statistics.fmean(r.paired.dense_top1 for r in cal.runs)
        pruned = statistics.fmean(r.paired.pruned_top1 for r in cal.runs)
        tolerance = cal.case_tolerance if family != "digits" else get_method(case.method).tolerance
        detects = tolerance + z * cal.mean_se
        recovered_lead = lead_over_random(cals, case, "recovered")
        rows.append(
            (
                case.model,
                case.method,
                case.cost,
                len(cal.runs),
                ",".join(map(str, sorted(cal.seeds))),
                f"{control:.2f} → {pruned:.2f}",
                f"{statistics.fmean(drops):.2f}",
                f"{min(drops):.2f}",
                f"{max(drops):.2f}",
                f"{std:.2f}",
                f"{cal.mean_se:.2f}",
                f"{max(cal.required):.2f}",
                f"{cal.covering_tolerance:.2f}",
                f"{detects:.2f}",
                ""
                if recovered_lead is None
                else f"{recovered_lead.mean_drop:+.2f} ± {recovered_lead.noise:.2f}",
            )
        )
    lines += [
        markdown_table(header, rows),
        "",
        f"*Needs*: the worst run's required tolerance + {MARGIN_POINTS} points, and at least the mean +",
        f"{MARGIN_STDS:g} std of the required tolerance over the runs.",
        "",
        "## Criterion band (reported, not gated): dense → BatchNorm-recalibrated one-shot",
        "",
        "The level is the mean paired drop to the recalibrated one-shot model; a run fails when its drop",
        "± z x SE lies outside level ± band. *Detects* is the smallest shift of the recalibrated top-1 a",
        "single run fails on (band + z x SE); *vs random* is the case's recalibrated lead over `random` at",
        "the same cost (`random_unstructured` for mask methods), paired over images and seeds; *random runs",
        "caught* counts the calibrated runs of that random method (same model, cost and seeds) that this",
        "case's band fails: the gate's power against a criterion that stopped ranking.",
        "",
    ]
    header = (
        "model",
        "method",
        "cost",
        "runs",
        "dense → recalibrated",
        "level",
        "std",
        "mean SE",
        "band",
        "detects",
        "vs random",
        "random runs caught",
    )
    rows = []
    for case, cal in cals.items():
        if not cal.runs:
            continue
        crit = [r.criterion.drop for r in cal.runs]
        std = statistics.stdev(crit) if len(crit) > 1 else 0.0
        dense = statistics.fmean(r.criterion.dense_top1 for r in cal.runs)
        recal = statistics.fmean(r.criterion.pruned_top1 for r in cal.runs)
        lead, caught = lead_over_random(cals, case), random_runs_caught(cals, case)
        lead = "" if lead is None else f"{lead.mean_drop:+.2f} ± {lead.noise:.2f}"
        tells = f"{sum(caught.values())}/{len(caught)}" if caught else ""
        rows.append(
            (
                case.model,
                case.method,
                case.cost,
                len(cal.runs),
                f"{dense:.2f} → {recal:.2f}",
                f"{cal.criterion_level:.2f}",
                f"{std:.2f}",
                f"{cal.criterion_se:.2f}",
                f"{cal.criterion_tolerance:g}",
                f"{cal.criterion_detects:.2f}",
                lead,
                tells,
            )
        )
    lines += [markdown_table(header, rows), ""]
    if family != "digits":
        sections = [*lines, *case_tolerance_section(cals, gated, family), "", *ranking_section(cals)]
        return "\n".join(sections) + "\n"
    lines += [
        "## Registered recovery tolerances",
        "",
        "A method's suggested tolerance is the largest *needs* of its cases in the default tier, rounded up",
        f"to 0.5 points; no registered tolerance may exceed {MAX_TOLERANCE:g} points.",
        "",
    ]
    rows = []
    for method in dict.fromkeys(c.method for c in gated):
        method_cals = [
            cal for case, cal in cals.items() if case in gated and case.method == method and cal.runs
        ]
        if not method_cals:
            continue
        suggested = suggested_tolerance(method_cals)
        registered = get_method(method).tolerance
        rows.append((method, f"{suggested:g}", f"{registered:g}", "yes" if registered >= suggested else "NO"))
    header = ("method", "suggested tolerance", "registered tolerance", "covered")
    return "\n".join([*lines, markdown_table(header, rows)]) + "\n"


def case_tolerance_section(
    cals: dict[Case, CaseCalibration], gated: Sequence[Case], family: str
) -> list[str]:
    """The verdict tier's per-case tolerances: each case's *needs* rounded up to :data:`VERDICT_STEP`,
    written to ``pruners/gate_tolerances.json`` once it has :data:`VERDICT_SEEDS` seeds, with what a single
    run detects against the bound the tier promises (:data:`REGRESSION_BOUNDS`)."""
    lines = [
        f"## Case tolerances on {family}",
        "",
        f"Each case gets its own tolerance: its *needs* rounded up to {VERDICT_STEP:g} points, gated once",
        f"it has {VERDICT_SEEDS} seeds. A method's mean drop may not pass {MAX_VERDICT_TOLERANCE:g} points,",
        "nor its tolerance, except where its drop spreads over seeds past that (*gated*: `wide`); such a",
        "method and the chance rivals (`random`, `random_unstructured`: their loss by design is the floor",
        "the methods are ranked against, not a method's promise) are held to the regression bound alone.",
        "*Detects* is the smallest drop from the control a single run fails on (tolerance + z x mean SE);",
        "*regression* is how far past the case's calibrated mean drop that lies, and must stay within the",
        "model's bound (a method that loses 1.5 points by design cannot be held to detecting a drop of",
        "1.5). The planted column takes each calibrated run, turns right recovered images wrong until its",
        "top-1 is tolerance + 1 points lower, and counts the runs the single-seed gate then fails (all of",
        "them, or the gate cannot see that drop).",
        "",
    ]
    header = (
        "model",
        "method",
        "cost",
        "seeds",
        "mean drop",
        "tolerance",
        "detects",
        "regression",
        "bound",
        "runs failing, planted drop of tolerance + 1",
        "gated",
    )
    rows = []
    for case in gated:
        cal = cals.get(case)
        if cal is None or not cal.runs:
            rows.append((case.model, case.method, case.cost, 0, *[""] * 6, "no runs"))
            continue
        bound = REGRESSION_BOUNDS.get(case.model)
        enough = len(cal.seeds) >= VERDICT_SEEDS
        rows.append(
            (
                case.model,
                case.method,
                case.cost,
                len(cal.seeds),
                f"{cal.mean_drop:.2f}",
                f"{cal.case_tolerance:g}",
                f"{cal.detects:.2f}",
                f"{cal.regression_detected:.2f}",
                "" if bound is None else f"{bound:g}",
                f"{planted_caught(cal, cal.case_tolerance, cal.case_tolerance + 1)}/{len(cal.runs)}",
                _gated(cal) if enough else f"not yet ({len(cal.seeds)} of {VERDICT_SEEDS} seeds)",
            )
        )
    return [*lines, markdown_table(header, rows)]


def _gated(cal: CaseCalibration) -> str:
    wide = drop_bound(cal.case) is not None and cal.case_tolerance > MAX_VERDICT_TOLERANCE
    return ("yes, wide" if wide else "yes") if keeps_bounds(cal) else "yes, OUT OF BOUNDS"


@dataclass(frozen=True)
class CalibratedMethod:
    """One calibrated case as :func:`pruners.ranking.rank` takes it: per seed, the per-image correctness
    of its first run at that seed (:attr:`pruners.calibration.CaseCalibration.first_runs`)."""

    method: str
    correct: dict[int, dict[str, torch.Tensor]]

    def top1(self, which: str) -> float:
        return statistics.fmean(100 * float(c[which].float().mean()) for c in self.correct.values())


def ranking_section(cals: dict[Case, CaseCalibration]) -> list[str]:
    """Per model and cost, the calibrated methods ranked after recovery on the seeds they all ran, with
    their tie groups (:mod:`pruners.ranking`) and their leads over the cost's random method, recovered
    and BatchNorm-recalibrated, paired over images and seeds."""
    lines = [
        "## Ranking after recovery",
        "",
        "Per model and cost, the methods on the training seeds every one of them was calibrated on, sorted",
        "by recovered top-1; a tie group holds the methods its best one does not beat (two-sided",
        f"{RANKING_CONFIDENCE:.0%}, Bonferroni over the table), paired over images and seeds. Δ: positive",
        "when the method keeps more top-1.",
        "",
    ]
    costs: dict[tuple[str, str, str], list[Case]] = {}
    for case, cal in cals.items():
        if cal.runs:
            costs.setdefault((case.model, case.cost, rival(case).method), []).append(case)
    for (model, cost, chance), cases in costs.items():
        seeds = set.intersection(*(cals[c].seeds for c in cases))
        if len(cases) < 2 or not seeds:
            continue
        methods = []
        for case in cases:
            first = cals[case].first_runs
            methods.append(CalibratedMethod(case.method, {s: first[s].correct for s in sorted(seeds)}))
        standings = rank(methods, chance)
        by_method = {m.method: m for m in methods}
        ref = by_method.get(chance)
        header = (
            "group",
            "method",
            "recovered",
            "Δ vs best",
            f"Δ vs {chance}, recovered",
            "recalibrated",
            f"Δ vs {chance}, recalibrated",
        )
        rows = [
            (
                str(s.group),
                s.method,
                f"{s.top1:.2f}",
                signed(s.vs_best),
                signed(s.vs_random),
                f"{by_method[s.method].top1('recalibrated'):.2f}",
                signed(pair(by_method[s.method], ref, "recalibrated"))
                if ref is not None and s.method != chance
                else "-",
            )
            for s in standings
        ]
        lines += [
            f"### {model} at {cost}, seeds {','.join(map(str, sorted(seeds)))}",
            "",
            markdown_table(header, rows),
            "",
            *tie_lines(standings, chance if ref is not None else None),
            "",
        ]
    return lines


def rendered_cases(entries: Iterable[dict], family: str = "digits") -> list[Case]:
    """The cases ``CALIBRATION.md`` lists: the ``family``'s tier's, then any other case calibrated."""
    cases = build_cases(tier=default_tier(family), family=family)
    mine = [e for e in entries if e.get("family", "digits") == family and e.get("reference") == REFERENCE]
    extra = dict.fromkeys(entry_case(e) for e in mine)
    return cases + [case for case in extra if case not in cases]
