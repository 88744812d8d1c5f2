"""Stage 5 of a case (:mod:`pruners.case`): dense and pruned latency, alternated, at the workload's size, at
the size people deploy at, and per runtime; and the batches a latency target is timed on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .measure import LatencyStats, compare_latency, device_of
from .result import SeedResult
from .runtimes import RuntimeLatency, compare_runtimes
from .spec import CaseSpec, Timing


def sized_inputs(batch_size: int, img_size: int) -> torch.Tensor:
    """Seeded random ``img_size`` px inputs, for timing at a size the workload does not have."""
    return torch.randn(batch_size, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))


def latency_inputs(inputs: torch.Tensor, timing: Timing) -> torch.Tensor:
    """The batch a latency target is timed on: ``inputs``, or seeded random ones at ``timing.size`` px."""
    return sized_inputs(timing.batch_size, timing.size).to(inputs.device) if timing.size else inputs


def latency_at_size(dense: nn.Module, pruned: nn.Module, timing: Timing) -> tuple[LatencyStats | None, str]:
    """Dense and pruned latency on seeded random ``timing.size`` px inputs (the resolution people deploy
    at), or ``(None, why)`` when the architecture cannot take that size."""
    inputs = sized_inputs(timing.batch_size, timing.size).to(device_of(dense))
    try:
        return compare_latency(dense, pruned, inputs, timing.rounds, options=timing.options), ""
    except (RuntimeError, AssertionError, ValueError) as err:
        return None, f"not timed at {timing.size} px: {type(err).__name__}: {str(err).strip()[:160]}"


@dataclass
class Timings:
    """Stage 5's figures: latency at the workload's size, at the extra size (or why not), per runtime."""

    latency: LatencyStats | None = None
    at_size: LatencyStats | None = None
    at_size_error: str = ""
    runtimes: dict[str, tuple[dict[str, RuntimeLatency], dict[str, str]]] = field(default_factory=dict)


def time_stage(spec: CaseSpec, first: SeedResult, inputs: torch.Tensor) -> Timings:
    """Stage 5: dense and pruned latency of the first seed, alternated (nothing when ``rounds`` is None)."""
    timing = spec.timing
    if timing.rounds is None:
        return Timings()
    out = Timings(compare_latency(first.dense, first.pruned, inputs, timing.rounds, options=timing.options))
    sizes = {"": inputs}
    if timing.size and timing.size != inputs.shape[-1]:
        out.at_size, out.at_size_error = latency_at_size(first.dense, first.pruned, timing)
        sizes["at_size_"] = sized_inputs(timing.batch_size, timing.size).to(inputs.device)
    if timing.runtimes:
        out.runtimes = {
            prefix: compare_runtimes(timing.runtimes, first.dense, first.pruned, batch, timing.rounds)
            for prefix, batch in sizes.items()
        }
    return out
