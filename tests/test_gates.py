"""Both gates and the dense control: the criterion band, the control's cache and convergence flag, and the
audits the gates must fail, each for its own reason."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

import pruners
from pruners import zoo
from pruners.convergence import convergence_lines, plateau_text, plateaued
from pruners.gate import BandVerdict, Verdict
from pruners.gates import RecoveryGate, recovery_table
from pruners.models import default_target
from pruners.record import CaseRecord
from pruners.spec import Recipes, Timing
from pruners.train import Recipe

from .conftest import TINY_RECIPE


def test_the_criterion_band_fails_on_either_side() -> None:
    inside = BandVerdict((2.5,), (0.8,), level=2.0, tolerance=1.0)
    assert inside.passed and "overlaps [1.00, 3.00]" in inside.rule
    fell = BandVerdict((8.0,), (0.8,), level=2.0, tolerance=1.0)
    assert fell.fell and not fell.rose and not fell.passed and "is outside" in fell.rule
    rose = BandVerdict((-4.0,), (0.8,), level=2.0, tolerance=1.0)
    assert rose.rose and not rose.fell and not rose.passed
    noisy = BandVerdict((5.0,), (1.0,), level=2.0, tolerance=1.0)
    assert noisy.passed, "3 points out, but within 2.33 x SE of the band"


def test_the_dense_control_is_the_baseline_fine_tuned_with_the_recovery_recipe(
    workload: pruners.Workload,
) -> None:
    baseline = zoo.load_baseline("test_resnet", workload, recipe=TINY_RECIPE)
    recovery = Recipe(epochs=1, lr=1e-3, distill=0.5)
    control = zoo.load_control(baseline, workload, recovery)
    assert control.path is not None and control.path.exists() and control.train_seconds > 0
    assert f"control-{recovery.key}" in control.path.name and control.recipe == recovery
    changed = [
        k for k, v in control.model.state_dict().items() if not torch.equal(v, baseline.model.state_dict()[k])
    ]
    assert changed, "the control was not trained"
    again = zoo.load_control(baseline, workload, recovery)
    assert again.train_seconds == control.train_seconds, "the second call trains again instead of loading"
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, control.model.state_dict()[k]), k
    assert len(baseline.epoch_top1) == 1 and 0 <= baseline.epoch_top1[0] <= 100


def test_a_corrupt_control_cache_is_an_error_until_deleted(workload: pruners.Workload) -> None:
    baseline = zoo.load_baseline("test_resnet", workload, recipe=TINY_RECIPE)
    recovery = Recipe(epochs=1, lr=2e-3, distill=0.5)
    control = zoo.load_control(baseline, workload, recovery)
    control.path.write_bytes(b"not a checkpoint")
    with pytest.raises(zoo.CorruptCacheError, match=f"the dense-control cache {control.path}: "):
        zoo.load_control(baseline, workload, recovery)
    assert control.path.read_bytes() == b"not a checkpoint"
    control.path.unlink()
    rebuilt = zoo.load_control(baseline, workload, recovery)
    assert rebuilt.top1 == pytest.approx(control.top1, abs=1.0)


def case_with(baseline: Recipe, recovery: Recipe) -> pruners.CaseResult:
    return pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            "l1",
            0.3,
            recipes=Recipes(baseline=baseline, recovery=recovery),
            timing=Timing(rounds=None),
        )
    )


@pytest.mark.slow
def test_an_under_trained_baseline_is_flagged_and_a_converged_one_is_not() -> None:
    under = case_with(Recipe(epochs=1, lr=1e-4), Recipe(epochs=3, lr=3e-3, distill=0.5)).summary()
    assert under["baseline_converged"] is False
    assert under["dense_control_top1"] > under["dense_top1"] + 10, "the control kept learning"
    (line,) = convergence_lines([CaseRecord.from_extra_info(under)])
    assert "test_resnet baseline was still learning" in line and "--pretrained" in line
    converged = case_with(Recipe(epochs=8, lr=3e-3, warmup_epochs=1), Recipe(epochs=1, lr=1e-5, distill=0.5))
    info = converged.summary()
    assert info["baseline_converged"] is True, (
        f"control gain {info['control_gain']} ± {info['control_gain_noise']}"
    )
    assert convergence_lines([CaseRecord.from_extra_info(info)]) == []
    assert len(info["baseline_epoch_top1"]) == zoo.EPOCH_HISTORY


@pytest.mark.slow
def test_audit_a_recovery_that_does_not_train_fails_the_recovery_gate() -> None:
    frozen = Recipe(epochs=1, lr=1e-7, distill=0.5)
    result = pruners.run_case(
        pruners.CaseSpec(
            "resnet18",
            "random",
            speedup=default_target("resnet18"),
            recipes=Recipes(recovery=frozen),
            timing=Timing(rounds=None),
        )
    )
    with pytest.raises(pruners.AccuracyDropError) as err:
        pruners.check_accuracy(result)
    message = str(err.value)
    assert "recovery gate failed" in message and "criterion gate failed" not in message


def test_a_baseline_has_plateaued_when_its_last_epoch_gained_at_most_a_point() -> None:
    assert plateaued((97.5, 99.7, 100.0)) is True
    assert plateaued((90.0, 92.5)) is False
    assert plateaued((99.0,)) is None and plateaued(()) is None
    assert plateau_text((98.6, 99.7, 99.4)) == "yes (98.6, 99.7, 99.4)"
    assert plateau_text(()) == "not recorded"


@dataclasses.dataclass(frozen=True)
class _Judged:
    """The parts of a :class:`pruners.CaseResult` the recovery gate reads: one seed's verdict."""

    verdict: Verdict
    tolerance_source: str = "registered"

    @property
    def tolerance(self) -> float:
        return self.verdict.tolerance

    @property
    def seeds(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(paired=SimpleNamespace(drop=d)) for d in self.verdict.drops]


