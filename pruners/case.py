"""One bench case, composed in one place: baseline -> prune -> recover -> evaluate -> measure.

The pytest matrix, the calibration command and the asv suite all call :func:`run`, so their numbers agree.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from . import zoo
from .data import Workload, digits
from .decisions import weights_fingerprint
from .gate import BandVerdict, PairedDrop, Verdict, band, encode_correct, judge
from .levels import CriterionLevel, criterion_level
from .matrix import Case
from .measure import LatencyStats, TimingOptions, compare_latency, correct, device_of
from .pruning import PruneRecord, check_target, prune, prune_to_speedup
from .registry import MethodData, Regularizer, get_method
from .runtimes import RuntimeLatency, check_runtimes, compare_runtimes
from .train import RECALIBRATION_BATCH_SIZE, Recipe, recalibrate_batchnorm, train
from .unstructured import make_permanent

CALIB_BATCHES = 4
# Images per calibration batch: what a data-driven method sees does not depend on the latency batch.
CALIB_BATCH_SIZE = 32
# Weight of the distillation term in the recovery loss (0 turns distillation off); see recovery_recipe.
RECOVERY_DISTILL = 0.5


def recovery_recipe(baseline: Recipe, distill: float = RECOVERY_DISTILL) -> Recipe:
    """The fine-tune every method gets after pruning: a third of the baseline's epochs at its peak lr,
    distilling from the dense model with weight ``distill``."""
    return dataclasses.replace(
        baseline, epochs=max(1, baseline.epochs // 3), warmup_epochs=0, distill=distill
    )


def split_budget(recovery: Recipe, needs: Sequence[str]) -> tuple[int, int]:
    """``(sparse-training epochs, recovery epochs)`` out of the ``recovery`` budget: half (at least one)
    goes to sparse training for methods that need ``"train"``, none for the others."""
    sparse = max(1, recovery.epochs // 2) if "train" in needs else 0
    return sparse, recovery.epochs - sparse


class AccuracyDropError(AssertionError):
    """The pruned model lost more top-1 than its method's tolerance allows, beyond the test-set noise."""


@dataclass
class SeedResult:
    """One training seed of a case. ``paired`` is the recovery gate's drop, from the dense control (the
    baseline fine-tuned with the same recovery recipe) to the recovered pruned model; ``criterion`` the
    criterion band's (reported, not gated), from the dense baseline to its BatchNorm-recalibrated one-shot
    pruned model; ``convergence`` the control's gain over the baseline (negative drop: the control is
    more accurate)."""

    seed: int
    paired: PairedDrop
    criterion: PairedDrop
    convergence: PairedDrop
    control_train_seconds: float
    baseline_epoch_top1: tuple[float, ...]
    pruned_top1_before_recovery: float
    pruned_top1_recalibrated: float
    recalibration_images: int
    record: PruneRecord
    recovery_seconds: float
    baseline_train_seconds: float
    prune_seconds: float
    budget: tuple[int, int]
    dense: nn.Module = dataclasses.field(repr=False)
    pruned: nn.Module = dataclasses.field(repr=False)
    correct: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, object]:
        """This seed's figures; ``correct`` packs the per-image correctness of its ``dense``,
        ``recalibrated`` and ``recovered`` models (:func:`pruners.gate.encode_correct`), so that a report
        can pair any two cases of a run."""
        low, high = self.paired.ci(0.95)
        return {
            "seed": self.seed,
            "ratio": round(self.record.ratio, 4),
            "macs_speedup": round(self.record.macs_speedup, 3),
            "dense_top1": round(self.criterion.dense_top1, 2),
            "dense_control_top1": round(self.paired.dense_top1, 2),
            "control_gain": round(-self.convergence.drop, 2),
            "control_gain_se": round(self.convergence.se, 3),
            "baseline_epoch_top1": list(self.baseline_epoch_top1),
            "criterion_drop": round(self.criterion.drop, 2),
            "criterion_drop_se": round(self.criterion.se, 3),
            "pruned_top1_before_recovery": round(self.pruned_top1_before_recovery, 2),
            "pruned_top1_recalibrated": round(self.pruned_top1_recalibrated, 2),
            "pruned_top1": round(self.paired.pruned_top1, 2),
            "top1_drop": round(self.paired.drop, 2),
            "top1_drop_se": round(self.paired.se, 3),
            "top1_drop_ci95": [round(low, 2), round(high, 2)],
            "mcnemar_p": round(self.paired.mcnemar_p, 4),
            "prune_seconds": round(self.prune_seconds, 1),
            "recovery_seconds": round(self.recovery_seconds, 1),
            "baseline_train_seconds": round(self.baseline_train_seconds, 1),
            "control_train_seconds": round(self.control_train_seconds, 1),
            "correct": {name: encode_correct(ok) for name, ok in self.correct.items()},
            "baseline_fingerprint": weights_fingerprint(self.dense),
            "decision_fingerprint": self.record.decision.fingerprint(),
        }


