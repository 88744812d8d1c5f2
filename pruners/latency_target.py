"""Pruning to a measured latency target: the MACs target at which dense ÷ pruned latency, timed in one
runtime on one input batch, lands within :data:`LATENCY_BAND` of the target.

MACs are what a pruning step controls; latency is what a user deploys. The search treats the MACs search
(:func:`pruners.search.search_macs`) as its inner step and asks of it, probe by probe, the MACs target the
measured latency calls for: the first probe prunes to the latency target in MACs, each next one corrects by
the measured ÷ MACs ratio seen so far (interpolated in log space between the two MACs points nearest the
target, each point's timings pooled). A probe that lands in the band is timed again from a fresh set-up,
and a third time when the two disagree: a landing is kept only when two of its timings, the last among
them, lie in the band. Timing is dense and pruned in alternation, round by round
(:func:`pruners.measure.alternated`), and the speed-up is the median of the per-round ratios, so drift on a
shared CPU hits both alike; the spread of those ratios is recorded with the band.

HALP (Shen et al., NeurIPS 2022, "Structural Pruning via Latency-Saliency Knapsack") and AMC (He et al.,
ECCV 2018) prune for measured latency in the same spirit, with a lookup table and a search respectively.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .measure import alternated, device_of
from .pruning import PruneRecord, TargetUnreachableError, method_data_for
from .registry import CalibBatches, SparseTrain, get_method
from .runtimes import set_up
from .search import SEARCH_MULTIPLES, check_target, search_macs
from .tables import markdown_table

# A latency target is met when the measured dense ÷ pruned latency lies within this fraction of it.
LATENCY_BAND = 0.05
# The most MACs targets one latency search prunes to before it gives up.
LATENCY_PROBES = 8
# Timed rounds per probe (each round times dense, then pruned).
LATENCY_ROUNDS = 30
# Channel multiples a latency search may round to, coarsest first. Finer ones run slower than the dense
# model in ONNX Runtime: mobilenetv3_small_100 at 2x fewer MACs and 224 px measured 1.71x with multiples of
# 8, 1.57x of 4, 0.63x of 2 and 0.41x of 1 (docs/understanding.md, `prunebench multiples`).
LATENCY_MULTIPLES = (8, 4)


@dataclass(frozen=True)
class Timed:
    """One timing of dense against pruned: the ``speedup`` (median over rounds of dense ÷ pruned), its
    ``spread`` (the interquartile range of those ratios over their median) and the median milliseconds."""

    speedup: float
    spread: float
    dense_ms: float
    pruned_ms: float


Meter = Callable[[nn.Module], Timed]


@dataclass(frozen=True)
class LatencyProbe:
    """One probe of a latency search: the MACs target asked for, the MACs speed-up it landed on, and its
    timing."""

    macs_target: float
    macs_speedup: float
    timed: Timed


@dataclass(frozen=True)
class LatencyResult:
    """A latency search that landed: the ``target``, the ``band``, the ``final`` re-measured timing and the
    ``probes`` that led there (they end with the landing's first timing, and its disagreeing re-timing when
    a third timing decided); ``runtime`` and ``size`` (px) say where it was timed."""

    target: float
    band: float
    final: Timed
    probes: tuple[LatencyProbe, ...] = field(default=())
    runtime: str = ""
    size: int | None = None

    @property
    def within(self) -> bool:
        return within_band(self.final.speedup, self.target, self.band)

    def summary(self) -> dict[str, object]:
        """The record's ``target_latency_search``: where and how the target was met, and each probe."""
        return {
            "runtime": self.runtime,
            "size": self.size,
            "band": self.band,
            "measured": round(self.final.speedup, 3),
            "spread": round(self.final.spread, 3),
            "dense_ms": round(self.final.dense_ms, 3),
            "pruned_ms": round(self.final.pruned_ms, 3),
            "probes": [[round(p.macs_speedup, 3), round(p.timed.speedup, 3)] for p in self.probes],
        }


def within_band(speedup: float, target: float, band: float = LATENCY_BAND) -> bool:
    return target * (1 - band) <= speedup <= target * (1 + band)