def _gated(method: str, drop: float, noise: float, tolerance: float) -> CaseRecord:
    """A record with the recovery gate's own fields for a one-seed verdict on ``drop`` and ``noise``."""
    fields = RecoveryGate().fields(_Judged(Verdict((drop,), (noise,), tolerance)))
    return CaseRecord(model="resnet18", method=method, ratio=0.3, dense_top1=91.0, one_shot_top1=10.0,
                      recovered_top1=90.0 - drop, macs_dense=4, macs_pruned=2, params_dense=2,
                      params_pruned=1, seeds=[6, 7], dense_control_top1=90.0, **fields)  # fmt: skip


def test_the_recovery_table_gives_each_judged_case_its_bound_and_verdict() -> None:
    unjudged = dataclasses.replace(_gated("taylor", 0.0, 0.1, 1.0), top1_drop=None)
    failed, passed = _gated("random", 2.5, 0.2, 1.5), _gated("l1", 0.504, 0.1496, 1.0)
    table = recovery_table([failed, passed, unjudged])
    lines = table.splitlines()
    assert lines[0].startswith("| case | seeds | control | recovered | drop ± noise | drop - z x noise |")
    # The gate's own bound, 0.504 - 2.33 x 0.1496 = 0.156: recomputed from the rounded 0.50 and 0.150 it
    # would read 0.15.
    assert lines[2] == "| resnet18-l1-0.3 | 6,7 | 90.00 | 89.50 | 0.50 ± 0.15 | 0.16 | 1 | pass |"
    assert lines[3] == "| resnet18-random-0.3 | 6,7 | 90.00 | 87.50 | 2.50 ± 0.20 | 2.03 | 1.5 | FAIL |"
    assert len(lines) == 4, "a case without a judged drop has no row"
    assert recovery_table([unjudged]) == ""
    older = dataclasses.replace(passed, top1_drop_bound=None)
    assert "| 0.50 ± 0.15 | - | 1 | pass |" in recovery_table([older]), "a record without the bound"
