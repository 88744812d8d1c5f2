"""Calibrate method tolerances by measurement: run the full matrix over several training seeds.

``python -m pruners.calibrate --seeds 0,1,2,3,4`` runs every case of the full tier once per seed (no
latency), adds each run to ``bench/calibration.json`` (under a file lock, written atomically, so several
processes may calibrate disjoint seeds at once) and renders ``bench/CALIBRATION.md`` from it. A run is one
seed at one torch thread count: thread counts take different floating-point paths, so they count as
separate draws.

A method's tolerance must cover every calibrated run of its cases in the full tier: the single-seed gate
passes when ``tolerance >= drop - z * se`` (the run's *required* tolerance). :func:`suggested_tolerance`
asks for the worst run plus :data:`MARGIN_POINTS`, and for the mean plus :data:`MARGIN_STDS` standard
deviations of the required tolerance across runs, rounded up to half a point, so that an unseen machine or
seed is covered too. ``tests/test_calibration.py`` checks the registered tolerances against this table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from filelock import FileLock

from .case import RECOVERY_DISTILL, recovery_recipe, run
from .data import DataDirError, dataset_family, digits, torch_dataset
from .files import write_atomic
from .gate import CONFIDENCE, PairedDrop, one_sided_z, required_tolerance
from .matrix import Case, build_cases, parse_seeds, parse_speedups, split_csv
from .registry import get_method
from .zoo import baseline_recipe

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "bench" / "calibration.json"
MIN_SEEDS = 5
MARGIN_POINTS = 0.5
MARGIN_STDS = 3.0
MIN_TOLERANCE = 0.5


@dataclass(frozen=True)
class CaseCalibration:
    """The calibrated runs of one case, each as its paired drop."""

    case: Case
    runs: tuple[tuple[int, int, PairedDrop], ...]  # (seed, threads, paired drop)

    @property
    def seeds(self) -> set[int]:
        return {seed for seed, _, _ in self.runs}

    @property
    def drops(self) -> list[float]:
        return [p.drop for _, _, p in self.runs]

    @property
    def required(self) -> list[float]:
        """Per run, the smallest tolerance under which its single-seed gate passes."""
        return [required_tolerance(p) for _, _, p in self.runs]

    @property
    def covering_tolerance(self) -> float:
        """What this case asks of its method's tolerance (see the module docstring)."""
        required = self.required
        spread = statistics.stdev(required) if len(required) > 1 else 0.0
        return max(max(required) + MARGIN_POINTS, statistics.fmean(required) + MARGIN_STDS * spread)


def recipe_keys(model: str, family: str = "digits") -> dict[str, str]:
    """The keys of the recipes a case of ``model`` runs with today on a workload of ``family``; a run
    under other recipes is stale."""
    dense = baseline_recipe(model, family)
    return {"baseline_recipe": dense.key, "recovery_recipe": recovery_recipe(dense).key}


def _entry_key(entry: dict) -> tuple:
    speedup = entry.get("speedup") or 0.0
    ratio = entry["ratio"] if entry["ratio"] is not None else 0.0
    return (
        entry["model"],
        entry["method"],
        ratio,
        speedup,
        *(entry[k] for k in ("seed", "threads", "machine")),
    )


def entry_case(entry: dict) -> Case:
    """The bench case a calibration run belongs to (a ratio case, or a MACs-target case)."""
    return Case(entry["model"], entry["method"], entry["ratio"], entry.get("speedup"))


