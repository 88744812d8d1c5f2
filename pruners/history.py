"""Regression history: the pytest-benchmark comparison gate's first run, and merging sharded results.

A matrix split with ``--shard I/N`` (pytest) or ``PRUNEBENCH_SHARD=I/N`` (asv) runs on N machines; the
functions here join the N pytest-benchmark JSON files into one run and the N asv result directories into
one result set, refusing shards that ran different commits or code, or measured the same case twice.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .files import write_atomic

if TYPE_CHECKING:
    import pytest

log = logging.getLogger(__name__)


class MergeError(ValueError):
    """Shard results that cannot be one run: different commits or code, or a case measured twice."""


def first_run_without_baseline(config: pytest.Config) -> str | None:
    """Let ``--benchmark-compare-fail`` pass on a first run, when there is no saved run to compare with.

    pytest-benchmark would run the whole matrix and then stop with a usage error; instead the check is
    dropped for this run and the returned line (for the terminal summary) says so. ``None`` otherwise.
    """
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.compare_fail or session.compared_mapping:
        return None
    session.compare_fail = []
    return (
        f"prunebench: no saved run in {session.storage} to compare with, so --benchmark-compare-fail "
        "checked nothing this time; --benchmark-autosave saves this run as the first."
    )


def merge_benchmark_runs(runs: Sequence[dict]) -> dict:
    """One pytest-benchmark run from the JSON of its shards: every benchmark once, sorted by name.

    Raises :class:`MergeError` when the shards ran different commits or share a benchmark.
    """
    if not runs:
        raise MergeError("no pytest-benchmark runs to merge")
    commits = {run.get("commit_info", {}).get("id") for run in runs}
    if len(commits) > 1:
        raise MergeError(f"shards ran different commits: {', '.join(sorted(map(str, commits)))}")
    benchmarks = [bench for run in runs for bench in run["benchmarks"]]
    twice = sorted(name for name, n in Counter(b["fullname"] for b in benchmarks).items() if n > 1)
    if twice:
        raise MergeError(f"benchmarks in more than one shard: {', '.join(twice)}")
    return {**runs[0], "benchmarks": sorted(benchmarks, key=lambda b: b["fullname"])}


def merge_benchmark_files(
    paths: Sequence[Path], out: Path | None = None, save_to: Path | None = None
) -> dict:
    """Merge pytest-benchmark ``--benchmark-json`` files; write the run to ``out`` and/or save it into the
    pytest-benchmark storage ``save_to`` (as ``NNNN_merged.json``, where ``--benchmark-compare`` finds it)."""
    runs = []
    for path in paths:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise MergeError(f"{path}: not a pytest-benchmark JSON file: {err}") from err
    merged = merge_benchmark_runs(runs)
    if out is not None:
        write_atomic(Path(out), lambda f: f.write(json.dumps(merged, indent=4).encode()))
    if save_to is not None:
        from pytest_benchmark.storage.file import FileStorage
        from pytest_benchmark.utils import get_machine_id

        FileStorage(save_to, log, default_machine_id=get_machine_id()).save(merged, "merged")
    return merged


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def merge_asv_result(name: str, columns: Sequence[str], first: list, second: list) -> list:
    """Merge one benchmark's entry of two asv result files: each parameter combination from the shard
    that measured it (the other shard skipped it)."""
    a, b = dict(zip(columns, first, strict=False)), dict(zip(columns, second, strict=False))
    if (a.get("params"), a.get("version")) != (b.get("params"), b.get("version")):
        raise MergeError(f"{name}: the shards ran different parameters or benchmark code")
    merged = dict(a)
    per_combo = [c for c in columns if isinstance(a.get(c) or b.get(c), list) and c != "params"]
    size = len(a["result"])
    for column in per_combo:
        merged[column] = list(a.get(column) or [None] * size)
    for i, value in enumerate(b["result"]):
        if _missing(value):
            continue
        if not _missing(a["result"][i]):
            combo = ", ".join(list(itertools.product(*a["params"]))[i])
            raise MergeError(f"{name} ({combo}) was measured in two shards")
        for column in per_combo:
            merged[column][i] = (b.get(column) or [None] * size)[i]
    merged["started_at"] = min(a["started_at"], b["started_at"])
    merged["duration"] = a["duration"] + b["duration"]
    row = [merged.get(c) for c in columns]
    while row and row[-1] is None:
        row.pop()
    return row


def merge_asv_result_files(first: dict, second: dict) -> dict:
    """Merge two asv result files (one commit, one environment) written by different shards."""
    keys = ("commit_hash", "env_name", "result_columns")
    if any(first.get(k) != second.get(k) for k in keys):
        raise MergeError(
            f"asv results of different commits or environments: {first.get('commit_hash')} "
            f"({first.get('env_name')}) and {second.get('commit_hash')} ({second.get('env_name')})"
        )
    columns = first["result_columns"]
    results = dict(first["results"])
    for name, entry in second["results"].items():
        results[name] = merge_asv_result(name, columns, results[name], entry) if name in results else entry
    durations = Counter(first.get("durations", {}))
    durations.update(second.get("durations", {}))
    return {
        **first,
        "results": results,
        "durations": dict(durations),
        "date": max(first["date"], second["date"]),
    }


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=4, allow_nan=True).encode()))


def merge_asv_results(shard_dirs: Sequence[Path], out: Path) -> list[Path]:
    """Merge the asv ``results_dir`` trees of several shards into ``out``.

    ``out`` may already hold history: results of other commits are kept, and a result file of the same
    commit and environment is replaced, as ``asv run`` replaces it on a re-run. Returns the result files
    written. Raises :class:`MergeError` when the shards disagree on the benchmarks or overlap.
    """
    out = Path(out)
    benchmarks: dict = {}
    machines: dict[str, Path] = {}
    results: dict[Path, dict] = {}
    for shard_dir in map(Path, shard_dirs):
        if not (shard_dir / "benchmarks.json").is_file():
            raise MergeError(f"{shard_dir}: not an asv results directory (no benchmarks.json)")
        for name, spec in json.loads((shard_dir / "benchmarks.json").read_text()).items():
            if name in benchmarks and benchmarks[name] != spec:
                raise MergeError(f"{name}: the shards ran different benchmark code or parameters")
            benchmarks[name] = spec
        for machine_json in shard_dir.glob("*/machine.json"):
            machines.setdefault(machine_json.parent.name, machine_json)
        for path in sorted(shard_dir.glob("*/*.json")):
            if path.name != "machine.json":
                data = json.loads(path.read_text())
                key = path.relative_to(shard_dir)
                results[key] = merge_asv_result_files(results[key], data) if key in results else data
    known = out / "benchmarks.json"
    _write_json(known, {**(json.loads(known.read_text()) if known.exists() else {}), **benchmarks})
    for machine, source in machines.items():
        (out / machine).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / machine / "machine.json")
    for key, data in results.items():
        _write_json(out / key, data)
    return sorted(out / key for key in results)
