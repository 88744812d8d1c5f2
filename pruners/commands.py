"""What each ``prunebench`` command does, given its parsed arguments; :mod:`pruners.cli` builds the parser."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from collections.abc import Mapping

import timm
import torch
import torch_pruning as tp

from . import docs, golden
from .case import CALIB_BATCH_SIZE, method_data, run_case, spec_baseline
from .case_timing import latency_inputs
from .convergence import convergence_lines, plateau_text
from .files import check_writable, write_atomic
from .gates import GATES
from .gpu_check import gpu_check
from .history import merge_asv_results, merge_benchmark_files
from .latency_target import RuntimeMeter, multiples_study, multiples_table
from .matrix import Case, parse_seeds
from .models import check_model_name, default_target, list_models
from .options import check, split_csv
from .profile import profile_pair
from .registry import check_ratio, get_method
from .report_page import write_report
from .result import CaseResult
from .runtimes import RUNTIMES
from .sensitivity import DEFAULT_RATIOS, layer_sensitivity
from .settings import bench_settings
from .spec import CaseSpec, check_cost
from .sweep import SweepRow, select_architectures, sweep
from .sweep_report import markdown, merge_rows, read_csv, write_csv
from .tables import markdown_table
from .zoo import cached_histories


def case_command(args: argparse.Namespace) -> tuple[CaseSpec, CaseResult]:
    """Run the case that ``prune`` and ``profile`` are about, from their options (the bench's table)."""
    values = vars(args)
    check(values)
    latency = args.latency_speedup
    if latency is None:
        check_cost(check_model_name(args.model), args.method, args.ratio, args.speedup)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = bench_settings([args.model], values)
    case = Case(args.model, args.method, args.ratio, args.speedup, latency)
    spec = settings.spec(case, parse_seeds(args.seeds))
    cost = f"{spec.speedup:g}x fewer MACs" if spec.speedup else f"{spec.ratio:g}"
    if latency is not None:
        cost = f"{latency:g}x measured latency ({spec.latency_runtime})"
    print(f"prunebench: {args.model} / {args.method} @ {cost} on {spec.data.name}")
    return spec, run_case(spec)


def prune_command(args: argparse.Namespace) -> str:
    if args.out is not None:
        check_writable(args.out, "--out")
    _, result = case_command(args)
    r = result.case_record()
    latency = r.latency
    target = f", target {r.target_speedup:g}x" if r.target_speedup else ""
    lines = [
        f"top-1     dense {r.dense_top1:.2f} %, dense control {r.dense_control_top1:.2f} %, "
        f"one-shot {r.one_shot_top1:.2f} %, BN-recalibrated {r.recalibrated_top1:.2f} %, "
        f"recovered {r.recovered_top1:.2f} %",
        *(line for gate in GATES if (line := gate.line(r))),
        *convergence_lines([r]),
        f"MACs      {r.macs_dense:,} -> {r.macs_pruned:,} ({r.macs_speedup:.2f}x fewer, "
        f"ratio {r.ratio:.3f}{target})",
        f"params    {r.params_dense:,} -> {r.params_pruned:,}",
        f"latency   {latency['latency_dense_ms']:.2f} ms -> {latency['latency_pruned_ms']:.2f} ms "
        f"({latency['latency_speedup']:.2f}x, batch {r.batch_size}, {r.threads} threads, "
        f"{latency['latency_device']})",
        *runtime_lines(latency),
    ]
    if "latency_at_size_dense_ms" in latency:
        lines += [
            f"at {latency['latency_at_size_img_size']} px (--latency-size): "
            f"{latency['latency_at_size_dense_ms']:.2f} ms -> {latency['latency_at_size_pruned_ms']:.2f} ms "
            f"({latency['latency_at_size_speedup']:.2f}x)",
            *runtime_lines(latency, "latency_at_size"),
        ]
    if args.out is not None:
        write_atomic(args.out, lambda f: torch.save(result.pruned, f))
        lines.append(f"saved the pruned model to {args.out} (torch.load(path, weights_only=False))")
    return "\n".join(lines)


def runtime_lines(info: Mapping[str, object], prefix: str = "latency") -> list[str]:
    """One line per runtime the case was timed in: dense and pruned latency and measured ÷ MACs speedup,
    at the workload's size (``prefix`` "latency") or at ``--latency-size`` ("latency_at_size")."""
    lines = []
    for runtime in RUNTIMES:
        key = f"{prefix}_{runtime}"
        if f"{key}_error" in info:
            lines.append(f"{runtime:<12}not timed: {info[f'{key}_error']}")
        elif f"{key}_dense_ms" in info:
            lines.append(
                f"{runtime:<12}{info[f'{key}_dense_ms']:.2f} ms -> {info[f'{key}_pruned_ms']:.2f} ms "
                f"({info[f'{key}_speedup']:.2f}x, {info[f'{key}_per_macs']:.2f} of the MACs speedup; "
                f"set-up {info[f'{key}_dense_setup_s']:.1f} s)"
            )
    return lines


def profile_command(args: argparse.Namespace) -> str:
    check_writable(args.out_dir, "--out-dir", folder=True)
    spec, result = case_command(args)
    out_dir = args.out_dir / result.case.id
    inputs = latency_inputs(result.inputs, spec.timing)
    macs = result.record.macs_speedup
    path = profile_pair(result.dense, result.pruned, inputs, out_dir, macs, out_dir.name).markdown
    return (
        path.read_text() + f"\nwrote {path}, {out_dir / 'dense.trace.json'}, {out_dir / 'pruned.trace.json'}"
    )


def gpu_check_command(args: argparse.Namespace) -> str:
    return gpu_check(args.out_dir, args.device)


def list_command(args: argparse.Namespace) -> str:
    """The tables of ``docs/reference.md`` (methods and models filtered by ``--pattern``), and for models
    whether each cached baseline had plateaued."""
    names = list(docs.BLOCKS) if args.what == "all" else [args.what]
    parts = []
    for name in names:
        table = docs.BLOCKS[name]
        parts.append(table(args.pattern) if name in ("methods", "models") else table())
        if name == "models":
            cached = [
                (
                    f"`{model}`",
                    workload,
                    seed if seed >= 0 else "-",
                    plateau_text(history) if seed >= 0 else "unreadable",
                )
                for model in list_models(args.pattern)
                for workload, seed, history in cached_histories(model)
            ]
            if cached:
                header = ("model", "workload", "seed", "plateaued? (last epochs' top-1)")
                parts.append("Cached baselines:\n\n" + markdown_table(header, cached))
    return "\n\n".join(parts)


def report_command(args: argparse.Namespace) -> str:
    check_writable(args.out_dir, "--out-dir", folder=True)
    written = write_report(args.runs, args.out_dir)
    return "wrote " + ", ".join(str(p) for p in written)


def merge_benchmarks_command(args: argparse.Namespace) -> str:
    if args.out is not None:
        check_writable(args.out, "--out")
    if args.save_to is not None:
        check_writable(args.save_to, "--save-to", folder=True)
    merged = merge_benchmark_files(args.runs, out=args.out, save_to=args.save_to)
    where = " and ".join(str(p) for p in (args.out, args.save_to) if p is not None)
    return f"merged {len(merged['benchmarks'])} benchmarks from {len(args.runs)} runs into {where}"


def merge_asv_command(args: argparse.Namespace) -> str:
    check_writable(args.out, "--out", folder=True)
    written = merge_asv_results(args.shards, args.out)
    return f"merged {len(args.shards)} asv result sets into {len(written)} result files under {args.out}"


def sweep_command(args: argparse.Namespace) -> str:
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


def golden_command(args: argparse.Namespace) -> str:
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


def sensitivity_command(args: argparse.Namespace) -> str:
    """``prunebench sensitivity``: scan the method's groups on the model's dense baseline, write the table
    and the plot into ``--out-dir``, and return the table."""
    values = vars(args)
    check(values)
    check_writable(args.out_dir, "--out-dir", folder=True)
    ratios = tuple(check_ratio(r) for r in split_csv(args.ratios)) or DEFAULT_RATIOS
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = bench_settings([check_model_name(args.model)], values)
    seeds = parse_seeds(args.seeds)[:1]
    spec = settings.spec(Case(args.model, args.method, ratios[0]), seeds, timed=False)
    result = layer_sensitivity(spec, ratios)
    written = result.write(args.out_dir)
    return result.markdown() + "\n" + "\n".join(f"wrote {p}" for p in written)


def multiples_command(args: argparse.Namespace) -> str:
    """``prunebench multiples``: the model's dense baseline pruned to one MACs target with channel counts
    rounded to each multiple, each timed against the dense model in the one ``--runtime`` at
    ``--latency-size``; the table of measured ÷ MACs per multiple."""
    values = vars(args)
    check(values)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = bench_settings([check_model_name(args.model)], values)
    seed = parse_seeds(args.seeds)[0]
    speedup = args.speedup or default_target(args.model, settings.workload(args.model).family)
    spec = settings.spec(Case(args.model, args.method, None, speedup), [seed], timed=False)
    runtime = spec.latency_runtime
    dense = spec_baseline(spec, seed).model
    inputs = spec.data.test_batch(spec.timing.batch_size).to(next(dense.parameters()).device)
    timed = latency_inputs(inputs, spec.timing)
    meter = RuntimeMeter(runtime, dense, timed, rounds=max(args.latency_rounds, 2))
    data = method_data(args.method, spec.data, CALIB_BATCH_SIZE, spec.recovery_recipe, dense, seed)
    rows = multiples_study(
        dense, args.method, speedup, inputs, meter, data.calib, sparse_train=data.sparse_train
    )
    where = f"{runtime} at {timed.shape[-1]} px, batch {len(timed)}, {torch.get_num_threads()} threads"
    head = (
        f"{args.model} / {args.method} at {speedup:g}x fewer MACs, timed in {where} ({meter.rounds} rounds)"
    )
    return head + "\n\n" + multiples_table(rows)
