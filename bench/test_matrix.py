"""model x method x ratio cases: prune, recover, gate the top-1 drop, time the pruned model."""

from __future__ import annotations

import torch

import pruners
from pruners.matrix import Case


def test_prune(case: Case, workload: pruners.Workload, seeds: list[int], benchmark, opts) -> None:
    result = pruners.run(
        case.model,
        case.method,
        case.ratio,
        workload,
        seeds=seeds,
        batch_size=opts.batch_size,
        latency_rounds=opts.latency_rounds if benchmark.enabled else None,
    )
    benchmark.extra_info.update(result.summary())
    with torch.inference_mode():
        benchmark.pedantic(
            result.pruned, args=(result.inputs,), rounds=opts.latency_rounds, warmup_rounds=3, iterations=1
        )
    pruners.check_accuracy(result)
