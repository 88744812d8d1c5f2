"""The criterion gate on training seeds its calibration never saw (issue 30): for every default-tier case
and seed, the same steps as ``pruners.case._run_seed`` up to the BatchNorm-recalibrated one-shot model (no
recovery, which the criterion gate does not read), judged against the shipped level and band.

``python docs/criterion-gate/unseen_seeds.py --seeds 5-12 --out runs.jsonl`` appends one JSON line per case
and seed as it finishes and skips those already there, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import pruners
from pruners import recipes, zoo
from pruners.case import CALIB_BATCH_SIZE, method_data
from pruners.gate import PairedDrop, band
from pruners.levels import criterion_level
from pruners.matrix import build_cases
from pruners.measure import correct
from pruners.train import recalibrate_batchnorm


def judge(case, seed: int, workload: pruners.Workload) -> dict:
    baseline = zoo.load_baseline(case.model, workload, seed=seed)
    recovery = recipes.recovery_recipe(baseline.recipe)
    level, missing = criterion_level(workload.family, case.id, baseline.recipe.key, recovery.key)
    if level is None:
        raise SystemExit(missing)
    data = method_data(case.method, workload, CALIB_BATCH_SIZE, recovery, baseline.model, seed, case.model)
    inputs = workload.test_batch(32)
    torch.manual_seed(seed)
    if case.speedup is not None:
        pruned, _ = pruners.prune_to_speedup(
            baseline.model, case.method, case.speedup, inputs, data.calib, sparse_train=data.sparse_train
        )
    else:
        pruned, _ = pruners.prune(
            baseline.model, case.method, case.ratio, inputs, data.calib, sparse_train=data.sparse_train
        )
    recalibrated, _ = recalibrate_batchnorm(pruned, workload, seed=seed)
    test = workload.loader("test", 256)
    drop = PairedDrop.from_correct(correct(baseline.model, test), correct(recalibrated, test))
    verdict = band([drop], level.level, level.tolerance)
    return {
        "case": case.id,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "criterion_drop": round(drop.drop, 3),
        "criterion_se": round(drop.se, 3),
        "level": level.level,
        "tolerance": level.tolerance,
        "passed": verdict.passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="5-12", help="first-last training seeds (default 5-12)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    first, last = map(int, args.seeds.split("-"))
    done = set()
    if args.out.exists():
        done = {(r["case"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())}
    workload = pruners.digits()
    for seed in range(first, last + 1):
        for case in build_cases(tier="default"):
            if (case.id, seed) in done:
                continue
            row = judge(case, seed, workload)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(row, flush=True)


if __name__ == "__main__":
    main()