def load(path: Path = DEFAULT_PATH) -> list[dict]:
    """The calibration runs stored at ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from err


def calibrations(
    entries: Iterable[dict], cases: Sequence[Case], family: str = "digits"
) -> dict[Case, CaseCalibration]:
    """Group the current (non-stale) runs in ``entries`` by case, for each of ``cases``."""
    grouped: dict[Case, list[tuple[int, int, PairedDrop]]] = {case: [] for case in cases}
    current = {case.model: recipe_keys(case.model, family) for case in cases}
    for e in entries:
        case = entry_case(e)
        fresh = all(e[k] == v for k, v in current[case.model].items())
        if case in grouped and fresh and e.get("family", "digits") == family:
            paired = PairedDrop(**{f.name: e[f.name] for f in fields(PairedDrop)})
            grouped[case].append((e["seed"], e["threads"], paired))
    return {case: CaseCalibration(case, tuple(runs)) for case, runs in grouped.items()}


def suggested_tolerance(cals: Iterable[CaseCalibration]) -> float:
    """The tolerance one method needs over its calibrated cases, rounded up to half a point."""
    cals = [c for c in cals if c.runs]
    if not cals:
        raise ValueError("no calibrated runs to suggest a tolerance from")
    need = max(c.covering_tolerance for c in cals)
    return max(MIN_TOLERANCE, math.ceil(need * 2) / 2)


def render(entries: list[dict], cases: Sequence[Case], family: str = "digits") -> str:
    """The calibration table as Markdown: per case, then per method against its registered tolerance."""
    cals = calibrations(entries, cases, family)
    images = sorted({e["n"] for e in entries if e.get("family", "digits") == family})
    machines = sorted({f"{e['machine']}, torch threads={e['threads']}" for e in entries})
    lines = [
        "# Tolerance calibration",
        "",
        "Written by `python -m pruners.calibrate`; do not edit by hand. Re-run it when a method, a recipe or",
        "the full matrix changes (`tests/test_calibration.py` fails until the table covers every case of",
        "`pytest bench/ --full` under today's recipes).",
        "",
        f"Runs: {', '.join(machines)}. Drops are in top-1 points on the "
        f"{'/'.join(map(str, images)) or 'no'} held-out images of {family}; *SE* is",
        "the paired standard error; *required* is `drop - z x SE` (z = "
        f"{one_sided_z():.2f}, one-sided {CONFIDENCE:.0%}), the tolerance "
        "a single run needs to pass.",
        "",
        "| model | method | ratio / MACs target | runs | seeds | mean top-1 dense → pruned | mean drop | min "
        "| max | std | mean SE | worst required | needs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, cal in cals.items():
        if not cal.runs:
            lines.append(f"| {case.model} | {case.method} | {case.cost} | 0 |{'  |' * 9}")
            continue
        drops, ses = cal.drops, [p.se for _, _, p in cal.runs]
        std = statistics.stdev(drops) if len(drops) > 1 else 0.0
        dense = statistics.fmean(p.dense_top1 for _, _, p in cal.runs)
        pruned = statistics.fmean(p.pruned_top1 for _, _, p in cal.runs)
        lines.append(
            f"| {case.model} | {case.method} | {case.cost} | {len(cal.runs)} | "
            f"{','.join(map(str, sorted(cal.seeds)))} | {dense:.2f} → {pruned:.2f} | "
            f"{statistics.fmean(drops):.2f} | {min(drops):.2f} | {max(drops):.2f} | {std:.2f} | "
            f"{statistics.fmean(ses):.2f} | {max(cal.required):.2f} | {cal.covering_tolerance:.2f} |"
        )
    lines += [
        "",
        f"*Needs*: the worst run's required tolerance + {MARGIN_POINTS} points, and at least the mean +",
        f"{MARGIN_STDS:g} std of the required tolerance over the runs. A method's suggested tolerance is the",
        "largest *needs* of its cases, rounded up to 0.5 points.",
        "",
        "| method | suggested tolerance | registered tolerance | covered |",
        "|---|---|---|---|",
    ]
    for method in dict.fromkeys(c.method for c in cases):
        method_cals = [cal for case, cal in cals.items() if case.method == method and cal.runs]
        if not method_cals:
            continue
        suggested = suggested_tolerance(method_cals)
        registered = get_method(method).tolerance
        lines.append(
            f"| {method} | {suggested:g} | {registered:g} | {'yes' if registered >= suggested else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def rendered_cases(entries: Iterable[dict]) -> list[Case]:
    """The cases ``CALIBRATION.md`` lists: the full tier's, then any MACs-target cases calibrated."""
    cases = build_cases(tier="full")
    targeted = dict.fromkeys(entry_case(e) for e in entries if e.get("speedup"))
    return cases + [case for case in targeted if case not in cases]


def markdown_path(path: Path) -> Path:
    """``CALIBRATION.md`` beside ``calibration.json``; ``CALIBRATION-X.md`` beside ``calibration-X.json``."""
    return path.with_name("CALIBRATION" + path.stem.removeprefix("calibration") + ".md")


