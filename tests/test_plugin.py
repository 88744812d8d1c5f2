"""The installed plugin, outside methods and models, and the versioned record."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pruners
from pruners import entry_points, models, registry
from pruners.cli import main
from pruners.record import SCHEMA, CaseRecord, RecordSchemaError

TINY_METHOD = '''
"""A criterion from another package: group L2 norms summed over a group's layers."""

import torch_pruning as tp

from pruners import register_method
from pruners.structured import prune_channels


@register_method("l2_sum", kind="structured", tolerance=3.0, default_ratio=0.3)
def l2_sum_channels(model, ratio, example_inputs, data):
    """Group L2 norms summed over a group's layers instead of averaged."""
    prune_channels(model, tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum"), ratio,
                   example_inputs)
'''

TINY_MODEL = """
from pruners.models import CNN, ModelEntry

ENTRY = ModelEntry("resnet10t", "ResNet-10T", CNN, target=2.0)
"""


def tiny_distribution(root: Path, name: str, module: str, source: str, entry_points_text: str) -> None:
    """An installed distribution in ``root``: its module and a dist-info with ``entry_points.txt``, as pip
    would leave it in site-packages."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points_text))


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package declaring the method ``l2_sum`` and the model ``resnet10t``; the registries
    load again, so they find it."""
    tiny_distribution(
        tmp_path, "tinycrit", "tinycrit", TINY_METHOD, "[prunebench.methods]\nl2_sum = tinycrit\n"
    )
    tiny_distribution(
        tmp_path, "tinynet", "tinynet", TINY_MODEL, "[prunebench.models]\nresnet10t = tinynet:ENTRY\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(models, "_BY_NAME", {})
    monkeypatch.setattr(models, "_LOADED", False)
    models.get_model.cache_clear()
    monkeypatch.delitem(sys.modules, "tinycrit", raising=False)
    yield tmp_path
    models.get_model.cache_clear()


def test_import_pruners_loads_neither_pytest_nor_torch() -> None:
    code = "import sys, pruners; print(sorted({'pytest', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_entry_point_method_and_model_join_the_registries(outside: Path) -> None:
    assert "l2_sum" in pruners.list_methods("l2*")
    spec = pruners.get_method("l2_sum")
    assert spec.tolerance == 3.0 and spec.kind == "structured" and "summed" in spec.doc
    assert "resnet10t" in pruners.list_models("resnet*")
    assert models.default_target("resnet10t") == 2.0


def test_an_entry_point_that_fails_to_load_names_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_distribution(
        tmp_path, "broken", "broken", "raise RuntimeError('no')", "[prunebench.methods]\nb = broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        entry_points.EntryPointError, match=r"entry point 'b' = 'broken' of broken failed.*no"
    ):
        entry_points.load_methods()


def test_the_plugin_puts_an_entry_point_method_in_the_matrix_beside_random(
    outside: Path, bench: pytest.Pytester
) -> None:
    result = bench.runpytest("--collect-only", "-q", "--models", "resnet18", "--methods", "l2_sum,random")
    result.stdout.fnmatch_lines(
        ["*test_prune[[]resnet18-l2_sum-3x[]]", "*test_prune[[]resnet18-random-3x[]]"]
    )
    default = bench.runpytest("--collect-only", "-q")
    default.stdout.fnmatch_lines(["*test_prune[[]resnet18-l2_sum-3x[]]"])


def test_without_asking_for_the_matrix_the_plugin_only_adds_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1)
    assert "prunebench:" not in result.stdout.str()
    assert "--methods" in pytester.runpytest("--help").stdout.str()


def test_the_flag_runs_the_packaged_matrix_without_any_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--prunebench", "--pyargs", "pruners.bench", "--collect-only", "-q", "--models", "resnet18",
        "--methods", "l1,random",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*test_prune[[]resnet18-l1-3x[]]", "*test_prune[[]resnet18-random-3x[]]"])


def test_a_record_of_the_previous_schema_loads_under_todays_names() -> None:
    old = {
        "model": "resnet18",
        "method": "l1",
        "ratio": 0.4,
        "dense_top1": 98.0,
        "pruned_top1_before_recovery": 60.0,
        "pruned_top1_recalibrated": 90.0,
        "pruned_top1": 97.0,
        "macs_dense": 4,
        "macs_pruned": 2,
        "params_dense": 2,
        "params_pruned": 1,
        "latency_dense_ms": 3.0,
        "per_seed": [{"seed": 0, "pruned_top1": 97.0}],
    }
    record = CaseRecord.from_extra_info(old)
    assert (record.one_shot_top1, record.recalibrated_top1, record.recovered_top1) == (60.0, 90.0, 97.0)
    assert record.per_seed == [{"seed": 0, "recovered_top1": 97.0}] and record.latency == {
        "latency_dense_ms": 3.0
    }
    again = CaseRecord.from_extra_info(record.to_extra_info())
    assert again == record and record.to_extra_info()["schema"] == SCHEMA


@pytest.mark.parametrize("schema", [SCHEMA + 1, 0, "2"])
def test_a_record_of_another_schema_is_refused_in_one_line(schema: object) -> None:
    with pytest.raises(RecordSchemaError, match=f"schema {schema!r}; this prunebench reads schemas 1 to"):
        CaseRecord.from_extra_info({"schema": schema, "model": "resnet18"})


def test_a_record_without_its_figures_says_which() -> None:
    with pytest.raises(RecordSchemaError, match=r"without .*recovered_top1"):
        CaseRecord.from_extra_info({"model": "resnet18", "method": "l1"})


@pytest.mark.slow
def test_an_entry_point_method_runs_beside_random_judged_by_both_gates(
    outside: Path, bench: pytest.Pytester, tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    argv = [
        "--models",
        "test_resnet",
        "--methods",
        "l2_sum,random",
        "--ratios",
        "0.3",
        "--recovery-epochs",
        "1",
    ]
    result = bench.runpytest(*argv, "--latency-rounds", "2", "--benchmark-json", str(out))
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2, result.stdout.str()
    runs = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    mine = CaseRecord.from_extra_info(runs["test_prune[test_resnet-l2_sum-0.3]"])
    assert (
        mine.tolerance == 3.0
        and mine.gate.startswith("fail if top-1 drop")
        and mine.macs_pruned < mine.macs_dense
    )
    assert mine.recovery_passed is not None and mine.criterion_gate.startswith("not judged")
    assert main(["report", str(out), "--out-dir", str(tmp_path / "report")]) == 0
    assert "| test_resnet | l2_sum |" in (tmp_path / "report" / "report.md").read_text()
