"""model x method x ratio cases: prune, recover, gate the top-1 drop, time the pruned model."""

from __future__ import annotations

from pathlib import Path

import pytest

import pruners
from pruners.matrix import Case
from pruners.measure import timed_forward
from pruners.profile import profile_pair
from pruners.report import ReportRow, dense_record, row_from_info
from pruners.settings import BenchSettings


def test_prune(
    case: Case,
    workload: pruners.Workload,
    settings: BenchSettings,
    seeds: list[int],
    benchmark,
    opts,
    rows: list[ReportRow],
    record_property,
) -> None:
    corrupt = ""
    try:
        result = _run(case, workload, settings, seeds, benchmark.enabled, opts)
    except pruners.TargetUnreachableError as err:
        pytest.skip(f"prunebench: left out {case.id} (target unreachable: {err})")
    except pruners.CorruptCacheError as err:
        corrupt = str(err)
    if corrupt:
        pytest.fail(corrupt, pytrace=False)
    benchmark.extra_info.update(result.summary())
    record_property("prunebench_dense", dense_record(benchmark.extra_info))
    forward = timed_forward(result.pruned, result.inputs, settings.timing)
    benchmark.pedantic(forward, rounds=opts.latency_rounds, warmup_rounds=3, iterations=1)
    if benchmark.enabled:
        rows.append(row_from_info(benchmark.extra_info, case.id))
    if opts.profile_dir:
        out_dir = Path(opts.profile_dir) / case.id
        profile_pair(result.dense, result.pruned, result.inputs, out_dir, result.record.macs_speedup, case.id)
    pruners.check_accuracy(result)


def _run(
    case: Case, workload: pruners.Workload, settings: BenchSettings, seeds: list[int], timed: bool, opts
) -> pruners.CaseResult:
    return pruners.run(
        case.model,
        case.method,
        case.ratio,
        workload,
        speedup=case.speedup,
        seeds=seeds,
        batch_size=opts.batch_size,
        latency_rounds=opts.latency_rounds if timed else None,
        recovery_epochs=settings.recovery_epochs,
        weights=settings.weights,
        timing=settings.timing,
        latency_size=settings.latency_size_for(case.model),
        runtimes=settings.runtimes,
    )
