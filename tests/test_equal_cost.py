"""Equal cost: the MACs-target search, BatchNorm recalibration, paired correctness, the equal-cost report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import pruners
from pruners import structured
from pruners.equal_cost import equal_cost_tables
from pruners.gate import decode_correct, encode_correct, paired_difference
from pruners.matrix import build_cases, parse_speedups
from pruners.matrix_plugin import UNTIMED_NOTE
from pruners.report import load_run
from pruners.report_page import write_report
from pruners.search import SPEEDUP_TOLERANCE, check_speedup
from pruners.train import recalibrate_batchnorm

from .conftest import SparseTrainSpy, bench_where_run_raises


@pytest.fixture(scope="module")
def resnet(workload: pruners.Workload) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).eval()


def _within(record: pruners.PruneRecord, target: float) -> bool:
    return abs(record.macs_speedup / target - 1) <= SPEEDUP_TOLERANCE


@pytest.mark.parametrize("method", ["l1_global", "lamp", "l1"])
def test_the_search_lands_within_two_percent_of_the_target(
    method: str, resnet: torch.nn.Module, inputs: torch.Tensor
) -> None:
    pruned, record = pruners.prune_to_speedup(resnet, method, 2.0, inputs)
    measured_before, _ = pruners.measure.count_macs_params(resnet, inputs)
    measured_after, _ = pruners.measure.count_macs_params(pruned, inputs)
    assert _within(record, 2.0) and record.target_speedup == 2.0
    assert measured_before / measured_after == pytest.approx(record.macs_speedup)
    assert 0 < record.ratio < 1
    assert pruned(inputs).shape == (len(inputs), 10)


def test_a_gradient_method_lands_on_the_target_computing_its_gradients_once(
    resnet: torch.nn.Module, inputs: torch.Tensor, calib, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = structured.loss_gradients

    def counted(model: torch.nn.Module, batches) -> None:
        calls.append(1)
        real(model, batches)

    monkeypatch.setattr(structured, "loss_gradients", counted)
    _, record = pruners.prune_to_speedup(resnet, "taylor", 1.5, inputs, calib)
    assert _within(record, 1.5) and record.probes > 1
    assert len(calls) == 1


def test_a_sparse_training_method_trains_once_for_the_whole_search(
    resnet: torch.nn.Module, inputs: torch.Tensor, sparse_train: SparseTrainSpy
) -> None:
    _, record = pruners.prune_to_speedup(resnet, "group_norm", 1.5, inputs, sparse_train=sparse_train)
    assert _within(record, 1.5) and record.probes > 1
    assert sparse_train.epochs == 2


def test_the_search_reproduces_a_random_criterion_across_probes(
    resnet: torch.nn.Module, inputs: torch.Tensor
) -> None:
    torch.manual_seed(3)
    first, record = pruners.prune_to_speedup(resnet, "random", 2.0, inputs)
    with pruners.structured.channel_multiple(record.channel_multiple):
        torch.manual_seed(3)
        again, _ = pruners.prune(resnet, "random", record.ratio, inputs)
    assert [p.shape for p in first.parameters()] == [p.shape for p in again.parameters()]


def test_an_unreachable_target_is_refused_with_its_reason(inputs: torch.Tensor) -> None:
    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=8).eval()
    with pytest.raises(pruners.TargetUnreachableError, match=r"cannot reach 5x fewer MACs.*removes"):
        pruners.prune_to_speedup(vit, "vit_heads", 5.0, inputs)


def test_mask_methods_and_bad_targets_have_no_macs_target(
    resnet: torch.nn.Module, inputs: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="no MACs target"):
        pruners.prune_to_speedup(resnet, "global_magnitude", 2.0, inputs)
    for bad in (1.0, 0.5, "x"):
        with pytest.raises(ValueError, match="MACs target"):
            check_speedup(bad)
    with pytest.raises(ValueError, match="both set the cost"):
        pruners.CaseSpec("test_resnet", "l1", 0.3, speedup=2.0)


def test_the_matrix_puts_structured_methods_at_each_target_and_masks_at_their_ratio() -> None:
    cases = build_cases(["resnet18"], ["l1", "global_magnitude"], speedups=parse_speedups("1.5,2"))
    assert [c.id for c in cases] == ["resnet18-l1-1.5x", "resnet18-l1-2x", "resnet18-global_magnitude-0.5"]
    assert cases[0].ratio is None and cases[0].speedup == 1.5
    for bad in ("1", "2,2", "two"):
        with pytest.raises(ValueError):
            parse_speedups(bad)


def test_batchnorm_recalibration_re_estimates_statistics_and_leaves_weights(
    resnet: torch.nn.Module, inputs: torch.Tensor, workload: pruners.Workload
) -> None:
    pruned, _ = pruners.prune(resnet, "l1", 0.5, inputs)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    recalibrated, images = recalibrate_batchnorm(pruned, workload, batches=2, batch_size=16)
    assert images == 32
    after = recalibrated.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
    )
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())
    assert not recalibrated.training


def test_a_model_without_batchnorm_is_not_recalibrated(workload: pruners.Workload) -> None:
    vit = timm.create_model("test_vit", num_classes=10, img_size=32, patch_size=8)
    copy, images = recalibrate_batchnorm(vit, workload)
    assert images == 0 and copy is not vit


def test_per_image_correctness_packs_and_pairs() -> None:
    ok = torch.tensor([True, False, True, True, False, True, True, True, False, True, True])
    packed = encode_correct(ok)
    assert torch.equal(decode_correct(packed), ok) and json.loads(json.dumps(packed)) == packed
    with pytest.raises(ValueError, match="bits"):
        decode_correct({"n": 100, "bits": packed["bits"]})
    better, worse = torch.ones(200, dtype=torch.bool), torch.arange(200) % 4 != 0
    verdict = paired_difference([better], [worse])
    assert verdict.mean_drop == pytest.approx(25.0) and verdict.noise > 0
    assert paired_difference([worse], [better]).mean_drop == pytest.approx(-25.0)


def _targeted(method: str, target: float, recovered: torch.Tensor, recalibrated: torch.Tensor) -> dict:
    n = len(recovered)
    return {
        "name": f"test_prune[resnet18-{method}-{target:g}x]",
        "extra_info": {
            "model": "resnet18",
            "method": method,
            "kind": "structured",
            "ratio": 0.3,
            "target_speedup": target,
            "dense_top1": 99.0,
            "pruned_top1_before_recovery": 10.0,
            "pruned_top1_recalibrated": 100.0 * recalibrated.float().mean().item(),
            "pruned_top1": 100.0 * recovered.float().mean().item(),
            "top1_drop_noise": 0.5,
            "macs_dense": 4_000_000,
            "macs_pruned": int(4_000_000 / target),
            "params_dense": 1_000_000,
            "params_pruned": 500_000,
            "latency_dense_ms": 10.0,
            "latency_pruned_ms": 10.0 / target,
            "passed": True,
            "per_seed": [
                {
                    "seed": 0,
                    "correct": {
                        "dense": encode_correct(torch.ones(n, dtype=torch.bool)),
                        "recalibrated": encode_correct(recalibrated),
                        "recovered": encode_correct(recovered),
                    },
                }
            ],
        },
    }


def test_the_report_pairs_every_method_against_random_and_draws_the_curves(tmp_path: Path) -> None:
    n = 400
    every, most, half = torch.ones(n, dtype=torch.bool), torch.arange(n) % 10 != 0, torch.arange(n) % 2 == 0
    cases = [_targeted(m, t, most if m == "random" else every, half if m == "random" else most)
             for m in ("random", "l1") for t in (1.5, 2.0)]  # fmt: skip
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"machine_info": {}, "benchmarks": cases}))
    tables = equal_cost_tables(load_run(run))
    l1_row = next(line for line in tables.splitlines() if line.startswith("| 1 | l1 |"))
    assert "### resnet18 at 2x fewer MACs" in tables
    assert "+40.00 ±" in l1_row and "+10.00 ±" in l1_row
    assert next(line for line in tables.splitlines() if line.startswith("| 2 | random |"))
    assert "1. `l1`: alone; beats random (`l1` +10.00 ± 1.50)" in tables
    written = {p.name for p in write_report([run], tmp_path / "report")}
    assert "curves_resnet18.png" in written
    assert (tmp_path / "report" / "curves_resnet18.png").read_bytes().startswith(b"\x89PNG")
    assert "## At equal cost" in (tmp_path / "report" / "report.md").read_text()


def test_the_bench_leaves_out_a_case_whose_target_is_unreachable(pytester: pytest.Pytester) -> None:
    bench = bench_where_run_raises(
        pytester,
        "pruners.TargetUnreachableError(\"method 'l1' cannot reach 2x fewer MACs on this model: stand-in\")",
    )
    result = bench.runpytest("--models", "resnet18", "--methods", "l1", "--speedup", "2", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*left out resnet18-l1-2x (target unreachable: *stand-in)*"])


def _table_rows(result: pytest.RunResult, title: str) -> list[list[str]]:
    """The data rows of the Markdown tables in the summary section ``title`` of a run (up to the next
    ``===`` line), as lists of cells; a table's header is the row above its ``|---`` line."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if title in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("=")), len(lines))
    return [
        [cell.strip() for cell in lines[i].strip("|").split("|")]
        for i in range(start + 1, end)
        if lines[i].startswith("| ") and not (i + 1 < end and lines[i + 1].startswith("|---"))
    ]


