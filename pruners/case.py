"""One bench case, composed in one place from small stages: dense models -> prune -> recalibrate ->
recover -> score -> time.

The pytest plugin, the ``prunebench`` commands and the asv suite all call :func:`run_case` with a
:class:`pruners.CaseSpec`, so their numbers agree.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from . import zoo
from .case_timing import latency_inputs, time_stage
from .data import Workload
from .decisions import weights_fingerprint
from .forgetting import forgetting_figures
from .gate import PairedDrop
from .gates import GATES
from .latency_target import LatencyResult, RuntimeMeter, prune_to_latency
from .levels import case_tolerance, criterion_level
from .measure import correct, device_of
from .pruning import PruneRecord, prune
from .registry import MethodData, Regularizer, get_method
from .result import CaseResult, SeedResult
from .scratch import train_scratch
from .search import prune_to_speedup
from .spec import CaseSpec
from .train import Recipe, recalibrate_batchnorm, train
from .unstructured import make_permanent

CALIB_BATCHES = 4
# Images per calibration batch: what a data-driven method sees does not depend on the latency batch.
CALIB_BATCH_SIZE = 32
# How many dense models' held-out correctness one process keeps (:func:`dense_correct`).
DENSE_SCORES_KEPT = 16
_DENSE_SCORES: dict[str, tuple[torch.utils.data.Dataset, torch.Tensor]] = {}


def split_budget(recovery: Recipe, needs: Sequence[str]) -> tuple[int, int]:
    """``(sparse-training epochs, recovery epochs)`` out of the ``recovery`` budget: half (at least one)
    goes to sparse training for methods that need ``"train"``, none for the others."""
    sparse = max(1, recovery.epochs // 2) if "train" in needs else 0
    return sparse, recovery.epochs - sparse


class AccuracyDropError(AssertionError):
    """The pruned model lost more top-1 than its method's tolerance allows, beyond the test-set noise."""


def check_accuracy(result: CaseResult) -> None:
    """Raise :class:`AccuracyDropError` for the first gate of :data:`pruners.gates.GATES` that fails the case
    and fails it: the recovery gate (the recovered drop from the dense control past the tolerance, beyond
    the noise).

    The criterion band and the convergence check are reported, not gated: on training seeds its calibration
    never saw the band failed sound criteria (README, "Limits"); the golden decisions on the reference
    models (:mod:`pruners.golden`) carry the criterion's check."""
    record = result.case_record()
    for gate in GATES:
        if gate.fails_case and gate.passed(record) is False:
            raise AccuracyDropError(gate.failure(record))


