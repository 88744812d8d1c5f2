"""A whole case on a tiny model, and the tolerance check that must be able to fail."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pruners
from pruners.measure import compare_latency, top1
from pruners.train import Recipe

from .conftest import TINY_RECIPE

FAST_RECOVERY = Recipe(epochs=1, lr=1e-3)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> pruners.CaseResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pruners.zoo.CACHE_ENV, str(tmp_path_factory.mktemp("case-cache")))
        return pruners.run(
            "test_resnet",
            "l1",
            0.3,
            pruners.digits(),
            batch_size=16,
            latency_rounds=3,
            recovery=FAST_RECOVERY,
            baseline_recipe=TINY_RECIPE,
        )


def test_case_measures_everything(result: pruners.CaseResult) -> None:
    info = result.summary()
    assert result.record.macs_after < result.record.macs_before
    assert info["macs_speedup"] > 1
    assert 0 <= info["pruned_top1"] <= 100 and 0 <= info["dense_top1"] <= 100
    assert info["top1_drop"] == pytest.approx(info["dense_top1"] - info["pruned_top1"], abs=0.02)
    assert result.latency is not None and result.latency.dense_ms > 0 and result.latency.pruned_ms > 0
    assert info["latency_speedup"] == pytest.approx(
        result.latency.dense_ms / result.latency.pruned_ms, rel=1e-2
    )
    assert info["batch_size"] == 16 and info["threads"] == torch.get_num_threads()
    assert "points" in info["tolerance"]


def test_recovery_fine_tune_changes_the_pruned_model(result: pruners.CaseResult) -> None:
    assert result.pruned_top1 != result.pruned_top1_before_recovery
    assert top1(result.pruned, pruners.digits().loader("test", 256)) == result.pruned_top1


def test_tolerance_check_fails_on_a_destroyed_model(result: pruners.CaseResult) -> None:
    destroyed = result.pruned
    with torch.no_grad():
        for p in destroyed.parameters():
            p.zero_()
    wrecked = dataclasses.replace(result, pruned_top1=top1(destroyed, pruners.digits().loader("test", 256)))
    assert wrecked.pruned_top1 < 15
    with pytest.raises(pruners.AccuracyDropError, match=r"pruned top-1 \d+\.\d\d% is .* below dense"):
        pruners.check_accuracy(wrecked)


def test_tolerance_check_passes_within_tolerance(result: pruners.CaseResult) -> None:
    pruners.check_accuracy(dataclasses.replace(result, pruned_top1=result.dense_top1 - result.tolerance))
    with pytest.raises(pruners.AccuracyDropError):
        pruners.check_accuracy(
            dataclasses.replace(result, pruned_top1=result.dense_top1 - result.tolerance - 0.01)
        )


def test_recovery_is_a_third_of_the_baseline_budget() -> None:
    recipe = pruners.zoo.baseline_recipe("resnet18")
    recovery = pruners.case.recovery_recipe(recipe)
    assert recovery.epochs == recipe.epochs // 3 and recovery.lr == recipe.lr and recovery.warmup_epochs == 0
    assert pruners.case.recovery_recipe(Recipe(epochs=2, lr=1e-3)).epochs == 1


def test_latency_compares_a_slower_model() -> None:
    fast = torch.nn.Conv2d(3, 8, 3)
    slow = torch.nn.Sequential(
        *[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(20)], torch.nn.Conv2d(3, 8, 3)
    )
    stats = compare_latency(slow, fast, torch.randn(8, 3, 64, 64), rounds=5)
    assert stats.speedup > 2
    assert stats.dense_p90_ms >= stats.dense_ms
    with pytest.raises(ValueError, match="rounds"):
        compare_latency(slow, fast, torch.randn(1, 3, 8, 8), rounds=1)