def timed_ratios(dense_ms: list[float], pruned_ms: list[float]) -> Timed:
    """:class:`Timed` from paired per-round readings."""
    ratios = sorted(d / p for d, p in zip(dense_ms, pruned_ms, strict=True))
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    median = statistics.median(ratios)
    return Timed(median, (q3 - q1) / median, statistics.median(dense_ms), statistics.median(pruned_ms))


class RuntimeMeter:
    """Dense ÷ pruned latency of pruned copies of one dense model in ``runtime``
    (:data:`pruners.runtimes.RUNTIMES`) on ``inputs``: the dense model is set up once, each pruned one
    when it is timed."""

    def __init__(
        self,
        runtime: str,
        dense: nn.Module,
        inputs: torch.Tensor,
        rounds: int = LATENCY_ROUNDS,
        warmup: int = 3,
    ) -> None:
        self.runtime, self.rounds, self.warmup = runtime, rounds, warmup
        self.inputs = inputs.to(device_of(dense))
        self.dense, _ = set_up(runtime, dense.eval(), self.inputs)

    def __call__(self, pruned: nn.Module) -> Timed:
        forward, _ = set_up(self.runtime, pruned.eval(), self.inputs)
        with torch.inference_mode():
            dense_ms, pruned_ms = alternated(
                [self.dense, forward], self.rounds, self.warmup, self.inputs.device
            )
        return timed_ratios(dense_ms, pruned_ms)


def pooled(probes: list[LatencyProbe]) -> list[tuple[float, float]]:
    """``(MACs speed-up, measured speed-up)`` per MACs point the probes landed on: the median of every
    timing there, so a point timed again (a landing re-measured, or a MACs target that rounds onto a point
    already seen) counts once, with its noise averaged."""
    readings: dict[float, list[float]] = {}
    for probe in probes:
        readings.setdefault(round(probe.macs_speedup, 3), []).append(probe.timed.speedup)
    return [(macs, statistics.median(seen)) for macs, seen in readings.items()]


def next_macs_target(probes: list[LatencyProbe], target: float) -> float:
    """The MACs target the next probe asks for, from the :func:`pooled` MACs points. Once points lie on
    both sides of ``target``, it is interpolated in log space between the point below with the most MACs
    removed and the point above with the fewest (their geometric mean when noise has them in the wrong
    order), so it stays inside the tightest bracket of MACs already seen. While every point is below the
    target, the answer lies past the most MACs removed so far: that point's MACs are scaled by how far its
    measured speed-up is from the target (while every point is above, the fewest MACs removed); never an
    extrapolation of two noisy points' slope, and never a step back onto a point one noisy reading made
    look nearest."""
    points = pooled(probes)
    below = [p for p in points if p[1] < target]
    above = [p for p in points if p[1] > target]
    if below and above:
        low, high = max(below), min(above)
        run = math.log(high[0] / low[0])
        if run <= 0:
            return math.sqrt(low[0] * high[0])
        share = math.log(target / low[1]) / math.log(high[1] / low[1])
        return math.exp(math.log(low[0]) + share * run)
    if below:
        macs, measured = max(below)
    elif above:
        macs, measured = min(above)
    else:
        macs, measured = points[-1]
    return macs * target / measured


