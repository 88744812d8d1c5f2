"""Calibrate the recovery gate and the criterion band by measurement: run the default tier over several
training seeds.

``prunebench calibrate --seeds 0,1,2,3,4`` runs every case of the default tier once per seed (no
latency), adds each run to ``bench/calibration.json`` (under a file lock, written atomically, so several
processes may calibrate disjoint seeds at once) and renders ``bench/CALIBRATION.md`` and the criterion
levels (``pruners/gate_levels.json``) from it. A run is one seed at one torch thread count: thread counts
take different floating-point paths, so they count as separate draws.

*The recovery gate.* A method's tolerance must cover every calibrated run of its cases: the single-seed
gate passes when ``tolerance >= drop - z * se`` (the run's *required* tolerance), the drop measured from the
dense control. :func:`suggested_tolerance` asks for the worst run plus :data:`MARGIN_POINTS`, and for the
mean plus :data:`MARGIN_STDS` standard deviations of the required tolerance across runs, rounded up to half
a point, so that an unseen machine or seed is covered too.

*The criterion band* (reported, not gated). Per case, the level is the mean paired drop from dense to
BatchNorm-recalibrated one-shot top-1 over the runs; its band's half-width covers each run's distance from
the level less ``z * se``, by the same margins. ``tests/test_calibration.py`` checks the registered
tolerances, the levels and the Markdown against this file, and that no tolerance exceeds
:data:`MAX_TOLERANCE`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock

from .calibration import (
    DEFAULT_PATH,
    MARGIN_POINTS,
    MARGIN_STDS,
    MAX_TOLERANCE,
    REFERENCE,
    calibrations,
    entry_case,
    entry_key,
    lead_over_random,
    levels,
    load,
    machine,
    random_runs_caught,
    suggested_tolerance,
)
from .case import recovery_recipe, run_case
from .datasets import dataset_family
from .files import write_atomic
from .gate import (
    CONFIDENCE,
    one_sided_z,
)
from .levels import LEVELS_PATH, write_levels
from .matrix import Case, build_cases, parse_seeds, parse_speedups
from .options import check, split_csv
from .registry import get_method
from .result import CaseResult
from .spec import CaseSpec, Recipes, Timing
from .tables import markdown_table
from .workloads import create_workload
from .zoo import baseline_recipe


def render(
    entries: list[dict], cases: Sequence[Case], family: str = "digits", gated: Sequence[Case] | None = None
) -> str:
    """The calibration tables as Markdown: the recovery gate and the criterion band per case of ``cases``,
    then per method against its registered tolerance over the ``gated`` cases (default: the default
    tier's)."""
    cals = calibrations(entries, cases, family)
    gated = build_cases(tier="default") if gated is None else gated
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
        "single run with this case's mean SE fails on: the method's tolerance + z x SE.",
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
    )
    rows: list[tuple] = []
    for case, cal in cals.items():
        if not cal.runs:
            rows.append((case.model, case.method, case.cost, 0, *[""] * 10))
            continue
        drops = cal.drops
        std = statistics.stdev(drops) if len(drops) > 1 else 0.0
        control = statistics.fmean(r.paired.dense_top1 for r in cal.runs)
        pruned = statistics.fmean(r.paired.pruned_top1 for r in cal.runs)
        detects = get_method(case.method).tolerance + z * cal.mean_se
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
    lines += [
        markdown_table(header, rows),
        "",
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


def rendered_cases(entries: Iterable[dict]) -> list[Case]:
    """The cases ``CALIBRATION.md`` lists: the default tier's, then any other case calibrated."""
    cases = build_cases(tier="default")
    extra = dict.fromkeys(entry_case(e) for e in entries if e.get("reference") == REFERENCE)
    return cases + [case for case in extra if case not in cases]


def markdown_path(path: Path) -> Path:
    """``CALIBRATION.md`` beside ``calibration.json``; ``CALIBRATION-X.md`` beside ``calibration-X.json``."""
    return path.with_name("CALIBRATION" + path.stem.removeprefix("calibration") + ".md")


def record(entry: dict, path: Path, cases: Sequence[Case]) -> None:
    """Add (or replace) one run in the calibration file and re-render the Markdown beside it."""
    with FileLock(f"{path}.lock"):
        entries = [e for e in load(path) if entry_key(e) != entry_key(entry)]
        entries = sorted([*entries, entry], key=entry_key)
        text = json.dumps({"confidence": CONFIDENCE, "runs": entries}, indent=1) + "\n"
        write_atomic(path, lambda f: f.write(text.encode()))
        cases = [*cases, *(c for c in rendered_cases(entries) if c not in cases)]
        write_markdown(entries, path, cases, entry.get("family", "digits"))


def write_markdown(
    entries: list[dict],
    path: Path,
    cases: Sequence[Case],
    family: str = "digits",
    levels_path: Path | None = None,
) -> str:
    """Render ``entries`` into ``CALIBRATION.md`` beside the JSON at ``path``, and the criterion levels of
    its cases calibrated over enough seeds into ``levels_path`` (default: the package's for the default
    calibration file, ``gate_levels.json`` beside any other); return the Markdown."""
    markdown = render(entries, cases, family)
    write_atomic(markdown_path(path), lambda f: f.write(markdown.encode()))
    if levels_path is None:
        levels_path = LEVELS_PATH if path == DEFAULT_PATH else path.with_name("gate_levels.json")
    found = levels(calibrations(entries, cases, family), family)
    if found:
        write_levels(found, levels_path)
    return markdown


def calibrate(args: argparse.Namespace) -> str:
    """``prunebench calibrate``: run every case of ``args`` (the option table's ``calibrate`` options and
    ``out``) once per seed, record each run as it finishes and return the rendered Markdown."""
    check(vars(args))
    family = dataset_family(args.dataset) if args.dataset else "digits"
    out = args.out or (
        DEFAULT_PATH if not args.dataset else DEFAULT_PATH.with_name(f"calibration-{family}.json")
    )
    seeds = parse_seeds(args.seeds)
    todo = build_cases(
        split_csv(args.models),
        split_csv(args.methods),
        tier=args.tier,
        speedups=parse_speedups(args.speedups),
    )
    load(out)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tier_cases = build_cases(tier=args.tier)
    if args.render:
        entries = load(out)
        return write_markdown(entries, out, rendered_cases(entries), family)
    workload = create_workload(args.dataset or "digits")
    cpu = machine()
    for case in todo:
        for seed in seeds:
            recovery = recovery_recipe(baseline_recipe(case.model, family), args.distill)
            spec = CaseSpec(
                case.model,
                case.method,
                case.ratio,
                case.speedup,
                workload=workload,
                seeds=(seed,),
                recipes=Recipes(recovery=recovery),
                timing=Timing(rounds=None),
            )
            record(run_entry(spec, run_case(spec), family, cpu), out, tier_cases)
    return markdown_path(out).read_text()


def run_entry(spec: CaseSpec, result: CaseResult, family: str, cpu: str) -> dict:
    """The calibration record of a one-seed ``result`` of ``spec``: its figures from the case's
    :class:`pruners.CaseRecord`, its paired statistics at full precision from the seed."""
    first, case = result.seeds[0], result.case_record()
    paired = first.paired
    print(
        f"{spec.case().id} seed {first.seed}: drop {paired.drop:.2f} +- {paired.se:.2f} points",
        file=sys.stderr,
        flush=True,
    )
    return {
        "reference": REFERENCE,
        "model": spec.model,
        "method": spec.method,
        "ratio": spec.case().ratio,
        "speedup": spec.speedup,
        "family": family,
        "workload": spec.data.name,
        "ratio_found": round(case.ratio, 4),
        "macs_speedup": case.macs_speedup,
        "pruned_top1_recalibrated": case.recalibrated_top1,
        "seed": first.seed,
        "threads": torch.get_num_threads(),
        "machine": cpu,
        "torch": torch.__version__,
        "baseline_recipe": result.baseline_recipe.key,
        "recovery_recipe": result.recovery_recipe.key,
        **asdict(paired),
        "drop": round(paired.drop, 3),
        "se": round(paired.se, 3),
        "criterion_drop": round(first.criterion.drop, 3),
        "criterion_se": round(first.criterion.se, 3),
        "control_gain": round(-first.convergence.drop, 3),
        "correct": case.per_seed[0]["correct"],
    }