@dataclass
class CaseResult:
    """Everything one case measured over its seeds; latency is the first seed's."""

    model_name: str
    method: str
    ratio: float
    tolerance: float
    seeds: list[SeedResult]
    baseline_recipe: Recipe
    recovery_recipe: Recipe
    inputs: torch.Tensor
    latency: LatencyStats | None
    latency_at_size: LatencyStats | None = None
    latency_at_size_error: str = ""
    data: str = ""
    unreadable_images: int = 0
    runtimes: dict[str, tuple[dict[str, RuntimeLatency], dict[str, str]]] = field(default_factory=dict)
    weights: str = "trained here"
    target_speedup: float | None = None
    family: str = "digits"
    level: CriterionLevel | None = None
    level_missing: str = ""

    @property
    def case(self) -> Case:
        """The bench case this result belongs to (its cost is the MACs target, else the ratio)."""
        ratio = None if self.target_speedup is not None else self.ratio
        return Case(self.model_name, self.method, ratio, self.target_speedup)

    @property
    def dense(self) -> nn.Module:
        """The first seed's dense baseline."""
        return self.seeds[0].dense

    @property
    def pruned(self) -> nn.Module:
        """The first seed's pruned and recovered model."""
        return self.seeds[0].pruned

    @property
    def record(self) -> PruneRecord:
        """The first seed's prune record (MACs, params, sparsity)."""
        return self.seeds[0].record

    @property
    def verdict(self) -> Verdict:
        """The recovery gate's decision over all seeds, against the dense control (:mod:`pruners.gate`)."""
        return judge([s.paired for s in self.seeds], self.tolerance)

    @property
    def criterion_verdict(self) -> BandVerdict | None:
        """The criterion band's verdict (reported), or ``None`` when the case has no calibrated level."""
        if self.level is None:
            return None
        return band([s.criterion for s in self.seeds], self.level.level, self.level.tolerance)

    @property
    def convergence(self) -> Verdict:
        """The control's gain over the baseline: ``passed`` is False when the control beats the baseline by
        more than the noise allows (one-sided 99 %), i.e. the baseline was still learning."""
        return judge([s.convergence for s in self.seeds], 0.0)

    @property
    def baseline_converged(self) -> bool:
        conv = self.convergence
        return conv.mean_drop + conv.z * conv.noise >= 0

    @property
    def dense_top1(self) -> float:
        """The dense baseline's top-1 (mean over seeds): the model that was pruned."""
        return statistics.fmean(s.criterion.dense_top1 for s in self.seeds)

    @property
    def control_top1(self) -> float:
        """The dense control's top-1 (mean over seeds): what the recovery gate judges against."""
        return statistics.fmean(s.paired.dense_top1 for s in self.seeds)

    @property
    def pruned_top1(self) -> float:
        return statistics.fmean(s.paired.pruned_top1 for s in self.seeds)

    @property
    def recalibration(self) -> str:
        """How ``pruned_top1_recalibrated`` was measured, in words."""
        images = self.seeds[0].recalibration_images
        if not images:
            return "no BatchNorm layers: equals the one-shot top-1"
        return (
            f"BatchNorm running statistics re-estimated on {images} training images "
            f"({images // RECALIBRATION_BATCH_SIZE} batches), weights untouched"
        )

    @property
    def top1_drop(self) -> float:
        """Mean over seeds of dense minus pruned top-1, in points (negative when pruning helped)."""
        return self.verdict.mean_drop

    def summary(self) -> dict[str, object]:
        """Flat figures for pytest-benchmark's ``extra_info`` and reports; ``per_seed`` holds each seed's."""
        verdict, criterion, conv = self.verdict, self.criterion_verdict, self.convergence
        drops = [s.paired.drop for s in self.seeds]
        info: dict[str, object] = {
            "model": self.model_name,
            "method": self.method,
            "kind": self.record.kind,
            "ratio": self.ratio,
            "seeds": [s.seed for s in self.seeds],
            "family": self.family,
            "dense_top1": round(self.dense_top1, 2),
            "dense_control_top1": round(self.control_top1, 2),
            "gate_reference": "dense control: the baseline fine-tuned with the same recovery recipe",
            "control_gain": round(-conv.mean_drop, 2),
            "control_gain_noise": round(conv.noise, 3),
            "baseline_converged": self.baseline_converged,
            "baseline_epoch_top1": list(self.seeds[0].baseline_epoch_top1),
            "pruned_top1_before_recovery": round(
                statistics.fmean(s.pruned_top1_before_recovery for s in self.seeds), 2
            ),
            "pruned_top1_recalibrated": round(
                statistics.fmean(s.pruned_top1_recalibrated for s in self.seeds), 2
            ),
            "recalibration": self.recalibration,
            "pruned_top1": round(self.pruned_top1, 2),
            "top1_drop": round(verdict.mean_drop, 2),
            "top1_drop_min": round(min(drops), 2),
            "top1_drop_max": round(max(drops), 2),
            "top1_drop_seed_std": round(verdict.seed_std, 3),
            "top1_drop_noise": round(verdict.noise, 3),
            "tolerance": self.tolerance,
            "gate": verdict.rule,
            "recovery_passed": verdict.passed,
            "criterion_drop": round(statistics.fmean(s.criterion.drop for s in self.seeds), 2),
            "criterion_level": self.level.level if self.level else None,
            "criterion_tolerance": self.level.tolerance if self.level else None,
            "criterion_gate": criterion.rule if criterion else f"not judged: {self.level_missing}",
            "criterion_passed": criterion.passed if criterion else None,
            "passed": verdict.passed,
            "macs_dense": self.record.macs_before,
            "macs_pruned": self.record.macs_after,
            "params_dense": self.record.params_before,
            "params_pruned": self.record.params_after,
            "macs_speedup": round(self.record.macs_speedup, 3),
            "channel_ratio": round(self.record.channel_ratio, 3),
            "sparsity": round(self.record.sparsity, 3),
            "head_ratio": round(self.record.head_ratio, 3),
            "target_speedup": self.target_speedup,
            "channel_multiple": self.record.channel_multiple if self.record.kind == "structured" else None,
            "search_probes": self.record.probes,
            "sparse_train_epochs": self.seeds[0].budget[0],
            "recovery_epochs": self.seeds[0].budget[1],
            "baseline_recipe": repr(self.baseline_recipe),
            "recovery_recipe": repr(self.recovery_recipe),
            "batch_size": len(self.inputs),
            "threads": torch.get_num_threads(),
            "per_seed": [s.summary() for s in self.seeds],
        }
        first = info["per_seed"][0]
        info.update({k: first[k] for k in ("baseline_fingerprint", "decision_fingerprint")})
        if len(self.seeds) == 1:
            info.update({k: first[k] for k in ("top1_drop_se", "top1_drop_ci95", "mcnemar_p")})
        info.update(
            {
                "data": self.data,
                "unreadable_images": self.unreadable_images,
                "weights": self.weights,
                "device": str(device_of(self.pruned)),
            }
        )
        for prefix, stats in (("latency", self.latency), ("latency_at_size", self.latency_at_size)):
            if stats is not None:
                info.update({f"{prefix}_{k}": _rounded(v) for k, v in stats.as_dict().items()})
        if self.latency_at_size_error:
            info["latency_at_size_error"] = self.latency_at_size_error
        macs = self.record.macs_speedup
        for size, (timed, errors) in self.runtimes.items():
            for runtime, stats in timed.items():
                figures = {k: v for k, v in stats.as_dict().items() if k != "runtime"}
                figures["per_macs"] = stats.speedup / macs
                info.update({f"latency_{size}{runtime}_{k}": _rounded(v) for k, v in figures.items()})
            info.update({f"latency_{size}{runtime}_error": why for runtime, why in errors.items()})
        return info


