"""torch.profiler breakdowns of a dense and a pruned model: which ops got faster and which did not.

The gap between the MACs speedup and the measured one lives in the ops that pruning does not shrink
(normalisation, activations, pooling, memory-bound element-wise work, dispatch): the side-by-side table of
self time per op shows where it went. Profiling runs apart from the timed benchmark rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
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


# Module kinds the by-kind breakdown names; a module inside a squeeze-excite block counts as that block.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_squeeze_excite(module: nn.Module) -> bool:
    return "SqueezeExcite" in type(module).__name__ or type(module).__name__ in (
        "SEModule",
        "EffectiveSEModule",
    )


def layer_kind(module: nn.Module) -> str | None:
    """What a layer is for the by-kind breakdown: ``depthwise conv``, ``pointwise conv``, ``conv``,
    ``linear``, ``norm`` (timm's norm-and-activation layers included), ``activation``, ``pool`` or
    ``squeeze-excite`` (the whole block); ``None`` for containers and layers of no kind."""
    if _is_squeeze_excite(module):
        return "squeeze-excite"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise conv"
        return "pointwise conv" if module.kernel_size == (1, 1) else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    for kinds, name in ((_NORMS, "norm"), (_ACTIVATIONS, "activation"), (_POOLS, "pool")):
        if isinstance(module, kinds):
            return name
    return None


@dataclass(frozen=True)
class KindTime:
    """One layer kind over a forward: its time (milliseconds, the layers' own ranges, inclusive) and its
    MACs per image."""

    kind: str
    ms: float
    macs: int


def profile_kinds(
    model: nn.Module, inputs: torch.Tensor, rounds: int = PROFILE_ROUNDS
) -> dict[str, KindTime]:
    """Per layer kind (:func:`layer_kind`), the time one forward of ``model`` spends in its layers (CPU
    time) and their MACs per image, plus ``other`` (what runs outside any named layer: residual adds,
    reshapes, dispatch), so that the kinds sum to the forward."""
    labelled: list[tuple[nn.Module, str]] = []
    skip: set[int] = set()
    for module in model.modules():
        kind = None if id(module) in skip else layer_kind(module)
        if kind is not None:
            labelled.append((module, kind))
            skip.update(id(m) for m in module.modules())
    open_ranges: list[torch.autograd.profiler.record_function] = []

    def enter(module: nn.Module, _inputs: object) -> None:
        open_ranges.append(torch.autograd.profiler.record_function(f"kind::{kind_of[id(module)]}"))
        open_ranges[-1].__enter__()

    def leave(module: nn.Module, _inputs: object, _output: object) -> None:
        open_ranges.pop().__exit__(None, None, None)

    kind_of = {id(m): k for m, k in labelled}
    device = device_of(model)
    inputs = inputs.to(device)
    model.eval()
    layer_macs = tp.utils.count_ops_and_params(model, inputs[:1], layer_wise=True)[2]
    counted: dict[str, int] = {}
    for module, kind in labelled:
        counted[kind] = counted.get(kind, 0) + int(layer_macs.get(module, 0))
    handles = [m.register_forward_pre_hook(enter) for m, _ in labelled]
    handles += [m.register_forward_hook(leave) for m, _ in labelled]
    try:
        with torch.inference_mode():
            model(inputs)
            synchronize(device)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(rounds):
                    with torch.autograd.profiler.record_function("kind::forward"):
                        model(inputs)
                synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    totals = {e.key.removeprefix("kind::"): e.cpu_time_total / 1e3 / rounds for e in prof.key_averages()
              if e.key.startswith("kind::")}  # fmt: skip
    forward = totals.pop("forward")
    kinds = {k: KindTime(k, ms, counted.get(k, 0)) for k, ms in sorted(totals.items(), key=lambda kv: -kv[1])}
    kinds["other"] = KindTime("other", max(0.0, forward - sum(totals.values())), 0)
    return kinds


def compare_kinds(dense: dict[str, KindTime], pruned: dict[str, KindTime], macs_speedup: float) -> str:
    """Markdown: per layer kind, dense and pruned time per forward, its speedup, its MACs speedup and its
    excess over the model's MACs speedup (the pruned time beyond ``dense / macs_speedup``): the kinds whose
    time MACs do not explain (depthwise convolutions, squeeze-excite, activations, memory-bound layers)."""
    rows = []
    for kind in sorted(set(dense) | set(pruned), key=lambda k: -(dense[k].ms if k in dense else 0.0)):
        d, p = dense.get(kind, KindTime(kind, 0.0, 0)), pruned.get(kind, KindTime(kind, 0.0, 0))
        macs = f"{d.macs / p.macs:.2f}" if p.macs else ("gone" if d.macs else "-")
        rows.append(
            (
                kind,
                f"{d.ms:.3f}",
                f"{p.ms:.3f}",
                f"{d.ms / p.ms:.2f}" if p.ms > 0 else "gone",
                f"{d.macs / 1e6:.2f}",
                f"{p.macs / 1e6:.2f}",
                macs,
                f"{p.ms - d.ms / macs_speedup:+.3f}",
            )
        )
    header = ("layer kind", "dense ms", "pruned ms", "speedup", "dense MMACs", "pruned MMACs", "MACs x",
              f"excess over MACs {macs_speedup:.2f}x (ms)")  # fmt: skip
    return markdown_table(header, rows) + "\n"


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
    chrome://tracing or Perfetto) and ``profile.md`` under ``out_dir``: the ops side by side and, on the
    CPU, the layer kinds (:func:`compare_kinds`). ``macs_speedup`` defaults to the two
    models' MACs ratio on ``inputs``."""
    if macs_speedup is None:
        macs_speedup = count_macs_params(dense, inputs)[0] / count_macs_params(pruned, inputs)[0]
    dense_ops = profile_model(dense, inputs, out_dir / "dense.trace.json")
    pruned_ops = profile_model(pruned, inputs, out_dir / "pruned.trace.json")
    measured = sum(op.self_ms for op in dense_ops.values()) / sum(op.self_ms for op in pruned_ops.values())
    unit = "self CUDA time" if device_of(dense).type == "cuda" else "self CPU time"
    text = (
        f"# Profile{': ' + title if title else ''}\n\n"
        f"torch.profiler, {PROFILE_ROUNDS} forwards of a batch of {len(inputs)} at {inputs.shape[-1]} px "
        "after 2 warm-up forwards, "
        f"{torch.get_num_threads()} threads; {unit} per forward, top {TOP_OPS} ops of the dense model. "
        f"MACs {macs_speedup:.2f}x fewer, profiled time {measured:.2f}x less.\n\n"
        + compare_ops(dense_ops, pruned_ops, macs_speedup)
    )
    if device_of(dense).type == "cpu":
        text += (
            "\n## By layer kind\n\nCPU time per forward inside each kind of layer (a squeeze-excite block "
            "whole), its MACs per image, and its excess over the model's MACs speedup: where the latency "
            "that MACs do not explain sits.\n\n"
            + compare_kinds(profile_kinds(dense, inputs), profile_kinds(pruned, inputs), macs_speedup)
        )
    path = out_dir / "profile.md"
    write_atomic(path, lambda f: f.write(text.encode()))
    return PairProfile(path, dense_ops, pruned_ops)