def record(entry: dict, path: Path, cases: Sequence[Case]) -> None:
    """Add (or replace) one run in the calibration file and re-render the Markdown beside it."""
    with FileLock(f"{path}.lock"):
        entries = [e for e in load(path) if _entry_key(e) != _entry_key(entry)]
        entries = sorted([*entries, entry], key=_entry_key)
        text = json.dumps({"confidence": CONFIDENCE, "runs": entries}, indent=1) + "\n"
        write_atomic(path, lambda f: f.write(text.encode()))
        cases = [*cases, *(c for c in rendered_cases(entries) if c not in cases)]
        write_markdown(entries, path, cases, entry.get("family", "digits"))


def write_markdown(entries: list[dict], path: Path, cases: Sequence[Case], family: str = "digits") -> str:
    """Render ``entries`` into ``CALIBRATION.md`` beside the JSON at ``path``; return the Markdown."""
    markdown = render(entries, cases, family)
    write_atomic(markdown_path(path), lambda f: f.write(markdown.encode()))
    return markdown


def machine() -> str:
    """A short name of this CPU, for the record."""
    try:
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
    except OSError:
        names = []
    return names[0].split(":", 1)[1].strip() if names else platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pruners.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds (default 0-4)")
    parser.add_argument("--models", help="comma-separated timm models (default: the bench's models)")
    parser.add_argument("--methods", help="comma-separated method names or wildcards (default: all)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument(
        "--speedup",
        "--speedups",
        dest="speedups",
        help="MACs targets (e.g. 2): calibrate every structured method at equal cost instead of its ratio",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=RECOVERY_DISTILL,
        help=f"distillation weight of the recovery, to compare recipes (default {RECOVERY_DISTILL})",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only re-render CALIBRATION.md from the JSON (after a tolerance edit)",
    )
    parser.add_argument(
        "--dataset",
        help="calibrate on a dataset named the timm way (e.g. torch/fashion_mnist) instead of the digits; "
        "its runs go to calibration-FAMILY.json beside the default file",
    )
    parser.add_argument(
        "--out", type=Path, help=f"calibration JSON (default {DEFAULT_PATH}, or calibration-FAMILY.json)"
    )
    args = parser.parse_args(argv)
    try:
        family = dataset_family(args.dataset) if args.dataset else "digits"
        args.out = args.out or (
            DEFAULT_PATH if not args.dataset else DEFAULT_PATH.with_name(f"calibration-{family}.json")
        )
        seeds = parse_seeds(args.seeds)
        todo = build_cases(
            split_csv(args.models),
            split_csv(args.methods),
            tier="full",
            speedups=parse_speedups(args.speedups),
        )
        load(args.out)
    except ValueError as err:
        parser.error(str(err))
    if not 0 <= args.distill < 1:
        parser.error(f"--distill must be in [0, 1), got {args.distill}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    full_cases = build_cases(tier="full")
    if args.render:
        entries = load(args.out)
        print(write_markdown(entries, args.out, rendered_cases(entries), family))
        return 0
    try:
        workload = torch_dataset(args.dataset) if args.dataset else digits()
    except DataDirError as err:
        parser.error(str(err))
    cpu = machine()
    for case in todo:
        for seed in seeds:
            recovery = recovery_recipe(baseline_recipe(case.model, family), args.distill)
            result = run(
                case.model,
                case.method,
                case.ratio,
                workload,
                speedup=case.speedup,
                seeds=[seed],
                latency_rounds=None,
                recovery=recovery,
            )
            paired = result.seeds[0].paired
            entry = {
                "model": case.model,
                "method": case.method,
                "ratio": case.ratio,
                "speedup": case.speedup,
                "family": family,
                "workload": workload.name,
                "ratio_found": round(result.ratio, 4),
                "macs_speedup": round(result.record.macs_speedup, 3),
                "pruned_top1_recalibrated": round(result.seeds[0].pruned_top1_recalibrated, 2),
                "seed": seed,
                "threads": torch.get_num_threads(),
                "machine": cpu,
                "torch": torch.__version__,
                "baseline_recipe": result.baseline_recipe.key,
                "recovery_recipe": result.recovery_recipe.key,
                **asdict(paired),
                "drop": round(paired.drop, 3),
                "se": round(paired.se, 3),
            }
            record(entry, args.out, full_cases)
            print(
                f"{case.id} seed {seed}: drop {paired.drop:.2f} +- {paired.se:.2f} points",
                file=sys.stderr,
                flush=True,
            )
    print(markdown_path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
