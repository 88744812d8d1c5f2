"""Calibrate the recovery gate and the criterion band by measurement: run the default tier over several
training seeds.

``prunebench calibrate --seeds 0,1,2,3,4`` runs every case of the default tier once per seed (no
latency), adds each run to ``bench/calibration.json`` (under a file lock, written atomically, so several
processes may calibrate disjoint seeds at once; a run already recorded is skipped, or with ``--rerun``
run again and replaced) and renders ``bench/CALIBRATION.md`` and the criterion
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
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock

from .calibration import (
    REFERENCE,
    calibrations,
    default_path,
    entry_key,
    is_recorded,
    levels,
    load,
    tolerances,
)
from .calibration_tables import render, rendered_cases
from .case import run_case
from .datasets import dataset_family
from .files import write_atomic
from .gate import (
    CONFIDENCE,
)
from .levels import LEVELS_PATH, TOLERANCES_PATH, write_levels, write_tolerances
from .matrix import Case, build_cases, default_tier, parse_seeds, parse_speedups
from .options import check, split_csv
from .recipes import case_recipes
from .result import CaseResult
from .spec import CaseSpec, Recipes, Timing
from .workloads import create_workload


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
        family = entry.get("family", "digits")
        cases = [*cases, *(c for c in rendered_cases(entries, family) if c not in cases)]
        write_markdown(entries, path, cases, family)


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
        levels_path = LEVELS_PATH if path == default_path(family) else path.with_name("gate_levels.json")
    cals = calibrations(entries, cases, family)
    write_levels(levels(cals, family), family, levels_path)
    if family != "digits":
        here = path == default_path(family)
        tolerances_path = TOLERANCES_PATH if here else path.with_name("gate_tolerances.json")
        write_tolerances(tolerances(cals, family), family, tolerances_path)
    return markdown


def calibrate(args: argparse.Namespace) -> str:
    """``prunebench calibrate``: run every case of ``args`` (the option table's ``calibrate`` options and
    ``out``) once per seed, record each run as it finishes and return the rendered Markdown."""
    check(vars(args))
    family = dataset_family(args.dataset) if args.dataset else "digits"
    out = args.out or default_path(family)
    seeds = parse_seeds(args.seeds)
    tier = args.tier or default_tier(family)
    todo = build_cases(
        split_csv(args.models),
        split_csv(args.methods),
        tier=tier,
        speedups=parse_speedups(args.speedups),
        family=family,
    )
    load(out)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tier_cases = build_cases(tier=tier, family=family)
    if args.render:
        entries = load(out)
        return write_markdown(entries, out, rendered_cases(entries, family), family)
    workloads = {model: create_workload(args.dataset or "digits", model) for model in {c.model for c in todo}}
    cpu = machine()
    for case in todo:
        for seed in seeds:
            dense, recovery = case_recipes(case.model, family, args.distill)
            where = {"threads": torch.get_num_threads(), "machine": cpu}
            where |= {"baseline_recipe": dense.key, "recovery_recipe": recovery.key}
            where |= {"img_size": workloads[case.model].img_size}
            if not args.rerun and is_recorded(load(out), case, seed, family, where):
                print(f"{case.id} seed {seed}: recorded already, skipped", file=sys.stderr, flush=True)
                continue
            spec = CaseSpec(
                case.model,
                case.method,
                case.ratio,
                case.speedup,
                workload=workloads[case.model],
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
        "img_size": spec.data.img_size,
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


def machine() -> str:
    """A short name of this CPU, for the record."""
    try:
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
    except OSError:
        names = []
    return names[0].split(":", 1)[1].strip() if names else platform.processor() or platform.machine()
