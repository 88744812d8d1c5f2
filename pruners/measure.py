"""Measurements: held-out top-1, MACs / params (Torch-Pruning's counter) and interleaved latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader


@torch.inference_mode()
def correct(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    """Per-image top-1 correctness of ``model`` on ``loader``, as a boolean vector in loader order."""
    model.eval()
    return torch.cat([model(images).argmax(dim=1) == labels for images, labels in loader])


def top1(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent."""
    return 100.0 * correct(model, loader).float().mean().item()


@torch.no_grad()
def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """``(MACs, params)`` of one forward pass on ``example_inputs``."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


@dataclass(frozen=True)
class LatencyStats:
    """Forward latency of the dense and pruned model, timed in alternation in one process (milliseconds)."""

    dense_ms: float
    pruned_ms: float
    dense_p90_ms: float
    pruned_p90_ms: float
    rounds: int
    batch_size: int
    threads: int

    @property
    def speedup(self) -> float:
        """Median dense latency / median pruned latency."""
        return self.dense_ms / self.pruned_ms

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "speedup": self.speedup}


def _p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


@torch.inference_mode()
def compare_latency(
    dense: nn.Module, pruned: nn.Module, inputs: torch.Tensor, rounds: int = 20, warmup: int = 3
) -> LatencyStats:
    """Time ``dense`` and ``pruned`` on ``inputs`` round by round in alternation, so drift hits both alike."""
    if rounds < 2:
        raise ValueError(f"latency needs at least 2 rounds, got {rounds}")
    dense.eval()
    pruned.eval()
    for _ in range(warmup):
        dense(inputs)
        pruned(inputs)
    samples: dict[nn.Module, list[float]] = {dense: [], pruned: []}
    for _ in range(rounds):
        for model, times in samples.items():
            start = time.perf_counter()
            model(inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return LatencyStats(
        dense_ms=statistics.median(samples[dense]),
        pruned_ms=statistics.median(samples[pruned]),
        dense_p90_ms=_p90(samples[dense]),
        pruned_p90_ms=_p90(samples[pruned]),
        rounds=rounds,
        batch_size=len(inputs),
        threads=torch.get_num_threads(),
    )
