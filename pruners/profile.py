"""torch.profiler breakdowns of a dense and a pruned model: which ops got faster and which did not.

The gap between the MACs speedup and the measured one lives in the ops that pruning does not shrink
(normalisation, activations, pooling, memory-bound element-wise work, dispatch): the side-by-side table of
self time per op shows where it went. Profiling runs apart from the timed benchmark rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from .files import write_atomic
from .measure import count_macs_params, device_of, synchronize
from .tables import markdown_table

PROFILE_ROUNDS = 10
TOP_OPS = 15


@dataclass(frozen=True)
class OpTime:
    """One op's self time summed over the profiled rounds (CPU, and the GPU's on CUDA), in milliseconds."""

    name: str
    calls: int
    self_ms: float


def profile_model(
    model: nn.Module, inputs: torch.Tensor, trace: Path | None = None, rounds: int = PROFILE_ROUNDS
) -> dict[str, OpTime]:
    """Profile ``rounds`` forwards of ``model`` (after two warm-up forwards); ``{op: OpTime}`` by self CPU
    time, or self CUDA time when the model is on a GPU. ``trace`` also writes a Chrome trace there."""
    device = device_of(model)
    inputs = inputs.to(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model.eval()
    with torch.inference_mode():
        for _ in range(2):
            model(inputs)
        synchronize(device)
        with profile(activities=activities) as prof:
            for _ in range(rounds):
                model(inputs)
            synchronize(device)
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    gpu = device.type == "cuda"
    times = {}
    for event in prof.key_averages():
        self_us = event.self_device_time_total if gpu else event.self_cpu_time_total
        if self_us > 0:
            times[event.key] = OpTime(event.key, event.count // rounds, self_us / 1e3 / rounds)
    return times


def compare_ops(
    dense: dict[str, OpTime], pruned: dict[str, OpTime], macs_speedup: float, top: int = TOP_OPS
) -> str:
    """Markdown: the ``top`` ops by dense self time, dense vs pruned per forward, each op's speedup, and its
    excess: the pruned time beyond ``dense / macs_speedup``, what the op would take if it shrank as the
    MACs did. The excesses sum to the gap between the MACs speedup and the measured one; a row sums the
    other ops and a last row the totals."""
    total_dense = sum(op.self_ms for op in dense.values())
    total_pruned = sum(op.self_ms for op in pruned.values())
    gap = total_pruned - total_dense / macs_speedup
    names = sorted(set(dense) | set(pruned), key=lambda n: -(dense[n].self_ms if n in dense else 0.0))
    lines = []

    def line(name: str, d: float, p: float, calls: str) -> tuple[str, ...]:
        speedup = f"{d / p:.2f}" if p > 0 else "gone"
        excess = p - d / macs_speedup
        share = f"{100 * excess / gap:.0f} %" if gap > 0 else ""
        return (name, calls, f"{d:.3f}", f"{p:.3f}", speedup, f"{excess:+.3f}", share)

    for name in names[:top]:
        d = dense[name].self_ms if name in dense else 0.0
        p = pruned[name].self_ms if name in pruned else 0.0
        calls = str(dense[name].calls if name in dense else pruned[name].calls)
        lines.append(line(f"`{name}`", d, p, calls))
    rest = names[top:]
    if rest:
        d = sum(dense[n].self_ms for n in rest if n in dense)
        p = sum(pruned[n].self_ms for n in rest if n in pruned)
        lines.append(line(f"{len(rest)} other ops", d, p, ""))
    lines.append(line("**total**", total_dense, total_pruned, ""))
    header = (
        "op", "calls", "dense ms", "pruned ms", "speedup", f"excess over MACs {macs_speedup:.2f}x (ms)",
        "share of the gap",
    )  # fmt: skip
    return markdown_table(header, lines) + "\n"


@dataclass(frozen=True)
class PairProfile:
    """What :func:`profile_pair` wrote (``markdown``, beside the two traces) and each model's ops."""

    markdown: Path
    dense: dict[str, OpTime]
    pruned: dict[str, OpTime]

    @property
    def dense_ms(self) -> float:
        return sum(op.self_ms for op in self.dense.values())

    @property
    def pruned_ms(self) -> float:
        return sum(op.self_ms for op in self.pruned.values())


def profile_pair(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: torch.Tensor,
    out_dir: Path,
    macs_speedup: float | None = None,
    title: str = "",
) -> PairProfile:
    """Profile both models on ``inputs``; write ``dense.trace.json``, ``pruned.trace.json`` (open them in
    chrome://tracing or Perfetto) and ``profile.md`` under ``out_dir``. ``macs_speedup`` defaults to the two
    models' MACs ratio on ``inputs``."""
    if macs_speedup is None:
        macs_speedup = count_macs_params(dense, inputs)[0] / count_macs_params(pruned, inputs)[0]
    dense_ops = profile_model(dense, inputs, out_dir / "dense.trace.json")
    pruned_ops = profile_model(pruned, inputs, out_dir / "pruned.trace.json")
    measured = sum(op.self_ms for op in dense_ops.values()) / sum(op.self_ms for op in pruned_ops.values())
    unit = "self CUDA time" if device_of(dense).type == "cuda" else "self CPU time"
    text = (
        f"# Profile{': ' + title if title else ''}\n\n"
        f"torch.profiler, {PROFILE_ROUNDS} forwards of a batch of {len(inputs)} after 2 warm-up forwards, "
        f"{torch.get_num_threads()} threads; {unit} per forward, top {TOP_OPS} ops of the dense model. "
        f"MACs {macs_speedup:.2f}x fewer, profiled time {measured:.2f}x less.\n\n"
        + compare_ops(dense_ops, pruned_ops, macs_speedup)
    )
    path = out_dir / "profile.md"
    write_atomic(path, lambda f: f.write(text.encode()))
    return PairProfile(path, dense_ops, pruned_ops)
