"""Measurements: held-out top-1, MACs / params (Torch-Pruning's counter) and interleaved latency."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader


def device_of(model: nn.Module) -> torch.device:
    """The device that holds ``model``'s parameters."""
    return next(model.parameters()).device


@torch.inference_mode()
def correct(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    """Per-image top-1 correctness of ``model`` on ``loader`` (run on the model's device), as a boolean
    vector in loader order, on the CPU."""
    model.eval()
    device = device_of(model)
    return torch.cat([model(images.to(device)).argmax(dim=1).cpu() == labels for images, labels in loader])


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` (CUDA when available) as a device; asking for CUDA
    without it is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported: use cpu, cuda, cuda:N or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a host clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class TimingOptions:
    """How models are timed: ``channels_last`` memory format and ``amp`` autocast (bfloat16 on the CPU,
    float16 on CUDA), both off by default and recorded beside the figures."""

    channels_last: bool = False
    amp: bool = False

    def prepare(self, model: nn.Module, inputs: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        """``model`` and ``inputs`` in the memory format asked for (the model is converted in place)."""
        if self.channels_last and inputs.dim() == 4:
            return model.to(memory_format=torch.channels_last), inputs.contiguous(
                memory_format=torch.channels_last
            )
        return model, inputs

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast for ``device`` when ``amp`` is on, else a no-op context."""
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return torch.autocast(device.type, dtype=dtype)


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
    img_size: int = 0
    device: str = "cpu"
    channels_last: bool = False
    amp: bool = False

    @property
    def speedup(self) -> float:
        """Median dense latency / median pruned latency."""
        return self.dense_ms / self.pruned_ms

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "speedup": self.speedup}


def _p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1]


def alternated(
    forwards: Sequence[Callable[[], object]], rounds: int, warmup: int, device: torch.device
) -> list[list[float]]:
    """Milliseconds of each of ``forwards`` per round, run in turn round by round after ``warmup`` untimed
    rounds, so drift hits them alike; on a GPU each reading is taken after ``torch.cuda.synchronize``."""
    for _ in range(warmup):
        for forward in forwards:
            forward()
    samples: list[list[float]] = [[] for _ in forwards]
    for _ in range(rounds):
        for forward, times in zip(forwards, samples, strict=True):
            synchronize(device)
            start = time.perf_counter()
            forward()
            synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
    return samples


@torch.inference_mode()
def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: torch.Tensor,
    rounds: int = 20,
    warmup: int = 3,
    options: TimingOptions = TimingOptions(),
) -> LatencyStats:
    """Time ``dense`` and ``pruned`` on ``inputs`` round by round in alternation, so drift hits both alike.

    The models run where their parameters are; on a GPU every reading is taken after
    ``torch.cuda.synchronize``, so it covers the kernels and not just their launch. ``options`` sets the
    memory format and autocast (the models are converted in place).
    """
    if rounds < 2:
        raise ValueError(f"latency needs at least 2 rounds, got {rounds}")
    device = device_of(dense)
    dense, timed = options.prepare(dense.eval(), inputs.to(device))
    pruned, _ = options.prepare(pruned.eval(), timed)
    with options.autocast(device):
        dense_ms, pruned_ms = alternated(
            [lambda: dense(timed), lambda: pruned(timed)], rounds, warmup, device
        )
    return LatencyStats(
        dense_ms=statistics.median(dense_ms),
        pruned_ms=statistics.median(pruned_ms),
        dense_p90_ms=_p90(dense_ms),
        pruned_p90_ms=_p90(pruned_ms),
        rounds=rounds,
        batch_size=len(inputs),
        threads=torch.get_num_threads(),
        img_size=inputs.shape[-1],
        device=str(device),
        channels_last=options.channels_last,
        amp=options.amp,
    )


def timed_forward(
    model: nn.Module, inputs: torch.Tensor, options: TimingOptions | None = None
) -> Callable[[], None]:
    """A no-argument forward of ``model`` on ``inputs`` for a benchmark timer: in inference mode, with
    ``options``' memory format and autocast, and synchronised on a GPU so the timer covers the kernels."""
    options = options or TimingOptions()
    device = device_of(model)
    model, inputs = options.prepare(model.eval(), inputs.to(device))

    def forward() -> None:
        with torch.inference_mode(), options.autocast(device):
            model(inputs)
        synchronize(device)

    return forward
