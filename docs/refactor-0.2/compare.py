"""Compare two bench runs figure by figure, timings aside: every field of each case's CaseRecord (read from
either schema) and of each seed's figures, per-image correctness included. Used to check that the 0.2
refactor changed no result: ``python docs/refactor-0.2/compare.py before.json after.json``."""

import json
import sys
from pathlib import Path

from pruners.record import CaseRecord

TIMINGS = {"prune_seconds", "recovery_seconds", "baseline_train_seconds", "control_train_seconds"}


def records(path: str) -> dict[str, CaseRecord]:
    runs = json.loads(Path(path).read_text())["benchmarks"]
    return {bench["name"]: CaseRecord.from_extra_info(bench["extra_info"]) for bench in runs}


def figures(record: CaseRecord) -> dict[str, object]:
    info = {k: v for k, v in vars(record).items() if k not in ("latency", "per_seed")}
    for i, seed in enumerate(record.per_seed):
        info.update({f"per_seed[{i}].{k}": v for k, v in seed.items() if k not in TIMINGS})
    return info


def main(before: str, after: str) -> int:
    old, new = records(before), records(after)
    if old.keys() != new.keys():
        print(f"different cases: {sorted(old.keys() ^ new.keys())}")
        return 1
    compared = differ = 0
    for name in sorted(old):
        a, b = figures(old[name]), figures(new[name])
        for key in sorted(a.keys() | b.keys()):
            compared += 1
            if a.get(key) != b.get(key):
                differ += 1
                print(f"{name} {key}: {a.get(key)!r} -> {b.get(key)!r}")
    print(f"{len(old)} cases, {compared} figures compared (latency and timings aside), {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
