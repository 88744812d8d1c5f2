"""The scratch control: the pruned architecture from random initialisation, and what its comparison says."""

from __future__ import annotations

import pytest
import timm
import torch

import pruners
from pruners.gate import PairedDrop, judge
from pruners.gates import ScratchControl
from pruners.record import CaseRecord
from pruners.scratch import reinitialized, scratch_text
from pruners.spec import CaseSpec, Recipes, Timing


def test_the_scratch_model_shares_no_weight_with_the_pruned_one_and_keeps_its_shapes(inputs) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # a "trained" model: no weight at its initial value
    model.train()
    model(inputs)  # running statistics move away from their initial values
    pruned, _ = pruners.prune(model.eval(), "l1", 0.5, inputs)
    fresh = reinitialized(pruned, seed=3)
    before, after = dict(pruned.named_parameters()), dict(fresh.named_parameters())
    assert before.keys() == after.keys()
    for name, p in before.items():
        assert after[name].shape == p.shape
        assert torch.isclose(after[name], p).float().mean() < 0.05, f"{name} kept the pruned weights"
    for name, buffer in fresh.named_buffers():
        if name.endswith("running_mean"):
            assert torch.count_nonzero(buffer) == 0, name
    again = reinitialized(pruned, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), again.parameters(), strict=True))
    assert fresh(inputs).shape == (len(inputs), 10)


def _verdict(recovered_only: int, scratch_only: int) -> pruners.Verdict:
    return judge(
        [PairedDrop(1000, 900, 900 - recovered_only + scratch_only, recovered_only, scratch_only)], 0.0
    )


def test_the_comparison_says_which_side_won_only_beyond_the_noise() -> None:
    assert scratch_text(_verdict(60, 10)) == "the pruned weights beat the architecture alone"
    assert scratch_text(_verdict(10, 60)) == "the architecture alone beats the pruned weights"
    assert "matches" in scratch_text(_verdict(12, 10))


def test_a_record_with_the_scratch_control_prints_its_line_and_one_without_prints_none() -> None:
    base = dict(model="resnet18", method="l1", ratio=0.3, dense_top1=99.0, one_shot_top1=10.0,
                recovered_top1=98.0, macs_dense=4, macs_pruned=2, params_dense=2,
                params_pruned=1)  # fmt: skip
    assert ScratchControl().line(CaseRecord(**base)) == ""
    record = CaseRecord(**base, scratch_top1=96.5, scratch_gap=1.5, scratch_gap_noise=0.4,
                        scratch_verdict="the pruned weights beat the architecture alone")  # fmt: skip
    line = ScratchControl().line(record)
    assert "recovered 98.00% vs from scratch 96.50% (+1.50 ± 0.40)" in line


@pytest.mark.slow
def test_a_case_with_the_scratch_control_records_it_against_the_recovered_model() -> None:
    result = pruners.run_case(
        CaseSpec("resnet18", "l1", 0.3, recipes=Recipes(scratch=True), timing=Timing(rounds=None))
    )
    record = result.case_record()
    assert record.scratch_top1 is not None and record.scratch_verdict
    seed = record.per_seed[0]
    assert "scratch" in seed["correct"] and seed["scratch_train_seconds"] > 0
    assert record.scratch_gap == pytest.approx(record.recovered_top1 - record.scratch_top1, abs=0.02)