@pytest.mark.slow
def test_a_parallel_run_ranks_the_methods_as_a_serial_run_does_and_says_it_did_not_time_them(
    bench: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under xdist (``-n 2``) each case's record reaches the controller on its report: the equal-cost table
    holds the serial run's figures, with its latency column empty and the reason said."""
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path))
    argv = ["--models", "test_resnet", "--methods", "l1,random", "--speedup", "2", "--recovery-epochs", "1"]
    argv += ["--threads", "1", "--latency-rounds", "2"]
    serial = bench.runpytest_subprocess(*argv)
    parallel = bench.runpytest_subprocess(*argv, "-n", "2")
    timed, untimed = (_table_rows(run, "prunebench: methods at equal cost") for run in (serial, parallel))
    assert [row[1] for row in timed] == ["l1", "random"] and len(untimed) == 2
    assert all(float(row[-1]) > 0 for row in timed) and [row[-1] for row in untimed] == ["-", "-"]
    assert [row[:-1] for row in untimed] == [row[:-1] for row in timed]
    assert UNTIMED_NOTE in parallel.stdout.str() and UNTIMED_NOTE not in serial.stdout.str()
    gates = [_table_rows(run, "prunebench: the recovery gate per case") for run in (serial, parallel)]
    assert [row[0] for row in gates[0]] == ["test_resnet-l1-2x", "test_resnet-random-2x"]
    assert gates[1] == gates[0], "under xdist the per-case recovery gate table is the serial run's"
