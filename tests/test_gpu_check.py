"""The GPU check: skipped without CUDA, and its parts (bench rows, 2:4 detection, the profiler row, the
table and its verdict) on the CPU. The 2:4 kernels themselves need a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import pruners
from pruners import gpu_check
from pruners.cli import main
from pruners.gpu_check import CheckFailedError, CheckRow
from pruners.runtimes import is_n_of_m, semi_structured


def _refuse(*args, **kwargs):
    raise AssertionError("the GPU check did work without CUDA")


def test_without_cuda_it_says_so_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for step in ("run_bench", "semi_structured_row", "profiler_row"):
        monkeypatch.setattr(gpu_check, step, _refuse)
    assert main(["gpu-check", "--out-dir", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("gpu-check skipped: no CUDA device here")
    assert not (tmp_path / "out").exists()


def test_the_bench_part_runs_the_cases_on_the_device_and_reads_the_deploy_size(tmp_path: Path) -> None:
    command = gpu_check.bench_command(tmp_path / "b.json", "cuda")
    assert command[1:6] == ["-m", "pytest", "--prunebench", "--pyargs", "pruners.bench"]
    joined = " ".join(command)
    assert "--device cuda --models resnet18 --methods l1,random,taylor --latency-size 224" in joined
    info = {
        "model": "resnet18", "method": "l1", "ratio": 0.4, "target_speedup": 3.0, "dense_top1": 98.0,
        "pruned_top1_before_recovery": 50.0, "pruned_top1": 97.5, "macs_dense": 300, "macs_pruned": 100,
        "params_dense": 10, "params_pruned": 4, "latency_dense_ms": 2.0, "latency_pruned_ms": 1.6,
        "latency_img_size": 32, "latency_at_size_img_size": 224, "latency_at_size_dense_ms": 9.0,
        "latency_at_size_pruned_ms": 4.5, "passed": False, "device": "cuda:0",
    }  # fmt: skip
    (row,) = gpu_check.bench_rows({"benchmarks": [{"name": "test_prune[x]", "extra_info": info}]})
    assert (row.check, row.case, row.speedup, row.ok) == (
        "bench, cuda:0, 224 px",
        "resnet18 l1 3x",
        2.0,
        False,
    )
    assert row.detail == ("top-1 98.00 → 97.50, gate FAIL, MACs 3.00x; 2.00 → 1.60 ms at the workload's size")


def test_2_4_layers_are_found_and_the_sparse_kernels_need_cuda() -> None:
    model = timm.create_model("test_vit", num_classes=10).eval()
    masked, _ = pruners.prune(model, "nm_2_4", 0.5, torch.randn(2, 3, 160, 160))
    masked = pruners.make_permanent(masked)
    linears = [m for m in masked.modules() if isinstance(m, torch.nn.Linear) and m is not masked.head]
    assert len(linears) == 24 and all(is_n_of_m(m.weight) for m in linears)
    assert not is_n_of_m(masked.head.weight), "the classifier is left whole"
    assert not any(is_n_of_m(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert not is_n_of_m(torch.zeros(4, 6)), "a row that is not whole groups of 4"
    swapped, left = semi_structured(masked.half())
    assert swapped == 0 and left.pop("head") == "not 2:4 sparse" and len(left) == 24
    assert all("Only CUDA tensors" in why for why in left.values())


def test_no_layer_on_the_2_4_kernels_fails_the_check() -> None:
    with pytest.raises(CheckFailedError, match="no Linear layer of vit_tiny_patch16_224 went on the 2:4"):
        gpu_check.semi_structured_row(torch.device("cpu"), "vit_tiny_patch16_224", batch_size=2)


@pytest.mark.slow
def test_the_profiler_row_profiles_both_at_the_deploy_size(tmp_path: Path) -> None:
    row = gpu_check.profiler_row(torch.device("cpu"), tmp_path, "test_resnet", batch_size=2)
    assert row.check == "torch.profiler, self CPU time per forward"
    assert row.case == "test_resnet l1 3x, batch 2, 224 px"
    assert row.dense_ms > 0 and row.pruned_ms > 0 and row.ok
    assert (tmp_path / "profile.md").is_file() and str(tmp_path / "profile.md") in row.detail


def test_a_failed_check_writes_the_table_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(gpu_check, "missing_cuda", lambda: "")
    monkeypatch.setattr(gpu_check, "resolve_device", lambda name: torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a stand-in GPU")
    monkeypatch.setattr(
        gpu_check, "run_bench", lambda out, device: [CheckRow("bench", "a", 2.0, 1.0, "fine")]
    )
    monkeypatch.setattr(
        gpu_check, "semi_structured_row", lambda device: CheckRow("2:4", "b", 1.0, 2.0, "off", ok=False)
    )
    monkeypatch.setattr(gpu_check, "profiler_row", lambda device, out: CheckRow("prof", "c", 3.0, 1.0, "ok"))
    assert main(["gpu-check", "--out-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == "prunebench gpu-check: error: 1 of 3 checks failed: b"
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("GPU check on a stand-in GPU") and table in out
    assert "| 2:4 | b | 1.00 | 2.00 | 0.50 | off **FAIL** |" in table
    assert "| bench | a | 2.00 | 1.00 | 2.00 | fine |" in table