def _rounded(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def check_accuracy(result: CaseResult) -> None:
    """Raise :class:`AccuracyDropError` when the recovered drop from the dense control exceeds the
    tolerance by more than the noise allows (the recovery gate).

    The criterion band (recalibrated one-shot top-1 against its calibrated level) is reported, not gated:
    on training seeds its calibration never saw it failed sound criteria (README, "The criterion band");
    the golden decisions on the reference models (:mod:`pruners.golden`) carry the criterion's check."""
    verdict = result.verdict
    if not verdict.passed:
        raise AccuracyDropError(
            f"{result.case.id}: recovery gate failed: control top-1 {result.control_top1:.2f}% -> recovered "
            f"{result.pruned_top1:.2f}%, a drop of {verdict.mean_drop:.2f} points with noise "
            f"{verdict.noise:.2f} (SE), past the tolerance of {result.tolerance:g} points: {verdict.rule}"
        )


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


def _run_seed(
    model_name: str,
    method: str,
    cost: tuple[float | None, float | None],
    workload: Workload,
    seed: int,
    inputs: torch.Tensor,
    dense_recipe: Recipe,
    recovery: Recipe,
    weights: Weights,
) -> SeedResult:
    """One seed of a case, pruned at ``cost``: ``(ratio, None)`` or ``(None, MACs target)``."""
    baseline = zoo.load_baseline(
        model_name,
        workload,
        seed=seed,
        recipe=dense_recipe,
        pretrained=weights.pretrained,
        checkpoint=weights.checkpoint,
        device=weights.device,
    )
    control = zoo.load_control(baseline, workload, recovery, device=weights.device)
    test = workload.loader("test", batch_size=256)
    budget = split_budget(recovery, get_method(method).needs)
    data = method_data(method, workload, CALIB_BATCH_SIZE, recovery, baseline.model, seed, desc=model_name)
    torch.manual_seed(seed)
    start = time.perf_counter()
    ratio, speedup = cost
    if speedup is not None:
        pruned, record = prune_to_speedup(
            baseline.model, method, speedup, inputs, calib=data.calib, sparse_train=data.sparse_train
        )
    else:
        pruned, record = prune(
            baseline.model, method, ratio, inputs, calib=data.calib, sparse_train=data.sparse_train
        )
    prune_seconds = time.perf_counter() - start
    one_shot = correct(pruned, test)
    recalibrated, images = recalibrate_batchnorm(pruned, workload, seed=seed)
    recalibrated_ok = correct(recalibrated, test) if images else one_shot
    start = time.perf_counter()
    if budget[1]:
        desc = f"recover {model_name}/{method}"
        rest = dataclasses.replace(recovery, epochs=budget[1])
        train(pruned, workload, rest, seed=seed, desc=desc, teacher=baseline.model, split="recovery")
    recovery_seconds = time.perf_counter() - start
    make_permanent(pruned)
    dense_ok, recovered_ok = correct(baseline.model, test), correct(pruned, test)
    control_ok = correct(control.model, test)
    return SeedResult(
        seed=seed,
        paired=PairedDrop.from_correct(control_ok, recovered_ok),
        criterion=PairedDrop.from_correct(dense_ok, recalibrated_ok),
        convergence=PairedDrop.from_correct(dense_ok, control_ok),
        control_train_seconds=control.train_seconds,
        baseline_epoch_top1=baseline.epoch_top1,
        pruned_top1_before_recovery=100.0 * one_shot.float().mean().item(),
        pruned_top1_recalibrated=100.0 * recalibrated_ok.float().mean().item(),
        recalibration_images=images,
        record=record,
        recovery_seconds=recovery_seconds,
        baseline_train_seconds=baseline.train_seconds,
        prune_seconds=prune_seconds,
        budget=budget,
        dense=baseline.model,
        pruned=pruned,
        correct={
            "dense": dense_ok,
            "control": control_ok,
            "recalibrated": recalibrated_ok,
            "recovered": recovered_ok,
        },
    )


@dataclass(frozen=True)
class Weights:
    """Where a case's dense model comes from and runs: a baseline trained here (the default), timm's
    ``pretrained`` weights or a local ``checkpoint``, on ``device``."""

    pretrained: bool = False
    checkpoint: Path | None = None
    device: str = "cpu"

    def describe(self) -> str:
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        return "timm pretrained" if self.pretrained else "trained here"


def sized_inputs(batch_size: int, img_size: int) -> torch.Tensor:
    """Seeded random ``img_size`` px inputs, for timing at a size the workload does not have."""
    return torch.randn(batch_size, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))


