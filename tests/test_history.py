"""Regression history: the pytest-benchmark gate end to end, sharded runs merged, asv results merged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pruners.cli import main
from pruners.history import (
    MergeError,
    merge_asv_result_files,
    merge_asv_results,
    merge_benchmark_files,
    merge_benchmark_runs,
)
from pruners.matrix import build_cases

ROOT = Path(__file__).resolve().parents[1]
SELECTION = ["--models", "resnet18,mobilenetv3_small_100", "--methods", "l1,random"]

# Stands in for test_matrix.py: the bench's own conftest picks the cases and shards; the "pruned model"
# sleeps for a fixed time, longer when SLOW is set, so that a slowdown is deliberate and unmistakable.
BENCH_FILE = """
import os, time
from torch import nn

class Pruned(nn.Module):
    def forward(self, x):
        time.sleep(0.004 * (3 if os.environ.get("SLOW") else 1))
        return x

def test_prune(case, benchmark):
    benchmark.extra_info["case"] = case.id
    benchmark.pedantic(Pruned(), args=(0,), rounds=7, warmup_rounds=1, iterations=1)
"""


@pytest.fixture
def bench(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((ROOT / "bench" / "conftest.py").read_text())
    pytester.makepyfile(test_matrix=BENCH_FILE)
    return pytester


def _names(run: dict) -> list[str]:
    return sorted(b["fullname"] for b in run["benchmarks"])


@pytest.mark.slow
def test_two_shards_merge_into_the_unsharded_run(bench: pytest.Pytester, tmp_path: Path) -> None:
    bench.runpytest(*SELECTION, "--benchmark-json", tmp_path / "all.json").assert_outcomes(passed=4)
    for i in (1, 2):
        result = bench.runpytest(*SELECTION, "--shard", f"{i}/2", "--benchmark-json", tmp_path / f"{i}.json")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"prunebench: 2 cases, shard {i}/2 of 4, seeds [0]"])
    merged = merge_benchmark_files([tmp_path / "1.json", tmp_path / "2.json"], out=tmp_path / "merged.json")
    unsharded = json.loads((tmp_path / "all.json").read_text())
    assert _names(merged) == _names(unsharded) == _names(json.loads((tmp_path / "merged.json").read_text()))
    ids = {c.id for c in build_cases(["resnet18", "mobilenetv3_small_100"], ["l1", "random"])}
    assert {b["extra_info"]["case"] for b in merged["benchmarks"]} == ids


@pytest.mark.slow
def test_compare_gate_first_run_then_a_deliberate_slowdown(
    bench: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = [
        "--methods",
        "l1",
        "--models",
        "resnet18",
        "--benchmark-compare",
        "--benchmark-compare-fail=median:25%",
    ]
    first = bench.runpytest(*gate, "--benchmark-autosave")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*no saved run in * to compare with*--benchmark-autosave saves this run*"])
    assert len(list(bench.path.glob(".benchmarks/*/0001_*.json"))) == 1

    same = bench.runpytest(*gate)
    assert same.ret == 0, same.stdout.str()
    assert "no saved run" not in same.stdout.str()

    monkeypatch.setenv("SLOW", "1")
    slowed = bench.runpytest_subprocess(*gate)
    assert slowed.ret == 1
    slowed.stderr.fnmatch_lines(
        ["Performance has regressed:", "*test_prune*'median' has failed PercentageRegressionCheck*> 25*"]
    )


def _bench_run(commit: str, names: list[str]) -> dict:
    return {
        "commit_info": {"id": commit},
        "machine_info": {"node": "a"},
        "benchmarks": [{"fullname": n, "stats": {"median": 1.0}} for n in names],
    }


def test_benchmark_merge_refuses_overlap_and_mixed_commits() -> None:
    merged = merge_benchmark_runs([_bench_run("c1", ["t[b]"]), _bench_run("c1", ["t[a]"])])
    assert _names(merged) == ["t[a]", "t[b]"] and merged["commit_info"] == {"id": "c1"}
    with pytest.raises(MergeError, match=r"benchmarks in more than one shard: t\[a\]"):
        merge_benchmark_runs([_bench_run("c1", ["t[a]"]), _bench_run("c1", ["t[a]"])])
    with pytest.raises(MergeError, match="shards ran different commits: c1, c2"):
        merge_benchmark_runs([_bench_run("c1", ["t[a]"]), _bench_run("c2", ["t[b]"])])


COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b"]
PARAMS = [["'resnet18'", "'vit'"], ["'l1'"]]


def _asv_file(commit: str, results: dict[str, list]) -> dict:
    return {
        "commit_hash": commit,
        "env_name": "existing-py",
        "date": 1,
        "result_columns": COLUMNS,
        "results": results,
        "durations": {"<setup_cache pruning:31>": 10.0},
        "version": 2,
    }


def _shard(values: list[float], ci: list[float | None] | None = None) -> list:
    entry = [values, PARAMS, "v1", 100, 5.0]
    return [*entry, ci, ci] if ci else entry


NAN = float("nan")


def test_asv_entries_take_each_combination_from_the_shard_that_measured_it() -> None:
    a = _asv_file(
        "c1", {"t.time_pruned": _shard([0.5, NAN], [0.4, None]), "t.track_macs": _shard([7.0, NAN])}
    )
    b = _asv_file(
        "c1", {"t.time_pruned": _shard([NAN, 0.9], [None, 0.8]), "t.track_macs": _shard([NAN, 3.0])}
    )
    merged = merge_asv_result_files(a, b)
    assert merged["results"]["t.time_pruned"] == [[0.5, 0.9], PARAMS, "v1", 100, 10.0, [0.4, 0.8], [0.4, 0.8]]
    assert merged["results"]["t.track_macs"] == [[7.0, 3.0], PARAMS, "v1", 100, 10.0]
    assert merged["durations"] == {"<setup_cache pruning:31>": 20.0}
    with pytest.raises(MergeError, match=r"t.time_pruned \(.resnet18., .l1.\) was measured in two shards"):
        merge_asv_result_files(a, a)
    with pytest.raises(MergeError, match="different commits or environments"):
        merge_asv_result_files(a, _asv_file("c2", {}))
    changed = _asv_file("c1", {"t.track_macs": [[NAN, 3.0], PARAMS, "v2", 100, 5.0]})
    with pytest.raises(MergeError, match="different parameters or benchmark code"):
        merge_asv_result_files(a, changed)


def _write_results(root: Path, files: dict[str, dict], benchmarks: dict | None = None) -> Path:
    (root / "ci-2core").mkdir(parents=True)
    (root / "benchmarks.json").write_text(json.dumps(benchmarks or {"t.track_macs": {"version": "v1"}}))
    (root / "ci-2core" / "machine.json").write_text(json.dumps({"machine": "ci-2core", "version": 1}))
    for name, data in files.items():
        (root / "ci-2core" / name).write_text(json.dumps(data))
    return root


def test_asv_result_dirs_merge_into_history(tmp_path: Path) -> None:
    old = _asv_file("c0", {"t.track_macs": _shard([9.0, 9.0])})
    stale = _asv_file("c1", {"t.track_macs": _shard([1.0, 1.0])})
    out = _write_results(tmp_path / "out", {"c0-existing-py.json": old, "c1-existing-py.json": stale})
    one = _write_results(
        tmp_path / "1", {"c1-existing-py.json": _asv_file("c1", {"t.track_macs": _shard([7.0, NAN])})}
    )
    two = _write_results(
        tmp_path / "2", {"c1-existing-py.json": _asv_file("c1", {"t.track_macs": _shard([NAN, 3.0])})}
    )
    assert main(["merge-asv", str(one), str(two), "--out", str(out)]) == 0
    merged = json.loads((out / "ci-2core" / "c1-existing-py.json").read_text())
    assert merged["results"]["t.track_macs"][0] == [7.0, 3.0]
    assert json.loads((out / "ci-2core" / "c0-existing-py.json").read_text()) == old
    assert json.loads((out / "benchmarks.json").read_text()) == {"t.track_macs": {"version": "v1"}}

    other = _write_results(tmp_path / "3", {}, benchmarks={"t.track_macs": {"version": "v2"}})
    with pytest.raises(MergeError, match="the shards ran different benchmark code"):
        merge_asv_results([one, other], tmp_path / "x")
    with pytest.raises(MergeError, match="not an asv results directory"):
        merge_asv_results([tmp_path / "nothing"], tmp_path / "x")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["merge-benchmarks", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prunebench merge-benchmarks: error:") and "not a pytest-benchmark JSON" in err
    assert err.count("\n") == 1 and not (tmp_path / "o.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["merge-benchmarks", str(tmp_path / "bad.json")])
    assert exit_info.value.code == 2
    assert "needs --out and/or --save-to" in capsys.readouterr().err


def test_merged_run_is_saved_where_benchmark_compare_finds_it(tmp_path: Path) -> None:
    runs = [tmp_path / "1.json", tmp_path / "2.json"]
    runs[0].write_text(json.dumps(_bench_run("c1", ["t[a]"])))
    runs[1].write_text(json.dumps(_bench_run("c1", ["t[b]"])))
    merge_benchmark_files(runs, save_to=tmp_path / "storage")
    merge_benchmark_files(runs, save_to=tmp_path / "storage")
    saved = sorted((tmp_path / "storage").glob("*/*.json"))
    assert [p.name for p in saved] == ["0001_merged.json", "0002_merged.json"]
    assert _names(json.loads(saved[-1].read_text())) == ["t[a]", "t[b]"]


def test_asv_suite_params_are_the_bench_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setenv("PRUNEBENCH_METHODS", "l1,random")
    monkeypatch.setenv("PRUNEBENCH_SHARD", "2/3")
    spec = importlib.util.spec_from_file_location("asv_pruning", ROOT / "bench" / "history" / "pruning.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    cases = build_cases(methods=["l1", "random"])
    assert suite.Latency.params == ([*dict.fromkeys(c.model for c in cases)], ["l1", "random"])
    assert cases[1::3] == suite.SHARD_CASES
    for name in ("track_top1_error", "track_top1_drop"):
        assert getattr(suite.Accuracy, name).unit in {"%", "points"}
    with pytest.raises(NotImplementedError, match="not a case of this run or shard"):
        suite.Size().setup({}, cases[0].model, "l1")


def test_asv_configs_differ_only_in_how_environments_are_made() -> None:
    existing = json.loads((ROOT / "asv.conf.json").read_text())
    virtualenv = json.loads((ROOT / "asv.virtualenv.json").read_text())
    assert existing["environment_type"] == "existing" and virtualenv["environment_type"] == "virtualenv"
    how = {"environment_type", "pythons", "build_command", "install_command"}
    assert {k: v for k, v in virtualenv.items() if k not in how} == {
        k: v for k, v in existing.items() if k not in how
    }
    assert (ROOT / existing["benchmark_dir"] / "__init__.py").is_file()


def _workflow_commands() -> list[list[str]]:
    """Shell lines of the workflows that run one of the project's tools, as words, env prefixes dropped."""
    commands = []
    for path in (ROOT / ".github" / "workflows").glob("*.yml"):
        jobs = yaml.safe_load(path.read_text())["jobs"].values()
        for step in (step for job in jobs for step in job.get("steps", [])):
            for line in step.get("run", "").splitlines():
                line = re.sub(r"\$\{\{.*?\}\}", "1", line)
                words = [w for w in line.split() if not w.startswith("PRUNEBENCH_")]
                if words and words[0] in {"pytest", "asv", "prunebench", "pip", "bash"}:
                    commands.append(words)
    return commands


def test_workflows_run_the_commands_the_docs_document() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = "\n".join(page.read_text() for page in pages)
    commands = _workflow_commands()
    assert {" ".join(c[:2]) for c in commands} >= {
        "bash .ci/run",
        "pytest bench/",
        "asv machine",
        "asv run",
        "asv publish",
        "prunebench merge-benchmarks",
        "prunebench merge-asv",
    }
    for words in commands:
        if words[0] != "pip":
            assert " ".join(words[:2]) in readme, words
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in readme, f"{flag} of {' '.join(words)!r} is not in the README or docs/"
