"""The ``prunebench`` command: ``prune`` one model and print what changed, ``list`` the methods and models,
``report`` saved bench runs as a table, Pareto plots and an HTML page, ``profile`` a case with
torch.profiler, ``sweep`` which timm architectures a method can prune, ``golden`` the methods' decisions on
the pinned reference models, ``gpu-check`` the GPU path on a CUDA machine; ``merge-benchmarks`` and
``merge-asv`` join the results of a matrix run in shards on several machines (README, "Tracking
regressions")."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import calibrate, docs, golden
from .calibration import default_path
from .commands import (
    golden_command,
    gpu_check_command,
    list_command,
    merge_asv_command,
    merge_benchmarks_command,
    multiples_command,
    profile_command,
    prune_command,
    report_command,
    sensitivity_command,
    sweep_command,
)
from .gpu_check import CheckFailedError
from .history import MergeError
from .options import add_arguments, as_flags, check
from .pruning import NothingPrunedError
from .zoo import CorruptCacheError, WeightsUnavailableError


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
    bench.set_defaults(run=merge_benchmarks_command)

    asv = commands.add_parser(
        "merge-asv",
        help="join the asv results directories of several shards into one result set",
        description="Join the asv results_dir of several shards (PRUNEBENCH_SHARD=I/N) into one.",
    )
    asv.add_argument("shards", nargs="+", type=Path, help="asv results directories, one per shard")
    asv.add_argument("-o", "--out", type=Path, required=True, help="results directory to merge into")
    asv.set_defaults(run=merge_asv_command)

    prune = commands.add_parser(
        "prune",
        help="prune one model, recover it and print top-1, MACs, params and latency before / after",
        description="Prune the dense baseline of MODEL with METHOD, give it the bench's recovery fine-tune, "
        "score both on the held-out images and time both.",
    )
    add_arguments(prune, "prune")
    prune.add_argument("--out", type=Path, help="save the whole pruned model here (torch.save)")
    prune.set_defaults(run=prune_command)

    prof = commands.add_parser(
        "profile",
        help="torch.profiler breakdown of a case: top ops, dense vs pruned, and Chrome traces",
        description="Run a case, then profile its dense and pruned model: a Markdown table of the top ops "
        "by self time with each op's speedup and share of the gap to the MACs speedup, and a Chrome trace "
        "of each model.",
    )
    add_arguments(prof, "profile")
    prof.add_argument("--out-dir", type=Path, default=Path("profiles"), help="where to write (profiles/)")
    prof.set_defaults(run=profile_command)

    sens = commands.add_parser(
        "sensitivity",
        help="layer sensitivity: prune one dependency group at a time and plot top-1 against MACs removed",
        description="Prune each dependency group of MODEL alone with METHOD at each of --ratios, re-estimate "
        "BatchNorm statistics (no training), score the held-out images paired against the dense model, and "
        "write a table and a plot (drop against MACs removed) naming the groups whose MACs cost the most.",
    )
    add_arguments(sens, "sensitivity")
    sens.add_argument("--out-dir", type=Path, default=Path("report"), help="where to write (report/)")
    sens.set_defaults(run=sensitivity_command)

    mult = commands.add_parser(
        "multiples",
        help="measured ÷ MACs speed-up per channel multiple: one MACs target, channels rounded to 8, 4, 2, 1",
        description="Prune MODEL's dense baseline with METHOD to one MACs target (--speedup, default the "
        "model's) with the remaining channel counts rounded to each multiple in turn, and time each against "
        "the dense model in the one --runtime (default eager) at --latency-size, in alternation.",
    )
    add_arguments(mult, "multiples")
    mult.set_defaults(run=multiples_command)

    gpu = commands.add_parser(
        "gpu-check",
        help="prove the GPU path in minutes: bench cases on CUDA, 2:4 sparse kernels, the profiler",
        description="On a CUDA machine: run resnet18 l1, random and taylor through pytest bench/ --device "
        "cuda (also at 224 px), time the 2:4 case on PyTorch's semi-structured sparse kernels (fp16) against "
        "dense, profile one case, and print one table. Without CUDA it says so and runs nothing.",
    )
    gpu.add_argument("--out-dir", type=Path, default=Path("gpu-check"), help="where to write (gpu-check/)")
    gpu.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")
    gpu.set_defaults(run=gpu_check_command)

    listing = commands.add_parser(
        "list", help="list the pruning methods and the bench models", description="List methods and models."
    )
    listing.add_argument("what", nargs="?", choices=("all", *docs.BLOCKS), default="all")
    listing.add_argument("--pattern", default="*", help="wildcard over the names (default *)")
    listing.set_defaults(run=list_command)

    report = commands.add_parser(
        "report",
        help="turn saved bench runs into a table, a Pareto plot per model and an HTML page",
        description="Read pytest-benchmark JSON runs (--benchmark-json / --benchmark-autosave) and write "
        "report.md, pareto_MODEL.png and report.html. With several runs the table shows the change from "
        "the first to the last, regressions marked.",
    )
    report.add_argument("runs", nargs="+", type=Path, help="pytest-benchmark JSON files, oldest first")
    report.add_argument("--out-dir", type=Path, default=Path("report"), help="where to write (report/)")
    report.set_defaults(run=report_command)

    cal = commands.add_parser(
        "calibrate",
        help="measure the gates: run the tier's cases over several training seeds and render CALIBRATION.md",
        description=calibrate.__doc__.split("\n\n")[0],
    )
    add_arguments(cal, "calibrate")
    cal.add_argument(
        "--out",
        type=Path,
        help=f"calibration JSON (default {default_path()}, or calibration-FAMILY.json beside it)",
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
    gold.set_defaults(run=golden_command)

    check = commands.add_parser(
        "sweep",
        help="check which timm architectures a method can prune, stage by stage",
        description="Create each timm architecture untrained, prune it and check every stage up to ONNX "
        "export, each in its own process under a time limit; write sweep.csv and sweep.md.",
    )
    check.add_argument("patterns", nargs="*", default=["*"], help="timm architecture names or wildcards")
    check.add_argument("--method", default="l1", help="the one-shot method to sweep with (default l1)")
    check.add_argument("--out-dir", type=Path, default=Path("sweep"), help="where to write (default sweep/)")
    add_arguments(check, "sweep")
    check.set_defaults(run=sweep_command)
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
    if args.command == "sweep":
        args.imports = args.imports or []
        try:
            check(vars(args))
        except ValueError as err:
            parser.error(as_flags(str(err)))
    try:
        print(args.run(args))
    except KNOWN_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"prunebench {args.command}: error: {as_flags(str(message))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
