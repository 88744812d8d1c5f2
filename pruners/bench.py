"""The bench's one test, :func:`test_prune`: collect it by importing it into a test module (this repository's
``bench/test_matrix.py``), or with ``pytest --prunebench --pyargs pruners.bench``. The plugin
(:mod:`pruners.matrix_plugin`) parametrises it over the cases and supplies its fixtures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from .case import check_accuracy, run_case
from .case_timing import latency_inputs
from .matrix import Case
from .measure import timed_forward
from .options import as_flags
from .profile import profile_pair
from .pruning import TargetUnreachableError
from .settings import BenchSettings
from .zoo import CorruptCacheError


def test_prune(
    case: Case,
    settings: BenchSettings,
    seeds: list[int],
    benchmark,
    opts,
    publish_record: Callable[[Mapping[str, object]], None],
) -> None:
    """Prune, recover and score ``case`` once per seed, time dense and pruned, record the figures in
    ``extra_info``, hand them to the run's summary and fail when the recovery gate does."""
    corrupt = ""
    try:
        spec = settings.spec(case, seeds, timed=benchmark.enabled)
        result = run_case(spec)
    except TargetUnreachableError as err:
        pytest.skip(f"prunebench: left out {case.id} (target unreachable: {err})")
    except CorruptCacheError as err:
        corrupt = as_flags(str(err))
    if corrupt:
        pytest.fail(corrupt, pytrace=False)
    record = result.case_record()
    benchmark.extra_info.update(record.to_extra_info())
    publish_record(benchmark.extra_info)
    forward = timed_forward(result.pruned, result.inputs, settings.timing)
    benchmark.pedantic(forward, rounds=opts.latency_rounds, warmup_rounds=3, iterations=1)
    if opts.profile_dir:
        out_dir = Path(opts.profile_dir) / case.id
        inputs = latency_inputs(result.inputs, spec.timing)
        profile_pair(result.dense, result.pruned, inputs, out_dir, result.record.macs_speedup, case.id)
    check_accuracy(result)