def latency_at_size(
    dense: nn.Module,
    pruned: nn.Module,
    img_size: int,
    batch_size: int,
    rounds: int,
    timing: TimingOptions,
) -> tuple[LatencyStats | None, str]:
    """Dense and pruned latency on seeded random ``img_size`` px inputs (the resolution people deploy at),
    or ``(None, why)`` when the architecture cannot take that size."""
    inputs = sized_inputs(batch_size, img_size).to(device_of(dense))
    try:
        return compare_latency(dense, pruned, inputs, rounds, options=timing), ""
    except (RuntimeError, AssertionError, ValueError) as err:
        return None, f"not timed at {img_size} px: {type(err).__name__}: {str(err).strip()[:160]}"


def run(
    model_name: str,
    method: str,
    ratio: float | None = None,
    workload: Workload | None = None,
    *,
    seeds: Sequence[int] = (0,),
    batch_size: int = 32,
    latency_rounds: int | None = 20,
    recovery: Recipe | None = None,
    baseline_recipe: Recipe | None = None,
    recovery_epochs: int | None = None,
    weights: Weights = Weights(),
    timing: TimingOptions | None = None,
    latency_size: int | None = None,
    speedup: float | None = None,
    runtimes: Sequence[str] = (),
) -> CaseResult:
    """Prune the dense ``model_name`` baseline with ``method`` at ``ratio`` (default: the method's own),
    or at the ratio that removes ``speedup`` times the MACs (:func:`pruners.pruning.prune_to_speedup`,
    structured methods only; each seed searches its own ratio), fine-tune it with the shared
    ``recovery`` budget and score both models on the same held-out images,
    once per training seed in ``seeds`` (each seed has its own cached baseline).

    ``batch_size`` is the batch of held-out images used for MACs and latency; latency is timed on the first
    seed's models, and ``latency_rounds=None`` skips it (for parallel runs, where timings would be
    meaningless). ``baseline_recipe`` overrides :func:`pruners.zoo.baseline_recipe` for the dense model,
    ``recovery`` overrides :func:`recovery_recipe`, ``recovery_epochs`` its number of epochs.

    ``weights`` picks the dense model (trained here, timm pretrained, or a checkpoint) and the device every
    step runs on; ``timing`` the memory format and autocast of the latency rounds. ``latency_size`` also
    times both models at that input size (when it differs from the workload's), beside the workload figures.
    ``runtimes`` (:data:`pruners.runtimes.RUNTIMES`) times them again in each of those runtimes, at the
    workload's size and at ``latency_size``.
    """
    runtimes = check_runtimes(runtimes)
    spec = get_method(method)
    if speedup is not None:
        if ratio is not None:
            raise ValueError("pass a ratio or a MACs target (speedup), not both")
        speedup = check_target(method, speedup)
    else:
        ratio = spec.default_ratio if ratio is None else ratio
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise ValueError("a case needs at least one seed")
    workload = workload or digits()
    dense_recipe = baseline_recipe or zoo.baseline_recipe(zoo.check_model_name(model_name), workload)
    recovery = recovery or recovery_recipe(dense_recipe)
    timing = timing or TimingOptions()
    if recovery_epochs is not None:
        if recovery_epochs < 1:
            raise ValueError(f"recovery needs at least 1 epoch, got {recovery_epochs}")
        recovery = dataclasses.replace(recovery, epochs=recovery_epochs)
    inputs = workload.test_batch(batch_size).to(weights.device)
    results = [
        _run_seed(
            model_name, method, (ratio, speedup), workload, seed, inputs, dense_recipe, recovery, weights
        )
        for seed in seeds
    ]
    latency = at_size = None
    at_size_error = ""
    in_runtimes: dict[str, tuple[dict[str, RuntimeLatency], dict[str, str]]] = {}
    if latency_rounds is not None:
        first = results[0]
        latency = compare_latency(first.dense, first.pruned, inputs, latency_rounds, options=timing)
        sizes = {"": inputs}
        if latency_size and latency_size != inputs.shape[-1]:
            at_size, at_size_error = latency_at_size(
                first.dense, first.pruned, latency_size, batch_size, latency_rounds, timing
            )
            sizes["at_size_"] = sized_inputs(batch_size, latency_size).to(inputs.device)
        if runtimes:
            in_runtimes = {
                prefix: compare_runtimes(runtimes, first.dense, first.pruned, batch, latency_rounds)
                for prefix, batch in sizes.items()
            }
    case = Case(model_name, method, None if speedup is not None else results[0].record.ratio, speedup)
    level, missing = criterion_level(workload.family, case.id, dense_recipe.key, recovery.key)
    return CaseResult(
        model_name=model_name,
        method=method,
        ratio=results[0].record.ratio,
        tolerance=spec.tolerance,
        seeds=results,
        baseline_recipe=dense_recipe,
        recovery_recipe=recovery,
        inputs=inputs,
        latency=latency,
        latency_at_size=at_size,
        latency_at_size_error=at_size_error,
        data=workload.split,
        unreadable_images=workload.unreadable,
        weights=weights.describe(),
        target_speedup=speedup,
        family=workload.family,
        level=level,
        level_missing=missing,
        runtimes=in_runtimes,
    )
