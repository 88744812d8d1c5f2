"""One bench case, composed in one place: baseline -> prune -> recover -> evaluate -> measure.

The pytest matrix, the asv suite and the command line all call :func:`run`, so their numbers agree.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from .data import Workload, digits
from .measure import LatencyStats, compare_latency, top1
from .pruning import PruneRecord, prune
from .registry import get_method
from .train import Recipe, train
from .unstructured import make_permanent
from .zoo import load_baseline

CALIB_BATCHES = 4


def recovery_recipe(baseline: Recipe) -> Recipe:
    """The fine-tune every method gets after pruning: a third of the baseline's epochs, at its peak lr."""
    return dataclasses.replace(baseline, epochs=max(1, baseline.epochs // 3), warmup_epochs=0)


class AccuracyDropError(AssertionError):
    """The pruned model lost more top-1 than its method's tolerance allows."""


@dataclass
class CaseResult:
    """Everything one case measured; ``dense`` and ``pruned`` are the models themselves."""

    model_name: str
    method: str
    ratio: float
    tolerance: float
    dense_top1: float
    pruned_top1_before_recovery: float
    pruned_top1: float
    record: PruneRecord
    baseline_recipe: Recipe
    recovery_recipe: Recipe
    recovery_seconds: float
    seed: int
    inputs: torch.Tensor
    dense: nn.Module
    pruned: nn.Module
    latency: LatencyStats | None

    @property
    def top1_drop(self) -> float:
        """Dense minus pruned top-1, in points (negative when pruning helped)."""
        return self.dense_top1 - self.pruned_top1

    def summary(self) -> dict[str, float | int | str]:
        """Flat figures for pytest-benchmark's ``extra_info`` and reports."""
        info: dict[str, float | int | str] = {
            "model": self.model_name,
            "method": self.method,
            "kind": self.record.kind,
            "ratio": self.ratio,
            "dense_top1": round(self.dense_top1, 2),
            "pruned_top1_before_recovery": round(self.pruned_top1_before_recovery, 2),
            "pruned_top1": round(self.pruned_top1, 2),
            "top1_drop": round(self.top1_drop, 2),
            "tolerance": f"pruned top-1 >= dense top-1 - {self.tolerance} points",
            "macs_dense": self.record.macs_before,
            "macs_pruned": self.record.macs_after,
            "params_dense": self.record.params_before,
            "params_pruned": self.record.params_after,
            "macs_speedup": round(self.record.macs_speedup, 3),
            "channel_ratio": round(self.record.channel_ratio, 3),
            "sparsity": round(self.record.sparsity, 3),
            "baseline_recipe": repr(self.baseline_recipe),
            "recovery_recipe": repr(self.recovery_recipe),
            "recovery_seconds": round(self.recovery_seconds, 1),
            "seed": self.seed,
            "batch_size": len(self.inputs),
            "threads": torch.get_num_threads(),
        }
        if self.latency is not None:
            info.update({f"latency_{k}": round(v, 3) for k, v in self.latency.as_dict().items()})
        return info


def check_accuracy(result: CaseResult) -> None:
    """Raise :class:`AccuracyDropError` unless pruned top-1 >= dense top-1 - tolerance."""
    if result.pruned_top1 < result.dense_top1 - result.tolerance:
        raise AccuracyDropError(
            f"{result.model_name} / {result.method} @ {result.ratio}: pruned top-1 {result.pruned_top1:.2f}% "
            f"is {result.top1_drop:.2f} points below dense {result.dense_top1:.2f}% "
            f"(tolerance {result.tolerance} points)"
        )


def run(
    model_name: str,
    method: str,
    ratio: float | None = None,
    workload: Workload | None = None,
    *,
    seed: int = 0,
    batch_size: int = 32,
    latency_rounds: int | None = 20,
    recovery: Recipe | None = None,
    baseline_recipe: Recipe | None = None,
) -> CaseResult:
    """Prune the dense ``model_name`` baseline with ``method`` at ``ratio`` (default: the method's own),
    fine-tune it with the shared ``recovery`` budget and measure both models.

    ``batch_size`` is the batch of held-out images used for MACs and latency; ``latency_rounds=None``
    skips latency (for parallel runs, where timings would be meaningless). ``baseline_recipe`` overrides
    :func:`pruners.zoo.baseline_recipe` for the dense model, ``recovery`` overrides :func:`recovery_recipe`.
    """
    spec = get_method(method)
    ratio = spec.default_ratio if ratio is None else ratio
    workload = workload or digits()
    baseline = load_baseline(model_name, workload, seed=seed, recipe=baseline_recipe)
    inputs = workload.test_batch(batch_size)
    test = workload.loader("test", batch_size=256)
    calib = list(islice(workload.loader("train", batch_size, seed=seed), CALIB_BATCHES))
    torch.manual_seed(seed)
    pruned, record = prune(baseline.model, method, ratio, inputs, calib=calib)
    before_recovery = top1(pruned, test)
    recovery = recovery or recovery_recipe(baseline.recipe)
    start = time.perf_counter()
    train(pruned, workload, recovery, seed=seed, desc=f"recover {model_name}/{method}")
    recovery_seconds = time.perf_counter() - start
    make_permanent(pruned)
    latency = (
        None if latency_rounds is None else compare_latency(baseline.model, pruned, inputs, latency_rounds)
    )
    return CaseResult(
        model_name=model_name,
        method=method,
        ratio=ratio,
        tolerance=spec.tolerance,
        dense_top1=baseline.top1,
        pruned_top1_before_recovery=before_recovery,
        pruned_top1=top1(pruned, test),
        record=record,
        baseline_recipe=baseline.recipe,
        recovery_recipe=recovery,
        recovery_seconds=recovery_seconds,
        seed=seed,
        inputs=inputs,
        dense=baseline.model,
        pruned=pruned,
        latency=latency,
    )
