"""The prunability sweep: stages, isolation from crashes and hangs, and what it writes."""

from __future__ import annotations

import csv
import textwrap

import pytest
import timm
import torch
import torch_pruning as tp

import pruners
from pruners import commands, registry
from pruners.cli import main
from pruners.sweep import (
    STAGES,
    SweepRow,
    _reason,
    check_architecture,
    export_onnx,
    family,
    parameter_count,
    raised_in,
    run_isolated,
    select_architectures,
)
from pruners.sweep_report import markdown, merge_rows, read_csv, write_csv

METHODS_MODULE = '''
import os
import time

from pruners import register_method


@register_method("sleeper", kind="structured", tolerance=1, default_ratio=0.3)
def sleeper(model, ratio, example_inputs, data):
    """Never returns."""
    time.sleep(600)


@register_method("crasher", kind="structured", tolerance=1, default_ratio=0.3)
def crasher(model, ratio, example_inputs, data):
    """Takes the process down."""
    os._exit(3)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module that registers a hanging and a crashing method, importable by the sweep's children."""
    (tmp_path / "sweep_plugin.py").write_text(textwrap.dedent(METHODS_MODULE))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "sweep_plugin"


@pytest.mark.slow
def test_a_prunable_architecture_passes_every_stage_in_its_own_process() -> None:
    row = run_isolated("test_resnet", "l1", 0.3, timeout=300)
    assert row.ok and row.reached == STAGES[-1] and not row.failed_stage and not row.reason
    assert row.family == "resnet"
    assert row.macs_after < row.macs_before and row.params_after < row.params_before


def test_a_pruned_state_dict_loads_into_a_fresh_timm_model_with_read_only_properties() -> None:
    def create() -> torch.nn.Module:
        torch.manual_seed(0)
        return timm.create_model("test_byobnet", num_classes=10).eval()

    inputs = torch.randn(2, 3, 32, 32)
    pruned, _ = pruners.prune(create(), "l1", 0.3, inputs)
    state = tp.state_dict(pruned.eval())
    with pytest.raises(AttributeError, match="in_channels"):
        tp.load_state_dict(create(), state)  # Torch-Pruning sets ConvNormAct's read-only property
    fresh = pruners.load_pruned_state_dict(create(), state)
    with torch.no_grad():
        assert torch.equal(fresh(inputs), pruned(inputs))
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_onnx_falls_back_to_the_torchscript_exporter_only_where_dynamo_fails_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, inputs = torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(1, 4)
    assert export_onnx(model, inputs) == "dynamo"
    export, used = torch.onnx.export, []

    def dynamo_fails(*args: object, dynamo: bool, **kwargs: object) -> object:
        used.append(dynamo)
        if dynamo:
            raise RuntimeError("cannot decompose")
        return export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    assert export_onnx(model, inputs) == "torchscript" and used == [True, False]

    def both_fail(*args: object, dynamo: bool, **kwargs: object) -> None:
        raise ValueError(f"dynamo={dynamo}")

    monkeypatch.setattr(torch.onnx, "export", both_fail)
    with pytest.raises(ValueError, match="dynamo=True"):
        export_onnx(model, inputs)


def test_a_method_that_does_not_apply_fails_at_the_prune_stage() -> None:
    row = check_architecture("test_resnet", "vit_heads", 0.3)
    assert (row.reached, row.failed_stage) == ("forward", "prune")
    assert row.reason.startswith("NotApplicableError: method 'vit_heads' does not apply")


def test_a_method_that_prunes_nothing_fails_where_macs_must_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @pruners.register_method("noop", kind="structured", tolerance=1, default_ratio=0.3)
    def noop(model, ratio, example_inputs, data):
        """Prunes nothing."""

    row = check_architecture("test_resnet", "noop", 0.3)
    assert (row.reached, row.failed_stage) == ("prune", "macs_dropped")
    assert "pruned nothing" in row.reason and not row.ok


@pytest.mark.slow
def test_a_crash_costs_one_row_and_names_its_stage(plugin: str) -> None:
    row = run_isolated("test_resnet", "crasher", 0.3, timeout=300, imports=[plugin])
    assert (row.reached, row.failed_stage) == ("forward", "prune")
    assert row.reason.startswith("process exited with code 3")


@pytest.mark.slow
def test_a_hang_is_cut_off_at_the_time_limit(plugin: str) -> None:
    row = run_isolated("test_resnet", "sleeper", 0.3, timeout=20, imports=[plugin])
    assert (row.reached, row.failed_stage, row.reason) == ("forward", "prune", "timed out after 20 s")
    assert 20 <= row.seconds < 60


def test_architectures_are_chosen_by_pattern_and_per_family() -> None:
    assert select_architectures(["resnet18", "resnet34"]) == ["resnet18", "resnet34"]
    patterns = ["resnet1*", "resnet3*", "vit_tiny_*"]
    every, chosen = select_architectures(patterns), select_architectures(patterns, per_family=1)
    families = [family(arch) for arch in chosen]
    assert len(families) == len(set(families)) == len({family(arch) for arch in every}) > 1
    assert set(chosen) < set(every) and "vit_tiny_patch16_224" in chosen
    resnets = [arch for arch in every if family(arch) == "resnet"]
    smallest = min(resnets, key=parameter_count)
    assert smallest in chosen and parameter_count(smallest) < parameter_count("resnet18")
    assert select_architectures(["test_resnet", "resnet18"], per_family=1) == ["resnet18"], "timm's fixtures"
    with pytest.raises(ValueError, match="no timm architecture matches 'nothing_like_this'"):
        select_architectures(["nothing_like_this"])


def test_the_report_tallies_stages_reasons_and_families() -> None:
    rows = [
        SweepRow(
            "a1", "fam_a", reached="onnx", macs_before=100, macs_after=50, params_before=10, params_after=5
        ),
        SweepRow("a3", "fam_a", reached="onnx", onnx_exporter="torchscript"),
        SweepRow("a2", "fam_a", "forward", "prune", "ValueError: x | y", raised_in="timm"),
        SweepRow("b1", "fam_b", reached="forward", failed_stage="prune", reason="ValueError: x | y"),
        SweepRow("b2", "fam_b", reached="", failed_stage="create", reason="timed out after 5 s"),
    ]
    text = markdown(rows, "l1", 0.3)
    assert "2 of 5 architectures (40 %) pass every stage" in text
    assert "1 of them export to ONNX only with torch's TorchScript exporter" in text
    assert "| prune | 2 | timm 1, crash or time limit 1 | ValueError: x \\| y (2) |" in text
    assert "| create | 1 | crash or time limit 1 | timed out after 5 s (1) |" in text
    assert "| fam_a | 3 | 2 |" in text and "| fam_b | 2 | 0 |" in text
    assert "| a1 | fam_a | onnx |  |  |  | 100 → 50 | 2.00 | 10 → 5 |  |" in text
    assert "| a3 | fam_a | onnx |  |  |  |  |  |  | torchscript |" in text
    assert "| a2 | fam_a | forward | prune | ValueError: x \\| y | timm |" in text


@pytest.mark.parametrize(
    ("paths", "owner"),
    [
        (["/venv/site-packages/torch_pruning/dependency/graph.py"], "Torch-Pruning"),
        (["/venv/timm/models/beit.py", "/venv/torch/nn/modules/linear.py"], "timm"),
        (["/venv/torch_pruning/serialization.py", "/venv/torch/nn/modules/module.py"], "Torch-Pruning"),
        (["/work/pruners/sweep.py", "/venv/site-packages/torch/onnx/_internal/exporter.py"], "torch.onnx"),
        (["/venv/site-packages/torch/nn/functional.py"], "torch"),
        (["/work/pruners/sweep.py"], "PruneBench"),
    ],
)  # fmt: skip
def test_a_failure_names_whose_code_raised_it(paths: list[str], owner: str) -> None:
    source = "raise RuntimeError('boom')"
    for path in reversed(paths[1:]):
        source = f"exec(compile({source!r}, {path!r}, 'exec'))"
    with pytest.raises(RuntimeError) as caught:
        exec(compile(source, paths[0], "exec"))
    assert raised_in(caught.value) == owner


@pytest.mark.slow
def test_the_command_writes_csv_and_markdown(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "test_resnet", "test_vit", "--jobs", "2", "--out-dir", str(tmp_path)]) == 0
    with (tmp_path / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["arch"], r["ok"], r["reached"]) for r in rows] == [
        ("test_resnet", "True", "onnx"),
        ("test_vit", "True", "onnx"),
    ]
    report = (tmp_path / "sweep.md").read_text()
    assert "2 of 2 architectures (100 %) pass every stage" in report
    assert "Command: `prunebench sweep test_resnet test_vit --jobs 2 --out-dir" in report
    assert "2 of 2 architectures pass every stage" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--method", "nope"], "unknown pruning method 'nope'"),
        (["sweep", "--method", "bn_scale"], "needs sparse training; the sweep runs one-shot methods"),
        (["sweep", "--ratio", "1.5"], "ratio must be in (0, 1)"),
        (["sweep", "no_such_arch*"], "no timm architecture matches 'no_such_arch*'"),
    ],
)
def test_bad_arguments_are_one_line_and_a_non_zero_exit(argv, message, tmp_path, capsys) -> None:
    assert main([*argv, "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep.csv").exists()


def test_a_reason_is_one_line_without_terminal_colours() -> None:
    err = RuntimeError("\x1b[96mThis is step 2/3\x1b[0m of exporting\nmore")
    assert _reason(err) == "RuntimeError: This is step 2/3 of exporting"


def test_a_sweep_csv_reads_back_as_the_rows_it_was_written_from(tmp_path) -> None:
    rows = [
        SweepRow("a", "fam", "onnx", macs_before=10, macs_after=5, params_before=4, seconds=1.5),
        SweepRow("b", "fam", "forward", "prune", "TypeError: x", "Torch-Pruning", seconds=0.25),
    ]
    write_csv(rows, tmp_path / "sweep.csv")
    assert read_csv(tmp_path / "sweep.csv") == rows
    (tmp_path / "other.csv").write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match=r"other\.csv is not a sweep\.csv"):
        read_csv(tmp_path / "other.csv")


def test_an_update_replaces_the_rows_checked_again_and_keeps_the_others(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge of an update; checking an architecture for real is the business of the tests above."""

    def checked(archs, *args, **kwargs) -> list[SweepRow]:
        return [SweepRow(arch, family(arch), "onnx", seconds=1.0) for arch in archs]

    monkeypatch.setattr(commands, "sweep", checked)
    earlier = [
        SweepRow("test_vit", "vision_transformer", "prune", "macs_dropped", "stale", seconds=9.0),
        SweepRow("other_arch", "other", "onnx", seconds=2.0),
    ]
    write_csv(earlier, tmp_path / "earlier.csv")
    argv = ["sweep", "test_vit", "test_resnet", "--update", str(tmp_path / "earlier.csv")]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "sweep.csv")
    assert [(r.arch, r.ok) for r in rows] == [("test_vit", True), ("other_arch", True), ("test_resnet", True)]
    assert "The other 1 rows are those of" in (tmp_path / "sweep.md").read_text()
    assert merge_rows(earlier, []) == earlier


def test_an_update_from_a_file_that_is_not_a_sweep_fails_before_checking_anything(tmp_path, capsys) -> None:
    (tmp_path / "bad.csv").write_text("not,a\nsweep,file\n")
    assert main(["sweep", "test_vit", "--update", str(tmp_path / "bad.csv"), "--out-dir", str(tmp_path)]) == 1
    assert "bad.csv is not a sweep.csv" in capsys.readouterr().err
    assert not (tmp_path / "sweep.csv").exists()
