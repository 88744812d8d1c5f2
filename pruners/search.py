"""Pruning to a MACs target (equal cost): the ratio that makes dense / pruned MACs land within
:data:`SPEEDUP_TOLERANCE` of the target, found by bisection over fresh copies of the dense model."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from .data import Workload
from .pruning import PruneRecord, TargetUnreachableError, check_record, method_data_for, prune_once
from .registry import CalibBatches, MethodData, MethodSpec, SparseTrain, get_method
from .structured import MAX_GROUP_RATIO, ROUND_TO, channel_multiple
from .zoo import create_model

# A MACs target is met when dense MACs / pruned MACs lies within this fraction of it.
SPEEDUP_TOLERANCE = 0.02


# A MACs-target search first steps through this grid of ratios until one removes enough, then bisects
# between it and the grid point before, down to this ratio resolution. Stepping up rather than starting
# at the top matters: near 1, rounding to whole multiples of channels makes MACs rise again.
SEARCH_GRID = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


RATIO_RESOLUTION = 1e-3


# Channel multiples a search tries, coarsest first: the first whose MACs land in the band is used.
SEARCH_MULTIPLES = (ROUND_TO, 4, 2, 1)


def check_speedup(speedup: float, what: str = "MACs target", ratio: str = "dense / pruned MACs") -> float:
    """Return ``speedup`` as a float if it is a ``what`` above 1, else raise ``ValueError``."""
    try:
        value = float(speedup)
    except (TypeError, ValueError):
        raise ValueError(f"a {what} must be a number > 1 ({ratio}), got {speedup!r}") from None
    if not value > 1.0:
        raise ValueError(f"a {what} must be > 1 ({ratio}), got {speedup!r}")
    return value


def check_target(method: str, speedup: float, what: str = "MACs target") -> float:
    """:func:`check_speedup`, and a ``ValueError`` when ``method`` is a mask method: it zeroes weights
    inside dense layers, which a dense kernel runs at the dense cost, so it has no MACs (or latency)
    target."""
    value = check_speedup(speedup, what, "dense / pruned " + ("MACs" if what == "MACs target" else "latency"))
    if get_method(method).kind != "structured":
        raise ValueError(
            f"method {method!r} is a mask method: it zeroes weights in place and has no {what}; "
            "compare it at a ratio (sparsity) with the other mask methods"
        )
    return value


def prune_to_speedup(
    model: nn.Module,
    method: str,
    speedup: float,
    example_inputs: torch.Tensor,
    calib: CalibBatches | None = None,
    *,
    sparse_train: SparseTrain | None = None,
) -> tuple[nn.Module, PruneRecord]:
    """Prune a copy of ``model`` with the structured ``method`` at the ratio that makes dense MACs /
    pruned MACs land within :data:`SPEEDUP_TOLERANCE` of ``speedup``: equal cost, so methods compare on
    quality rather than on how much they remove.

    The ratio is found on a coarse grid (:data:`SEARCH_GRID`), then by bisection, each probe pruning a
    fresh copy with the same random state. Remaining channel counts are rounded to multiples of 8
    (:data:`ROUND_TO`) where that lands in the band, else to the coarsest of :data:`SEARCH_MULTIPLES`
    that does. Gradients and sparse-training epochs are computed on the first probe only and replayed on
    the others (:meth:`pruners.MethodData.for_search`). The record carries ``target_speedup``, the ratio
    found, the channel multiple and the number of probes. Raises :class:`TargetUnreachableError` with the
    reason when the method cannot remove that much, or MACs jump over the band at every multiple, and
    ``ValueError`` for a mask method (:func:`check_target`).
    """
    spec = get_method(method)
    target = check_target(method, speedup)
    return search_macs(model, spec, target, example_inputs, method_data_for(spec, model, calib, sparse_train))


def search_macs(
    model: nn.Module,
    spec: MethodSpec,
    target: float,
    inputs: torch.Tensor,
    data: MethodData,
    multiples: Sequence[int] = SEARCH_MULTIPLES,
) -> tuple[nn.Module, PruneRecord]:
    """The search of :func:`prune_to_speedup` with the method's ``data`` given, over the channel
    ``multiples`` (coarsest first); searches that share one ``data.for_search()`` share its sparse
    training."""
    search = _Search(model, spec, target, inputs, data)
    jumps = []
    for multiple in multiples:
        with channel_multiple(multiple):
            found = search.bisect(multiple)
        if isinstance(found, str):
            jumps.append(found)
            continue
        pruned, record = found
        check_record(record)
        return pruned, record
    raise TargetUnreachableError(
        f"method {spec.name!r} cannot land within {SPEEDUP_TOLERANCE:.0%} of {target:g}x fewer MACs on this "
        f"model: MACs jump over it ({'; '.join(jumps)})"
    )


class _Search:
    """Bisection over the ratio for one MACs target; every probe prunes a fresh copy of the dense model."""

    def __init__(
        self, model: nn.Module, spec: MethodSpec, target: float, inputs: torch.Tensor, data: MethodData
    ) -> None:
        self.model, self.spec, self.target, self.inputs = model, spec, target, inputs
        self.data = data.for_search()
        self.rng = torch.get_rng_state()
        self.band = (target * (1 - SPEEDUP_TOLERANCE), target * (1 + SPEEDUP_TOLERANCE))
        self.probes = 0

    def probe(self, ratio: float) -> tuple[nn.Module, PruneRecord]:
        torch.set_rng_state(self.rng)
        self.probes += 1
        model = copy.deepcopy(self.model)
        return prune_once(model, self.spec, ratio, self.inputs, self.data, check=False)

    def bracket(self) -> tuple[tuple[float, float], tuple[nn.Module, PruneRecord]]:
        """``((ratio, speedup) of the grid point below the band, the first grid probe that reaches it)``;
        :class:`TargetUnreachableError` when no grid ratio removes enough, or the next one fails."""
        below, failure = (0.0, 1.0), ""
        for ratio in SEARCH_GRID:
            try:
                pruned, record = self.probe(ratio)
            except (RuntimeError, ValueError, IndexError, ZeroDivisionError) as err:
                failure = f"; ratio {ratio:g} fails ({type(err).__name__}: {str(err).strip()[:80]})"
                break
            if record.macs_speedup >= self.band[0]:
                return below, (pruned, record)
            below = (ratio, record.macs_speedup)
        raise TargetUnreachableError(
            f"method {self.spec.name!r} cannot reach {self.target:g}x fewer MACs on this model: at ratio "
            f"{below[0]:g} it removes {below[1]:.2f}x{failure}"
        )

    def bisect(self, multiple: int) -> tuple[nn.Module, PruneRecord] | str:
        """The probe that lands in the band, or a sentence saying where MACs jump over it."""
        low_band, high_band = self.band
        below, (pruned, record) = self.bracket()
        above = (record.ratio, record.macs_speedup)
        while not low_band <= record.macs_speedup <= high_band:
            if above[0] - below[0] < RATIO_RESOLUTION:
                return (
                    f"multiples of {multiple}: {below[1]:.3f}x at ratio {below[0]:.3f}, "
                    f"{above[1]:.3f}x at {above[0]:.3f}"
                )
            pruned, record = self.probe((below[0] + above[0]) / 2)
            point = (record.ratio, record.macs_speedup)
            below, above = (point, above) if record.macs_speedup < low_band else (below, point)
        return pruned, dataclasses.replace(
            record, target_speedup=self.target, probes=self.probes, channel_multiple=multiple
        )


_MOST_REMOVED: dict[tuple[str, str], float] = {}


def most_removed(model_name: str, workload: Workload, inputs: torch.Tensor) -> float:
    """The largest MACs speedup any channel method can reach on ``model_name``, known before any training:
    every group keeps at least ``1 - MAX_GROUP_RATIO`` of its channels (global rankings are capped there,
    layer-wise ones search ratios up to :data:`SEARCH_GRID`'s last), so no method removes more than
    ``random`` at that ratio on an untrained copy. Measured once per model and workload, with the global
    random state left as it was."""
    key = (model_name, workload.name)
    if key not in _MOST_REMOVED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(model_name, workload).to(inputs.device)
            ratio = min(SEARCH_GRID[-1], MAX_GROUP_RATIO)
            with channel_multiple(min(SEARCH_MULTIPLES)):
                _, record = prune_once(model, get_method("random"), ratio, inputs, MethodData(), check=False)
        _MOST_REMOVED[key] = record.macs_speedup
    return _MOST_REMOVED[key]


def check_reachable(
    model_name: str, method: str, speedup: float, workload: Workload, inputs: torch.Tensor
) -> None:
    """:class:`TargetUnreachableError` before any training when no channel method can remove ``speedup``
    times the MACs of ``model_name`` (:func:`most_removed`); methods that prune heads are not judged here."""
    if get_method(method).unit != "channels":
        return
    most = most_removed(model_name, workload, inputs)
    if most < speedup * (1 - SPEEDUP_TOLERANCE):
        raise TargetUnreachableError(
            f"method {method!r} cannot reach {speedup:g}x fewer MACs on {model_name}: no channel method can "
            f"remove more than {most:.2f}x (every group keeps at least {1 - MAX_GROUP_RATIO:.0%} of its "
            "channels), whatever the weights; nothing was trained"
        )
