"""The ``prunebench`` command: ``prunebench sweep`` checks which timm architectures a method can prune;
``prunebench merge-benchmarks`` and ``prunebench merge-asv`` join the results of a matrix run in shards on
several machines (README, "Tracking regressions")."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch_pruning as tp

from .history import MergeError, merge_asv_results, merge_benchmark_files
from .registry import check_ratio, get_method
from .sweep import SweepRow, markdown, select_architectures, sweep, write_csv
from .zoo import write_atomic


def _merge_benchmarks(args: argparse.Namespace) -> str:
    merged = merge_benchmark_files(args.runs, out=args.out, save_to=args.save_to)
    where = " and ".join(str(p) for p in (args.out, args.save_to) if p is not None)
    return f"merged {len(merged['benchmarks'])} benchmarks from {len(args.runs)} runs into {where}"


def _merge_asv(args: argparse.Namespace) -> str:
    written = merge_asv_results(args.shards, args.out)
    return f"merged {len(args.shards)} asv result sets into {len(written)} result files under {args.out}"


def _sweep(args: argparse.Namespace) -> str:
    for module in args.imports:
        importlib.import_module(module)
    spec = get_method(args.method)
    if "train" in spec.needs:
        raise ValueError(f"method {args.method!r} needs sparse training; the sweep runs one-shot methods")
    ratio = check_ratio(args.ratio if args.ratio is not None else spec.default_ratio)
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
    write_csv(rows, args.out_dir / "sweep.csv")
    how = (
        f"Command: `prunebench {shlex.join(args.argv)}`; {wall / 60:.1f} min wall with {args.jobs} "
        f"job(s) on {os.cpu_count()} cores, torch {torch.__version__}, timm {timm.__version__}, "
        f"torch-pruning {tp.__version__}."
    )
    report = markdown(rows, args.method, ratio, how).encode()
    write_atomic(args.out_dir / "sweep.md", lambda f: f.write(report))
    ok = sum(row.ok for row in rows)
    return (
        f"{ok} of {len(rows)} architectures pass every stage in {wall:.0f} s; "
        f"wrote {args.out_dir / 'sweep.csv'} and {args.out_dir / 'sweep.md'}"
    )


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
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (e.g. one that registers your own method); repeatable",
    )
    check.set_defaults(run=_sweep)
    return parser


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
    except (MergeError, OSError, ValueError, KeyError, ImportError) as err:
        print(f"prunebench {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
