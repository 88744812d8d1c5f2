"""The ``prunebench`` command: ``prunebench merge-benchmarks`` and ``prunebench merge-asv`` join the results
of a matrix run in shards on several machines (README, "Tracking regressions")."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .history import MergeError, merge_asv_results, merge_benchmark_files


def _merge_benchmarks(args: argparse.Namespace) -> str:
    merged = merge_benchmark_files(args.runs, out=args.out, save_to=args.save_to)
    where = " and ".join(str(p) for p in (args.out, args.save_to) if p is not None)
    return f"merged {len(merged['benchmarks'])} benchmarks from {len(args.runs)} runs into {where}"


def _merge_asv(args: argparse.Namespace) -> str:
    written = merge_asv_results(args.shards, args.out)
    return f"merged {len(args.shards)} asv result sets into {len(written)} result files under {args.out}"


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "merge-benchmarks" and args.out is None and args.save_to is None:
        parser.error("merge-benchmarks needs --out and/or --save-to")
    try:
        print(args.run(args))
    except (MergeError, OSError) as err:
        print(f"prunebench {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