def prune_to_latency(
    model: nn.Module,
    method: str,
    target: float,
    inputs: torch.Tensor,
    meter: Meter,
    calib: CalibBatches | None = None,
    *,
    sparse_train: SparseTrain | None = None,
    band: float = LATENCY_BAND,
    multiples: tuple[int, ...] = LATENCY_MULTIPLES,
) -> tuple[nn.Module, PruneRecord, LatencyResult]:
    """Prune a copy of ``model`` with the structured ``method`` until ``meter``'s dense ÷ pruned latency lands
    within ``band`` of ``target``, re-measured (module docstring), with channel counts rounded to the
    coarsest of ``multiples`` that lands on each MACs target. Every probe starts from the same random
    state and shares one sparse training. Raises :class:`TargetUnreachableError` naming the measured
    speed-ups when the MACs the target calls for cannot be removed, or no probe of :data:`LATENCY_PROBES`
    lands."""
    spec = get_method(method)
    check_target(method, target, "latency target")
    data = method_data_for(spec, model, calib, sparse_train).for_search()
    rng = torch.get_rng_state()
    probes: list[LatencyProbe] = []
    macs = target
    for _ in range(LATENCY_PROBES):
        torch.set_rng_state(rng)
        try:
            macs_target = check_target(method, max(macs, 1.001))
            pruned, record = search_macs(model, spec, macs_target, inputs, data, multiples)
        except TargetUnreachableError as err:
            raise TargetUnreachableError(
                f"{target:g}x measured latency calls for about {macs:.2f}x fewer MACs ({_seen(probes)}), "
                f"which {method!r} cannot reach: {err}"
            ) from None
        timed = meter(pruned)
        probes.append(LatencyProbe(macs, record.macs_speedup, timed))
        if within_band(timed.speedup, target, band):
            final = meter(pruned)
            if not within_band(final.speedup, target, band):
                probes.append(LatencyProbe(macs, record.macs_speedup, final))
                final = meter(pruned)
            if within_band(final.speedup, target, band):
                return pruned, record, LatencyResult(target, band, final, tuple(probes))
            probes.append(LatencyProbe(macs, record.macs_speedup, final))
        macs = next_macs_target(probes, target)
    raise TargetUnreachableError(
        f"{method!r} did not land within {band:.0%} of {target:g}x measured latency in {LATENCY_PROBES} "
        f"probes ({_seen(probes)})"
    )


def _seen(probes: list[LatencyProbe]) -> str:
    if not probes:
        return "nothing timed yet"
    return "measured " + ", ".join(f"{p.timed.speedup:.2f}x at {p.macs_speedup:.2f}x MACs" for p in probes)


@dataclass(frozen=True)
class MultipleRow:
    """One channel multiple at one MACs target: the ratio found, the MACs speed-up it landed on and the
    measured one (``timed``), or ``why`` the MACs jump over the target at that multiple."""

    multiple: int
    ratio: float | None = None
    macs_speedup: float | None = None
    timed: Timed | None = None
    why: str = ""

    @property
    def per_macs(self) -> float | None:
        """Measured ÷ MACs speed-up: the share of the MACs cut the clock saw."""
        return None if self.timed is None or not self.macs_speedup else self.timed.speedup / self.macs_speedup


def multiples_study(
    model: nn.Module,
    method: str,
    speedup: float,
    inputs: torch.Tensor,
    meter: Meter,
    calib: CalibBatches | None = None,
    multiples: tuple[int, ...] = SEARCH_MULTIPLES,
    *,
    sparse_train: SparseTrain | None = None,
) -> list[MultipleRow]:
    """``model`` pruned with ``method`` to ``speedup`` fewer MACs once per channel multiple of
    ``multiples`` (remaining channel counts rounded to it), each timed by ``meter``: how measured ÷ MACs
    depends on the multiple. Every multiple starts from the same random state."""
    spec = get_method(method)
    check_target(method, speedup)
    data = method_data_for(spec, model, calib, sparse_train).for_search()
    rng = torch.get_rng_state()
    rows = []
    for multiple in multiples:
        torch.set_rng_state(rng)
        try:
            pruned, record = search_macs(model, spec, speedup, inputs, data, multiples=(multiple,))
        except TargetUnreachableError as err:
            rows.append(MultipleRow(multiple, why=str(err)))
            continue
        rows.append(MultipleRow(multiple, record.ratio, record.macs_speedup, meter(pruned)))
    return rows


def multiples_table(rows: list[MultipleRow]) -> str:
    """Markdown: per channel multiple, the ratio, MACs and measured speed-ups, measured ÷ MACs and the
    spread of the per-round ratios."""
    cells = []
    for r in rows:
        if r.timed is None:
            cells.append((str(r.multiple), "-", "-", "-", "-", "-", r.why))
            continue
        cells.append(
            (
                str(r.multiple),
                f"{r.ratio:.3f}",
                f"{r.macs_speedup:.2f}",
                f"{r.timed.speedup:.2f}",
                f"{r.per_macs:.2f}",
                f"{r.timed.spread:.3f}",
                f"{r.timed.dense_ms:.2f} → {r.timed.pruned_ms:.2f} ms",
            )
        )
    header = ("multiple", "ratio", "MACs x", "measured x", "measured ÷ MACs", "spread", "dense → pruned")
    return markdown_table(header, cells) + "\n"