def calibration_batches(
    workload: Workload, batch_size: int, seed: int = 0, device: torch.device | str = "cpu"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The labelled training batches a data-driven method sees while pruning (the same for every method),
    on ``device``: drawn with ``seed``, augmentation included, whatever ran before in the process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batches = list(islice(workload.loader("recovery", batch_size, seed=seed), CALIB_BATCHES))
    return [(images.to(device), labels.to(device)) for images, labels in batches]


def method_data(
    method: str,
    workload: Workload,
    batch_size: int,
    recovery: Recipe,
    teacher: nn.Module,
    seed: int = 0,
    desc: str = "",
) -> MethodData:
    """What the harness hands ``method``: :func:`calibration_batches` of ``batch_size`` images, and for
    sparse-training methods a ``sparse_train`` that runs their share of the ``recovery`` budget
    (:func:`split_budget`), distilling from ``teacher`` like the recovery does."""
    epochs, _ = split_budget(recovery, get_method(method).needs)
    sparse = dataclasses.replace(recovery, epochs=epochs)

    def sparse_train(model: nn.Module, regularize: Regularizer, on_epoch: Callable[[], None]) -> None:
        label = f"sparse-train {desc}/{method}"
        train(
            model,
            workload,
            sparse,
            seed,
            label,
            teacher,
            regularize=regularize,
            on_epoch=on_epoch,
            split="recovery",
        )

    calib = calibration_batches(workload, batch_size, seed, device_of(teacher))
    return MethodData(calib, sparse_train if epochs else None)


@dataclass
class DenseModels:
    """A seed's dense baseline (the model that is pruned) and its dense control (the baseline fine-tuned with
    the recovery recipe: what the recovery gate judges against)."""

    baseline: zoo.Baseline
    control: zoo.Baseline


def spec_baseline(spec: CaseSpec, seed: int) -> zoo.Baseline:
    """The cached (or trained, pretrained, loaded) dense baseline of ``spec`` at ``seed``, on its device."""
    return zoo.load_baseline(
        spec.model,
        spec.data,
        seed=seed,
        recipe=spec.baseline_recipe,
        pretrained=spec.weights.pretrained,
        checkpoint=spec.weights.checkpoint,
        device=spec.weights.device,
    )


def dense_models(spec: CaseSpec, seed: int) -> DenseModels:
    """Stage 1: the baseline of ``seed`` (:func:`spec_baseline`) and its dense control."""
    baseline = spec_baseline(spec, seed)
    control = zoo.load_control(baseline, spec.data, spec.recovery_recipe, device=spec.weights.device)
    return DenseModels(baseline, control)


def prune_stage(
    spec: CaseSpec, dense: nn.Module, inputs: torch.Tensor, data: MethodData, seed: int
) -> tuple[nn.Module, PruneRecord, float, LatencyResult | None]:
    """Stage 2: a pruned copy of ``dense`` at the spec's cost, its record, the seconds it took and, for a
    latency target, how the search met it (timed in the spec's runtime, at its latency size if any)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    if spec.latency_speedup is not None:
        timing = spec.timing
        meter = RuntimeMeter(spec.latency_runtime, dense, latency_inputs(inputs, timing))
        pruned, record, found = prune_to_latency(
            dense,
            spec.method,
            spec.latency_speedup,
            inputs,
            meter,
            data.calib,
            sparse_train=data.sparse_train,
        )
        found = dataclasses.replace(found, runtime=spec.latency_runtime, size=timing.size)
        return pruned, record, time.perf_counter() - start, found
    if spec.speedup is not None:
        pruned, record = prune_to_speedup(
            dense, spec.method, spec.speedup, inputs, calib=data.calib, sparse_train=data.sparse_train
        )
    else:
        pruned, record = prune(
            dense, spec.method, spec.ratio, inputs, calib=data.calib, sparse_train=data.sparse_train
        )
    return pruned, record, time.perf_counter() - start, None


def recover_stage(spec: CaseSpec, pruned: nn.Module, teacher: nn.Module, epochs: int, seed: int) -> float:
    """Stage 4: the recovery fine-tune of ``pruned`` (``epochs`` of the recovery recipe, distilling from
    ``teacher``), made permanent; the seconds it took."""
    start = time.perf_counter()
    if epochs:
        rest = dataclasses.replace(spec.recovery_recipe, epochs=epochs)
        desc = f"recover {spec.model}/{spec.method}"
        train(pruned, spec.data, rest, seed=seed, desc=desc, teacher=teacher, split="recovery")
    seconds = time.perf_counter() - start
    make_permanent(pruned)
    return seconds


def dense_correct(model: nn.Module, data: Workload) -> torch.Tensor:
    """:func:`pruners.measure.correct` of an unpruned model (a seed's baseline or its dense control) on
    ``data``'s held-out images, scored once per process: every case of a seed scores the same two models,
    which on a large test split costs as much as a pruned model's recovery. Keyed by the weights' digest,
    so a model whose weights changed is scored again."""
    key = weights_fingerprint(model)
    kept = _DENSE_SCORES.get(key)
    if kept is not None and kept[0] is data.test:
        return kept[1].clone()
    scores = correct(model, data.loader("test", batch_size=256))
    if len(_DENSE_SCORES) >= DENSE_SCORES_KEPT:
        _DENSE_SCORES.pop(next(iter(_DENSE_SCORES)))
    _DENSE_SCORES[key] = (data.test, scores)
    return scores.clone()


def run_seed(spec: CaseSpec, seed: int, inputs: torch.Tensor) -> SeedResult:
    """One seed of a case: dense models, prune, recalibrate (stage 3), recover, score every model on the
    same held-out images."""
    dense = dense_models(spec, seed)
    baseline = dense.baseline
    test = spec.data.loader("test", batch_size=256)
    budget = split_budget(spec.recovery_recipe, get_method(spec.method).needs)
    data = method_data(
        spec.method, spec.data, CALIB_BATCH_SIZE, spec.recovery_recipe, baseline.model, seed, desc=spec.model
    )
    pruned, record, prune_seconds, latency_search = prune_stage(spec, baseline.model, inputs, data, seed)
    one_shot = correct(pruned, test)
    recalibrated, images = recalibrate_batchnorm(pruned, spec.data, seed=seed)
    recalibrated_ok = correct(recalibrated, test) if images else one_shot
    recovery_seconds = recover_stage(spec, pruned, baseline.model, budget[1], seed)
    dense_ok, recovered_ok = dense_correct(baseline.model, spec.data), correct(pruned, test)
    control_ok = dense_correct(dense.control.model, spec.data)
    scratch: dict[str, object] = {}
    if spec.recipes.scratch and record.kind == "structured":
        desc = f"{spec.model}/{spec.method}"
        model, seconds = train_scratch(pruned, spec.data, spec.baseline_recipe, seed, desc)
        scratch_ok = correct(model, test)
        scratch = {"scratch": PairedDrop.from_correct(recovered_ok, scratch_ok), "scratch_seconds": seconds}
    return SeedResult(
        seed=seed,
        paired=PairedDrop.from_correct(control_ok, recovered_ok),
        criterion=PairedDrop.from_correct(dense_ok, recalibrated_ok),
        convergence=PairedDrop.from_correct(dense_ok, control_ok),
        control_train_seconds=dense.control.train_seconds,
        baseline_epoch_top1=baseline.epoch_top1,
        pruned_top1_before_recovery=100.0 * one_shot.float().mean().item(),
        pruned_top1_recalibrated=100.0 * recalibrated_ok.float().mean().item(),
        recalibration_images=images,
        record=record,
        recovery_seconds=recovery_seconds,
        baseline_train_seconds=baseline.train_seconds,
        prune_seconds=prune_seconds,
        budget=budget,
        latency_search=latency_search,
        dense=baseline.model,
        pruned=pruned,
        correct={
            "dense": dense_ok,
            "control": control_ok,
            "recalibrated": recalibrated_ok,
            "recovered": recovered_ok,
            **({"scratch": scratch_ok} if scratch else {}),
        },
        **scratch,
    )


def run_case(spec: CaseSpec) -> CaseResult:
    """Run ``spec``: for each training seed, the dense baseline and control, prune, recalibrate, recover and
    score on the same held-out images; then time the first seed's models (:class:`pruners.spec.Timing`).

    Each seed has its own cached baseline; a MACs target is searched per seed
    (:func:`pruners.search.prune_to_speedup`)."""
    inputs = spec.data.test_batch(spec.timing.batch_size).to(spec.weights.device)
    results = [run_seed(spec, seed, inputs) for seed in spec.seeds]
    forgetting = forgetting_figures(spec.data, [s.correct for s in results])
    timings = time_stage(spec, results[0], inputs)
    recovery = spec.recovery_recipe
    case = spec.case(results[0].record.ratio)
    keys = spec.data.family, case.id, spec.baseline_recipe.key, recovery.key, spec.data.img_size
    level, missing = criterion_level(*keys)
    tolerance, tolerance_source = case_tolerance(*keys, get_method(spec.method).tolerance)
    return CaseResult(
        model_name=spec.model,
        method=spec.method,
        ratio=results[0].record.ratio,
        tolerance=tolerance,
        tolerance_source=tolerance_source,
        seeds=results,
        baseline_recipe=spec.baseline_recipe,
        recovery_recipe=recovery,
        inputs=inputs,
        latency=timings.latency,
        latency_at_size=timings.at_size,
        latency_at_size_error=timings.at_size_error,
        data=spec.data.split,
        unreadable_images=spec.data.unreadable,
        weights=spec.weights.describe(),
        target_speedup=spec.speedup,
        target_latency=spec.latency_speedup,
        family=spec.data.family,
        level=level,
        level_missing=missing,
        runtimes=timings.runtimes,
        forgetting=forgetting,
        scratch=spec.recipes.scratch,
    )
