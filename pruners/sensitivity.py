"""Layer sensitivity: prune one dependency group at a time at several ratios, re-estimate BatchNorm
statistics (no training), and watch held-out top-1 against the MACs that group removes.

Li et al., 2017, "Pruning Filters for Efficient ConvNets" (Fig. 2), and Distiller's sensitivity analysis:
it tells where MACs are cheap to remove and where they are not. Every point is paired against the dense
model on the same held-out images, so a drop comes with its standard error. The groups are the ones
Torch-Pruning's dependency graph yields for the method (the root layer names them); global rankings are
scanned per group at the ratio, like the others.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from .case import CALIB_BATCH_SIZE, calibration_batches, spec_baseline
from .files import write_atomic
from .gate import PairedDrop
from .measure import correct, count_macs_params
from .pruning import method_data_for, prune_once
from .registry import MethodData, get_method
from .spec import CaseSpec
from .structured import only_group
from .tables import markdown_table
from .train import recalibrate_batchnorm

DEFAULT_RATIOS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class SensitivityPoint:
    """One group pruned alone at ``ratio``: the MACs it removed (``share``: in % of the dense model's), the
    recalibrated top-1 and its paired drop from the dense model (points, ± ``se``)."""

    group: str
    ratio: float
    macs_removed: int
    top1: float
    drop: float
    se: float

    share: float

    @property
    def price(self) -> float:
        """Top-1 points lost per 1 % of the dense MACs removed: what this group's MACs cost."""
        return self.drop / self.share


@dataclass(frozen=True)
class Sensitivity:
    """A scan of ``method`` on ``model``: the dense top-1 and MACs, one point per group and ratio, and the
    ``(group, ratio, why)`` of those that removed nothing (channel rounding keeps a narrow layer whole)."""

    model: str
    method: str
    workload: str
    dense_top1: float
    macs_dense: int
    points: tuple[SensitivityPoint, ...]
    skipped: tuple[tuple[str, float, str], ...]
    seconds: float

    def costliest(self, n: int = 3) -> list[str]:
        """The ``n`` groups whose MACs are dearest: the largest mean drop per MAC removed over the ratios."""
        return self._ranked()[:n]

    def cheapest(self, n: int = 3) -> list[str]:
        """The ``n`` groups whose MACs cost the least top-1 per MAC removed."""
        return self._ranked()[::-1][:n]

    def _ranked(self) -> list[str]:
        price: dict[str, list[float]] = {}
        for p in self.points:
            price.setdefault(p.group, []).append(p.price)
        return sorted(price, key=lambda g: (-sum(price[g]) / len(price[g]), g))

    def summary(self) -> str:
        """The line that names the dearest and the cheapest groups."""
        return (
            f"{self.model} / {self.method}: the largest drop per MAC removed is in "
            f"{', '.join(self.costliest())}; the smallest in {', '.join(self.cheapest())}"
        )

    def markdown(self) -> str:
        header = (
            "group",
            "ratio",
            "MACs removed",
            "% of dense MACs",
            "top-1",
            "drop ± SE",
            "drop per % MACs",
        )
        rows = [
            (
                f"`{p.group}`",
                f"{p.ratio:g}",
                f"{p.macs_removed:,}",
                f"{p.share:.1f}",
                f"{p.top1:.2f}",
                f"{p.drop:+.2f} ± {p.se:.2f}",
                f"{p.price:.2f}",
            )
            for p in self.points
        ]
        skipped = [f"- `{g}` at {r:g}: {why}" for g, r, why in self.skipped]
        return (
            "\n".join(
                [
                    f"# Layer sensitivity: {self.model} / {self.method} on {self.workload}",
                    "",
                    f"Dense top-1 {self.dense_top1:.2f} %, {self.macs_dense:,} MACs. Each row prunes one "
                    "dependency group alone, re-estimates BatchNorm statistics and scores the held-out "
                    f"images; the drop is paired against the dense model. {len(self.points)} points in "
                    f"{self.seconds:.0f} s (loading or training the baseline not counted).",
                    "",
                    self.summary() + ".",
                    "",
                    markdown_table(header, rows),
                    *(["", "Removed nothing (left out):", "", *skipped] if skipped else []),
                ]
            )
            + "\n"
        )

    def plot(self) -> bytes:
        """PNG: drop against % of the dense MACs removed, one marker per group and ratio, coloured by group,
        each group named at its largest ratio."""
        fig = Figure(figsize=(9, 5.5))
        ax = fig.add_subplot()
        groups = list(dict.fromkeys(p.group for p in self.points))
        colours = colormaps["tab20"].resampled(max(1, len(groups)))
        for i, group in enumerate(groups):
            mine = sorted((p for p in self.points if p.group == group), key=lambda p: p.ratio)
            xs = [p.share for p in mine]
            ax.errorbar(xs, [p.drop for p in mine], [p.se for p in mine], fmt="o-", ms=4, lw=0.8,
                        color=colours(i), capsize=2)  # fmt: skip
            ax.annotate(group, (xs[-1], mine[-1].drop), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("MACs removed (% of dense)")
        ax.set_ylabel("top-1 drop from dense (points, BN recalibrated)")
        ax.set_title(
            f"{self.model} / {self.method}: one group pruned at a time ({self.workload})", fontsize=9
        )
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        return buffer.getvalue()

    def write(self, out_dir: Path) -> list[Path]:
        """``sensitivity_MODEL_METHOD.md`` and ``.png`` into ``out_dir``; the paths written."""
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"sensitivity_{self.model}_{self.method}"
        paths = [stem.with_suffix(".md"), stem.with_suffix(".png")]
        write_atomic(paths[0], lambda f: f.write(self.markdown().encode()))
        write_atomic(paths[1], lambda f: f.write(self.plot()))
        return paths


def layer_groups(dense: nn.Module, method: str, inputs: torch.Tensor, data: MethodData) -> list[str]:
    """The root layer of every dependency group ``method`` prunes on ``dense``, in graph order."""
    _, record = prune_once(copy.deepcopy(dense), get_method(method), 0.5, inputs, data, check=False)
    return list(record.decision.groups)


def scan(
    dense: nn.Module,
    method: str,
    inputs: torch.Tensor,
    data: MethodData,
    score: Callable[[nn.Module], tuple[float, float, float]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
) -> tuple[list[SensitivityPoint], list[tuple[str, float, str]]]:
    """Every group of :func:`layer_groups` pruned alone at each ratio and scored by ``score(model)`` (the
    BatchNorm-recalibrated model's ``(top1, drop, se)``); the points and the ``(group, ratio, why)`` left
    out because they removed nothing."""
    spec = get_method(method)
    macs, _ = count_macs_params(dense, inputs)
    points, skipped = [], []
    for group in layer_groups(dense, method, inputs, data):
        for ratio in ratios:
            with only_group(group):
                pruned, record = prune_once(copy.deepcopy(dense), spec, ratio, inputs, data, check=False)
            if record.macs_after >= macs:
                skipped.append((group, ratio, "channel rounding leaves the group whole"))
                continue
            top1, drop, se = score(pruned)
            removed = macs - record.macs_after
            points.append(SensitivityPoint(group, ratio, removed, top1, drop, se, 100.0 * removed / macs))
    return points, skipped


def layer_sensitivity(spec: CaseSpec, ratios: Sequence[float] = DEFAULT_RATIOS) -> Sensitivity:
    """The layer sensitivity of ``spec``'s method on the dense baseline of ``spec``'s model and first seed
    (cached, trained, pretrained or a checkpoint, as :class:`~pruners.CaseSpec` says), on its workload."""
    method = get_method(spec.method)
    if method.kind != "structured" or method.unit != "channels":
        raise ValueError(f"`method`: sensitivity scans channel groups; {spec.method!r} prunes {method.unit}")
    if "train" in method.needs:
        raise ValueError(f"`method`: {spec.method!r} trains while it prunes; scan its criterion without it")
    seed = spec.seeds[0]
    dense = spec_baseline(spec, seed).model.eval()
    start = time.perf_counter()
    test = spec.data.loader("test", batch_size=256)
    dense_ok = correct(dense, test)
    inputs = spec.data.test_batch(spec.timing.batch_size).to(spec.weights.device)
    calib = calibration_batches(spec.data, CALIB_BATCH_SIZE, seed, spec.weights.device)
    data = method_data_for(method, dense, calib, None)

    def score(pruned: nn.Module) -> tuple[float, float, float]:
        recalibrated, _ = recalibrate_batchnorm(pruned, spec.data, seed=seed)
        drop = PairedDrop.from_correct(dense_ok, correct(recalibrated, test))
        return drop.pruned_top1, drop.drop, drop.se

    torch.manual_seed(seed)
    points, skipped = scan(dense, spec.method, inputs, data, score, ratios)
    macs, _ = count_macs_params(dense, inputs)
    return Sensitivity(
        spec.model,
        spec.method,
        spec.data.name,
        100.0 * dense_ok.float().mean().item(),
        macs,
        tuple(points),
        tuple(skipped),
        time.perf_counter() - start,
    )
