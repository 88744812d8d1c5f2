"""The ``prunebench`` command: ``prune`` one model and print what changed, ``list`` the methods and models,
``report`` saved bench runs as a table, Pareto plots and an HTML page, ``profile`` a case with
torch.profiler, ``sweep`` which timm architectures a method can prune, ``golden`` the methods' decisions on
the pinned reference models, ``gpu-check`` the GPU path on a CUDA machine; ``merge-benchmarks`` and
``merge-asv`` join the results of a matrix run in shards on several machines (README, "Tracking
regressions")."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch_pruning as tp

from . import calibrate, golden
from .case import run_case
from .convergence import convergence_lines, dense_record, plateau_text
from .files import check_writable, write_atomic
from .gpu_check import CheckFailedError, gpu_check
from .history import MergeError, merge_asv_results, merge_benchmark_files
from .matrix import Case, parse_seeds
from .models import check_model_name, get_model, list_models
from .options import add_arguments, as_flags, check, split_csv
from .profile import profile_pair
from .pruning import NothingPrunedError, case_refusal, check_target
from .registry import get_method, list_methods
from .report_page import write_report
from .result import CaseResult
from .runtimes import RUNTIMES
from .settings import bench_settings
from .sweep import SweepRow, markdown, merge_rows, read_csv, select_architectures, sweep, write_csv
from .zoo import CorruptCacheError, WeightsUnavailableError, cached_histories


def _case(args: argparse.Namespace) -> CaseResult:
    """Run the case that ``prune`` and ``profile`` are about, from their options (the bench's table)."""
    values = vars(args)
    check(values)
    get_method(args.method)
    if args.speedup is not None:
        check_target(args.method, args.speedup)
    elif args.ratio is not None:
        get_method(args.method).check_ratio(args.ratio)
        refusal = case_refusal(check_model_name(args.model), args.method, args.ratio)
        if refusal:
            raise ValueError(refusal)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = bench_settings([args.model], values)
    spec = settings.spec(Case(args.model, args.method, args.ratio, args.speedup), parse_seeds(args.seeds))
    cost = f"{spec.speedup:g}x fewer MACs" if spec.speedup else f"{spec.ratio:g}"
    print(f"prunebench: {args.model} / {args.method} @ {cost} on {spec.data.name}")
    return run_case(spec)


def _prune(args: argparse.Namespace) -> str:
    if args.out is not None:
        check_writable(args.out, "--out")
    result = _case(args)
    r = result.case_record()
    latency = r.latency
    target = f", target {r.target_speedup:g}x" if r.target_speedup else ""
    lines = [
        f"top-1     dense {r.dense_top1:.2f} %, dense control {r.dense_control_top1:.2f} %, "
        f"one-shot {r.one_shot_top1:.2f} %, BN-recalibrated {r.recalibrated_top1:.2f} %, "
        f"recovered {r.recovered_top1:.2f} %",
        f"recovery  drop from the control {r.top1_drop:+.2f}, tolerance {r.tolerance:g}: "
        f"{'pass' if r.recovery_passed else 'FAIL'}",
        f"criterion {r.criterion_gate}",
        *convergence_lines([dense_record(r.to_extra_info())]),
        f"MACs      {r.macs_dense:,} -> {r.macs_pruned:,} ({r.macs_speedup:.2f}x fewer, "
        f"ratio {r.ratio:.3f}{target})",
        f"params    {r.params_dense:,} -> {r.params_pruned:,}",
        f"latency   {latency['latency_dense_ms']:.2f} ms -> {latency['latency_pruned_ms']:.2f} ms "
        f"({latency['latency_speedup']:.2f}x, batch {r.batch_size}, {r.threads} threads, "
        f"{latency['latency_device']})",
        *runtime_lines(latency),
    ]
    if args.out is not None:
        write_atomic(args.out, lambda f: torch.save(result.pruned, f))
        lines.append(f"saved the pruned model to {args.out} (torch.load(path, weights_only=False))")
    return "\n".join(lines)


def runtime_lines(info: Mapping[str, object]) -> list[str]:
    """One line per runtime the case was timed in: dense and pruned latency and measured ÷ MACs speedup."""
    lines = []
    for runtime in RUNTIMES:
        if f"latency_{runtime}_error" in info:
            lines.append(f"{runtime:<10}not timed: {info[f'latency_{runtime}_error']}")
        elif f"latency_{runtime}_dense_ms" in info:
            lines.append(
                f"{runtime:<10}{info[f'latency_{runtime}_dense_ms']:.2f} ms -> "
                f"{info[f'latency_{runtime}_pruned_ms']:.2f} ms ({info[f'latency_{runtime}_speedup']:.2f}x, "
                f"{info[f'latency_{runtime}_per_macs']:.2f} of the MACs speedup; set-up "
                f"{info[f'latency_{runtime}_dense_setup_s']:.1f} s)"
            )
    return lines


def _profile(args: argparse.Namespace) -> str:
    check_writable(args.out_dir, "--out-dir", folder=True)
    result = _case(args)
    case = Case(
        args.model, args.method, None if result.target_speedup else result.ratio, result.target_speedup
    )
    out_dir = args.out_dir / case.id
    path = profile_pair(
        result.dense, result.pruned, result.inputs, out_dir, result.record.macs_speedup, out_dir.name
    ).markdown
    return (
        path.read_text() + f"\nwrote {path}, {out_dir / 'dense.trace.json'}, {out_dir / 'pruned.trace.json'}"
    )


def _gpu_check(args: argparse.Namespace) -> str:
    return gpu_check(args.out_dir, args.device)


def _list(args: argparse.Namespace) -> str:
    lines = []
    if args.what in ("methods", "all"):
        lines += [
            "| method | kind | unit | needs | requires | tolerance | default ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in list_methods(args.pattern):
            spec = get_method(name)
            lines.append(
                f"| {name} | {spec.kind} | {spec.unit} | {', '.join(spec.needs) or '-'} | "
                f"{', '.join(spec.requires) or '-'} | {spec.tolerance:g} | {spec.default_ratio:g}"
                f"{' only' if spec.ratios == (spec.default_ratio,) else ''} |"
            )
    if args.what in ("models", "all"):
        lines += [
            "",
            "| model | family | baseline recipe (digits) | other workloads | timm kwargs at 32 px "
            "| cached baselines: plateaued? (last epochs' top-1) |",
            "|---|---|---|---|---|---|",
        ]
        for entry in map(get_model, list_models(args.pattern)):
            recipe = f"{entry.recipe.epochs} epochs, lr {entry.recipe.lr:g}"
            others = (
                "; ".join(f"{w}: {r.epochs} epochs, lr {r.lr:g}" for w, r in entry.recipes.items()) or "-"
            )
            kwargs = ", ".join(f"{k}={v}" for k, v in entry.kwargs.items()) or "-"
            cached = "; ".join(
                f"{workload} seed {seed}: {plateau_text(history)}" if seed >= 0 else f"{workload}: unreadable"
                for workload, seed, history in cached_histories(entry.name)
            )
            lines.append(
                f"| {entry.name} | {entry.family} | {recipe} | {others} | {kwargs} | {cached or 'none'} |"
            )
    return "\n".join(lines).strip()


def _report(args: argparse.Namespace) -> str:
    check_writable(args.out_dir, "--out-dir", folder=True)
    written = write_report(args.runs, args.out_dir)
    return "wrote " + ", ".join(str(p) for p in written)


def _merge_benchmarks(args: argparse.Namespace) -> str:
    if args.out is not None:
        check_writable(args.out, "--out")
    if args.save_to is not None:
        check_writable(args.save_to, "--save-to", folder=True)
    merged = merge_benchmark_files(args.runs, out=args.out, save_to=args.save_to)
    where = " and ".join(str(p) for p in (args.out, args.save_to) if p is not None)
    return f"merged {len(merged['benchmarks'])} benchmarks from {len(args.runs)} runs into {where}"


def _merge_asv(args: argparse.Namespace) -> str:
    check_writable(args.out, "--out", folder=True)
    written = merge_asv_results(args.shards, args.out)
    return f"merged {len(args.shards)} asv result sets into {len(written)} result files under {args.out}"


def _sweep(args: argparse.Namespace) -> str:
    for module in args.imports:
        importlib.import_module(module)
    spec = get_method(args.method)
    if "train" in spec.needs:
        raise ValueError(f"method {args.method!r} needs sparse training; the sweep runs one-shot methods")
    ratio = spec.check_ratio(args.ratio if args.ratio is not None else spec.default_ratio)
    check_writable(args.out_dir, "--out-dir", folder=True)
    earlier = read_csv(args.update) if args.update else []
    start = time.perf_counter()
    archs = select_architectures(args.patterns, args.per_family)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def progress(row: SweepRow) -> None:
        status = "ok" if row.ok else f"failed at {row.failed_stage}: {row.reason}"
        print(f"{row.arch}: {status} ({row.seconds:.1f} s)", file=sys.stderr, flush=True)

    rows = sweep(
        archs,
        args.method,
        ratio,
        jobs=args.jobs,
        timeout=args.timeout,
        imports=args.imports,
        progress=progress,
    )
    wall = time.perf_counter() - start
    how = (
        f"Command: `prunebench {shlex.join(args.argv)}`; {wall / 60:.1f} min wall with {args.jobs} "
        f"job(s) on {os.cpu_count()} cores, torch {torch.__version__}, timm {timm.__version__}, "
        f"torch-pruning {tp.__version__}."
    )
    if args.update:
        kept = len(earlier) - sum(row.arch in archs for row in earlier)
        how += f" The other {kept} rows are those of `{args.update}`, an earlier sweep."
        rows = merge_rows(earlier, rows)
    write_csv(rows, args.out_dir / "sweep.csv")
    report = markdown(rows, args.method, ratio, how).encode()
    write_atomic(args.out_dir / "sweep.md", lambda f: f.write(report))
    ok = sum(row.ok for row in rows)
    return (
        f"{ok} of {len(rows)} architectures pass every stage in {wall:.0f} s; "
        f"wrote {args.out_dir / 'sweep.csv'} and {args.out_dir / 'sweep.md'}"
    )


def _golden(args: argparse.Namespace) -> str:
    if args.rebuild_models:
        top1 = golden.rebuild_models()
        print(
            "rebuilt " + ", ".join(f"{m} ({t:.2f} % held-out top-1)" for m, t in top1.items()),
            file=sys.stderr,
        )
    cases = golden.golden_cases(methods=split_csv(args.methods) or None)
    if args.update or args.rebuild_models:
        golden.update({case.id: golden.decide(case) for case in cases})
        return f"wrote {len(cases)} golden entries to {golden.GOLDEN_PATH}; review the diff"
    entries = golden.load_golden()
    changed = {case.id: golden.check(case, entries) for case in cases}
    for case_id, lines in changed.items():
        for line in lines:
            print(f"{case_id}: {line}", file=sys.stderr)
    failed = [case_id for case_id, lines in changed.items() if lines]
    if failed:
        raise golden.GoldenMismatchError(
            f"{len(failed)} of {len(cases)} cases decide differently from their golden entries: "
            f"{', '.join(failed)}; if that is intended, {golden.UPDATE_HINT}"
        )
    return f"all {len(cases)} cases decide what their golden entries say"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunebench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser(
        "merge-benchmarks",
        help="join the pytest-benchmark JSON of several shards into one run",
        description="Join the --benchmark-json files of several shards into one pytest-benchmark run.",
    )
    bench.add_argument("runs", nargs="+", type=Path, help="--benchmark-json files, one per shard")
    bench.add_argument("-o", "--out", type=Path, help="write the merged run to this JSON file")
    bench.add_argument(
        "--save-to",
        type=Path,
        help="also save it into this pytest-benchmark storage (e.g. .benchmarks) for --benchmark-compare",
    )
    bench.set_defaults(run=_merge_benchmarks)

    asv = commands.add_parser(
        "merge-asv",
        help="join the asv results directories of several shards into one result set",
        description="Join the asv results_dir of several shards (PRUNEBENCH_SHARD=I/N) into one.",
    )
    asv.add_argument("shards", nargs="+", type=Path, help="asv results directories, one per shard")
    asv.add_argument("-o", "--out", type=Path, required=True, help="results directory to merge into")
    asv.set_defaults(run=_merge_asv)

    prune = commands.add_parser(
        "prune",
        help="prune one model, recover it and print top-1, MACs, params and latency before / after",
        description="Prune the dense baseline of MODEL with METHOD, give it the bench's recovery fine-tune, "
        "score both on the held-out images and time both.",
    )
    add_arguments(prune, "prune")
    prune.add_argument("--out", type=Path, help="save the whole pruned model here (torch.save)")
    prune.set_defaults(run=_prune)

    prof = commands.add_parser(
        "profile",
        help="torch.profiler breakdown of a case: top ops, dense vs pruned, and Chrome traces",
        description="Run a case, then profile its dense and pruned model: a Markdown table of the top ops "
        "by self time with each op's speedup and share of the gap to the MACs speedup, and a Chrome trace "
        "of each model.",
    )
    add_arguments(prof, "profile")
    prof.add_argument("--out-dir", type=Path, default=Path("profiles"), help="where to write (profiles/)")
    prof.set_defaults(run=_profile)

    gpu = commands.add_parser(
        "gpu-check",
        help="prove the GPU path in minutes: bench cases on CUDA, 2:4 sparse kernels, the profiler",
        description="On a CUDA machine: run resnet18 l1, random and taylor through pytest bench/ --device "
        "cuda (also at 224 px), time the 2:4 case on PyTorch's semi-structured sparse kernels (fp16) against "
        "dense, profile one case, and print one table. Without CUDA it says so and runs nothing.",
    )
    gpu.add_argument("--out-dir", type=Path, default=Path("gpu-check"), help="where to write (gpu-check/)")
    gpu.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    gpu.set_defaults(run=_gpu_check)

    listing = commands.add_parser(
        "list", help="list the pruning methods and the bench models", description="List methods and models."
    )
    listing.add_argument("what", nargs="?", choices=("all", "methods", "models"), default="all")
    listing.add_argument("--pattern", default="*", help="wildcard over the names (default *)")
    listing.set_defaults(run=_list)

    report = commands.add_parser(
        "report",
        help="turn saved bench runs into a table, a Pareto plot per model and an HTML page",
        description="Read pytest-benchmark JSON runs (--benchmark-json / --benchmark-autosave) and write "
        "report.md, pareto_MODEL.png and report.html. With several runs the table shows the change from "
        "the first to the last, regressions marked.",
    )
    report.add_argument("runs", nargs="+", type=Path, help="pytest-benchmark JSON files, oldest first")
    report.add_argument("--out-dir", type=Path, default=Path("report"), help="where to write (report/)")
    report.set_defaults(run=_report)

    cal = commands.add_parser(
        "calibrate",
        help="measure the gates: run the tier's cases over several training seeds and render CALIBRATION.md",
        description=calibrate.__doc__.split("\n\n")[0],
    )
    add_arguments(cal, "calibrate")
    cal.add_argument(
        "--out",
        type=Path,
        help=f"calibration JSON (default {calibrate.DEFAULT_PATH}, or calibration-FAMILY.json beside it)",
    )
    cal.set_defaults(run=calibrate.calibrate)

    gold = commands.add_parser(
        "golden",
        help="check (or --update) the golden pruning decisions on the pinned reference models",
        description="Recompute every method's decisions on the reference models in pruners/reference/ and "
        "compare them with golden.json: the layers and groups that changed, one line each; exit 1 on any.",
    )
    gold.add_argument("--methods", help="comma-separated method names (default: all registered)")
    gold.add_argument("--update", action="store_true", help="rewrite the entries instead of checking them")
    gold.add_argument(
        "--rebuild-models",
        action="store_true",
        help="train the reference models again (minutes), then rewrite every entry",
    )
    gold.set_defaults(run=_golden)

    check = commands.add_parser(
        "sweep",
        help="check which timm architectures a method can prune, stage by stage",
        description="Create each timm architecture untrained, prune it and check every stage up to ONNX "
        "export, each in its own process under a time limit; write sweep.csv and sweep.md.",
    )
    check.add_argument("patterns", nargs="*", default=["*"], help="timm architecture names or wildcards")
    check.add_argument("--per-family", type=int, help="at most this many architectures of each timm family")
    check.add_argument("--method", default="l1", help="registered pruning method (default l1)")
    check.add_argument("--ratio", type=float, help="pruning ratio (default: the method's own)")
    check.add_argument("--jobs", type=int, default=1, help="architectures checked at once (default 1)")
    check.add_argument("--timeout", type=float, default=300.0, help="seconds per architecture (default 300)")
    check.add_argument("--out-dir", type=Path, default=Path("sweep"), help="where to write (default sweep/)")
    check.add_argument(
        "--update",
        type=Path,
        metavar="CSV",
        help="an earlier sweep.csv: write its rows with those of the architectures checked now replaced",
    )
    check.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (e.g. one that registers your own method); repeatable",
    )
    check.set_defaults(run=_sweep)
    return parser


# Errors that say what went wrong in their message: printed as one line, never as a traceback.
KNOWN_ERRORS = (
    MergeError,
    OSError,
    ValueError,
    KeyError,
    ImportError,
    WeightsUnavailableError,
    NothingPrunedError,
    CorruptCacheError,
    CheckFailedError,
    golden.GoldenMismatchError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "merge-benchmarks" and args.out is None and args.save_to is None:
        parser.error("merge-benchmarks needs --out and/or --save-to")
    if args.command == "sweep" and (args.jobs < 1 or args.timeout <= 0 or (args.per_family or 1) < 1):
        parser.error("--jobs and --per-family must be >= 1 and --timeout > 0")
    try:
        print(args.run(args))
    except KNOWN_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"prunebench {args.command}: error: {as_flags(str(message))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
