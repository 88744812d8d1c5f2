"""What a case measured: :class:`SeedResult` per training seed and :class:`CaseResult` over its seeds, with
the verdicts of the gates (:mod:`pruners.gate`) and the flat figures that become its record."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from .decisions import weights_fingerprint
from .gate import BandVerdict, PairedDrop, Verdict, band, encode_correct, judge
from .gates import GATES
from .latency_target import LatencyResult
from .levels import CriterionLevel
from .matrix import Case
from .measure import LatencyStats, device_of
from .pruning import PruneRecord
from .record import SCHEMA, CaseRecord
from .runtimes import RuntimeLatency
from .train import RECALIBRATION_BATCH_SIZE, Recipe


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
    scratch: PairedDrop | None = None
    scratch_seconds: float = 0.0
    latency_search: LatencyResult | None = None

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
            "one_shot_top1": round(self.pruned_top1_before_recovery, 2),
            "recalibrated_top1": round(self.pruned_top1_recalibrated, 2),
            "recovered_top1": round(self.paired.pruned_top1, 2),
            "top1_drop": round(self.paired.drop, 2),
            "top1_drop_se": round(self.paired.se, 3),
            "top1_drop_ci95": [round(low, 2), round(high, 2)],
            "mcnemar_p": round(self.paired.mcnemar_p, 4),
            "prune_seconds": round(self.prune_seconds, 1),
            "recovery_seconds": round(self.recovery_seconds, 1),
            "baseline_train_seconds": round(self.baseline_train_seconds, 1),
            "control_train_seconds": round(self.control_train_seconds, 1),
            **(
                {
                    "scratch_top1": round(self.scratch.pruned_top1, 2),
                    "scratch_gap": round(self.scratch.drop, 2),
                    "scratch_gap_se": round(self.scratch.se, 3),
                    "scratch_train_seconds": round(self.scratch_seconds, 1),
                }
                if self.scratch is not None
                else {}
            ),
            **({"latency_search": self.latency_search.summary()} if self.latency_search else {}),
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
    tolerance_source: str = ""
    data: str = ""
    unreadable_images: int = 0
    runtimes: dict[str, tuple[dict[str, RuntimeLatency], dict[str, str]]] = field(default_factory=dict)
    weights: str = "trained here"
    target_speedup: float | None = None
    target_latency: float | None = None
    family: str = "digits"
    level: CriterionLevel | None = None
    level_missing: str = ""
    forgetting: dict[str, object] = field(default_factory=dict)
    scratch: bool = False

    @property
    def case(self) -> Case:
        """The bench case this result belongs to (its cost is the latency or MACs target, else the
        ratio)."""
        ratio = None if self.target_speedup is not None or self.target_latency is not None else self.ratio
        return Case(self.model_name, self.method, ratio, self.target_speedup, self.target_latency)

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
    def scratch_verdict(self) -> Verdict | None:
        """The recovered model's lead over the scratch control (:mod:`pruners.scratch`) over the seeds, or
        ``None`` where it did not run."""
        pairs = [s.scratch for s in self.seeds if s.scratch is not None]
        return judge(pairs, 0.0) if pairs else None

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

    def case_record(self) -> CaseRecord:
        """The case's :class:`pruners.CaseRecord`, built once (``to_extra_info`` gives back
        :meth:`summary`)."""
        return self._record

    @cached_property
    def _record(self) -> CaseRecord:
        return CaseRecord.from_extra_info(self.summary())

    def summary(self) -> dict[str, object]:
        """Flat figures for pytest-benchmark's ``extra_info`` (:class:`pruners.CaseRecord`, schema
        :data:`pruners.record.SCHEMA`); ``per_seed`` holds each seed's."""
        info: dict[str, object] = {
            "schema": SCHEMA,
            "model": self.model_name,
            "method": self.method,
            "kind": self.record.kind,
            "ratio": self.ratio,
            "seeds": [s.seed for s in self.seeds],
            "family": self.family,
            "dense_top1": round(self.dense_top1, 2),
            "dense_control_top1": round(self.control_top1, 2),
            "gate_reference": "dense control: the baseline fine-tuned with the same recovery recipe",
            "baseline_epoch_top1": list(self.seeds[0].baseline_epoch_top1),
            "one_shot_top1": round(statistics.fmean(s.pruned_top1_before_recovery for s in self.seeds), 2),
            "recalibrated_top1": round(statistics.fmean(s.pruned_top1_recalibrated for s in self.seeds), 2),
            "recalibration": self.recalibration,
            "recovered_top1": round(self.pruned_top1, 2),
            "macs_dense": self.record.macs_before,
            "macs_pruned": self.record.macs_after,
            "params_dense": self.record.params_before,
            "params_pruned": self.record.params_after,
            "macs_speedup": round(self.record.macs_speedup, 3),
            "channel_ratio": round(self.record.channel_ratio, 3),
            "sparsity": round(self.record.sparsity, 3),
            "head_ratio": round(self.record.head_ratio, 3),
            "target_speedup": self.target_speedup,
            "target_latency": self.target_latency,
            "target_latency_search": self.seeds[0].latency_search.summary()
            if self.seeds[0].latency_search
            else {},
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
        for gate in GATES:
            info.update(gate.fields(self))
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
                **self.forgetting,
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
