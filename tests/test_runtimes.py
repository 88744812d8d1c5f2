"""Dense and pruned timed in the runtimes people deploy with: eager, torch.compile and ONNX Runtime."""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch

import pruners
from pruners import runtimes
from pruners.matrix import Case
from pruners.runtimes import check_runtimes, compare_runtimes
from pruners.spec import Recipes, Timing

from .conftest import ROOT, TINY_RECIPE


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    dense = timm.create_model("test_resnet", num_classes=10).eval()
    inputs = torch.randn(4, 3, 32, 32)
    pruned, _ = pruners.prune(dense, "l1", 0.5, inputs)
    return dense, pruned, inputs


@pytest.mark.slow
def test_each_runtime_times_dense_and_pruned_on_the_same_outputs(pair) -> None:
    dense, pruned, inputs = pair
    timed, errors = compare_runtimes(["eager", "compile", "onnxruntime"], dense, pruned, inputs, rounds=3)
    assert errors == {} and list(timed) == ["eager", "compile", "onnxruntime"]
    for stats in timed.values():
        assert stats.dense_ms > 0 and stats.pruned_ms > 0 and stats.rounds == 3
        assert stats.speedup == pytest.approx(stats.dense_ms / stats.pruned_ms)
    assert timed["compile"].dense_setup_s > timed["eager"].dense_setup_s, "the compile is timed as set-up"
    with torch.inference_mode():
        expected = pruned(inputs)
        for name in ("compile", "onnxruntime"):
            out = runtimes.RUNTIMES[name](pruned, inputs)()
            got = torch.as_tensor(out[0] if isinstance(out, list) else out)
            torch.testing.assert_close(
                got, expected, rtol=1e-3, atol=1e-3, msg=f"{name} runs the pruned model"
            )


def no_export(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[bytes, str]:
    raise RuntimeError("this model does not export\nsecond line")


def test_a_runtime_that_cannot_take_the_model_says_why_and_the_others_run(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtimes, "onnx_bytes", no_export)
    timed, errors = compare_runtimes(["eager", "onnxruntime"], *pair, rounds=2)
    assert list(timed) == ["eager"]
    assert errors == {"onnxruntime": "RuntimeError: this model does not export"}


@pytest.mark.parametrize(
    ("names", "message"),
    [(["eager", "tensorrt"], "unknown runtime 'tensorrt'; choose from eager, compile, onnxruntime"),
     (["eager", "eager"], "runtimes must be distinct")],
)  # fmt: skip
def test_runtimes_are_checked(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_runtimes(names)


@pytest.mark.slow
def test_a_case_records_each_runtime_at_both_sizes(workload: pruners.Workload) -> None:
    result = pruners.run_case(
        pruners.CaseSpec(
            "test_resnet", "l1", 0.5, workload=workload,
            recipes=Recipes(baseline=TINY_RECIPE, recovery_epochs=1),
            timing=Timing(batch_size=4, rounds=2, size=48, runtimes=("eager", "onnxruntime")),
        )
    )  # fmt: skip
    info = result.summary()
    for prefix in ("latency_", "latency_at_size_"):
        for runtime in ("eager", "onnxruntime"):
            speedup = info[f"{prefix}{runtime}_speedup"]
            assert info[f"{prefix}{runtime}_dense_ms"] > 0 and speedup > 0
            assert info[f"{prefix}{runtime}_per_macs"] == pytest.approx(
                speedup / info["macs_speedup"], abs=2e-3
            )
    assert "latency_compile_dense_ms" not in info


@pytest.mark.slow
def test_asv_times_each_dense_model_once_and_a_bounded_subset_pruned_in_each_deploy_runtime(
    pair, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("asv_pruning", ROOT / "bench" / "history" / "pruning.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert suite.DEPLOY_RUNTIMES == ["compile", "onnxruntime"], "eager is the Latency class"
    assert suite.RuntimeDenseLatency.params == (suite.MODELS, suite.DEPLOY_RUNTIMES)
    assert suite.RuntimePrunedLatency.params[1] == suite.RUNTIME_METHODS == ["l1", "random"]
    dense, pruned, _ = pair
    case = Case("test_resnet", "l1", 0.5)
    monkeypatch.chdir(tmp_path)
    torch.save(dense, f"{case.id}-dense.pt")
    torch.save(pruned, f"{case.id}-pruned.pt")
    saved = {("test_resnet", "l1"): {"case": case, "record": None}}
    timed = suite.RuntimePrunedLatency()
    timed.setup(saved, "test_resnet", "l1", "onnxruntime")
    timed.time_pruned(saved, "test_resnet", "l1", "onnxruntime")
    with torch.inference_mode():
        out = timed.forward()[0]
        torch.testing.assert_close(torch.as_tensor(out), pruned(timed.inputs), rtol=1e-3, atol=1e-3)
    dense_timed = suite.RuntimeDenseLatency()
    dense_timed.setup(saved, "test_resnet", "onnxruntime")
    with torch.inference_mode():
        out = dense_timed.forward()[0]
        torch.testing.assert_close(torch.as_tensor(out), dense(timed.inputs), rtol=1e-3, atol=1e-3)
    with pytest.raises(NotImplementedError, match="test_resnet18 has no case"):
        suite.RuntimeDenseLatency().setup(saved, "test_resnet18", "onnxruntime")
    monkeypatch.setattr(runtimes, "onnx_bytes", lambda *a: (_ for _ in ()).throw(RuntimeError("no export")))
    with pytest.raises(
        NotImplementedError, match=r"test_resnet-l1-0.5 \(dense\) does not run in onnxruntime"
    ):
        suite.RuntimeDenseLatency().setup(saved, "test_resnet", "onnxruntime")


def test_the_prune_command_prints_each_runtime_at_the_workload_size_and_at_the_latency_size() -> None:
    from pruners.commands import runtime_lines

    info: dict[str, object] = {"latency_onnxruntime_error": "no exporter"}
    for key, dense, pruned in (("latency_eager", 16.0, 13.0), ("latency_at_size_onnxruntime", 28.0, 14.0)):
        info |= {f"{key}_dense_ms": dense, f"{key}_pruned_ms": pruned, f"{key}_speedup": dense / pruned}
        info |= {f"{key}_per_macs": dense / pruned / 2, f"{key}_dense_setup_s": 4.0}
    assert runtime_lines(info) == [
        "eager       16.00 ms -> 13.00 ms (1.23x, 0.62 of the MACs speedup; set-up 4.0 s)",
        "onnxruntime not timed: no exporter",
    ]
    assert runtime_lines(info, "latency_at_size") == [
        "onnxruntime 28.00 ms -> 14.00 ms (2.00x, 1.00 of the MACs speedup; set-up 4.0 s)"
    ]
