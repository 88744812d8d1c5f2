"""Unstructured (mask) pruning: weights are zeroed, shapes are kept.

A criterion scores every weight; :func:`mask_lowest` zeroes the lowest-scoring fraction, across the network,
per layer or per output row, and :func:`mask_n_of_m` the lowest ``n`` of every ``m``. The mask stays on
the layer as a ``weight_mask`` buffer and a forward pre-hook re-zeroes those weights before every forward,
so a fine-tune cannot revive them; :func:`make_permanent` drops the mask and hook, leaving a plain layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .adapters import prunable_layers
from .registry import CalibBatches, MethodData, register_method

MASK = "weight_mask"
Scope = Literal["network", "layer", "row"]


def _zero_masked(module: nn.Module, args: tuple) -> None:
    with torch.no_grad():
        module.weight.mul_(getattr(module, MASK))


def _attach(module: nn.Module, keep: torch.Tensor) -> None:
    module.register_buffer(MASK, keep.view_as(module.weight).to(module.weight.dtype))
    module.register_forward_pre_hook(_zero_masked)
    _zero_masked(module, ())


def _keep_highest(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """0/1 per row of ``scores`` (2-D): 0 for the ``ratio`` lowest of that row."""
    keep = torch.ones_like(scores)
    lowest = torch.topk(scores, int(ratio * scores.shape[1]), dim=1, largest=False).indices
    return keep.scatter_(1, lowest, 0.0)


@torch.no_grad()
def mask_lowest(scores: dict[nn.Module, torch.Tensor], ratio: float, scope: Scope = "network") -> None:
    """Mask ``ratio`` of the scored weights with the lowest scores: ranked across all layers at once
    (``"network"``), within each layer (``"layer"``) or within each output row (``"row"``)."""
    if scope == "network":
        flat = torch.cat([s.flatten() for s in scores.values()])
        keeps = _keep_highest(flat[None], ratio)[0].split([s.numel() for s in scores.values()])
    else:
        rows = {"layer": lambda s: s.reshape(1, -1), "row": lambda s: s.reshape(len(s), -1)}[scope]
        keeps = [_keep_highest(rows(s), ratio) for s in scores.values()]
    for module, keep in zip(scores, keeps, strict=True):
        _attach(module, keep)


@torch.no_grad()
def mask_n_of_m(scores: dict[nn.Module, torch.Tensor], n: int, m: int) -> None:
    """Mask the ``n`` lowest scores of every ``m`` consecutive weights along each layer's input (the GEMM
    reduction) dimension; a row's last weights that do not fill a group of ``m`` are kept."""
    for module, score in scores.items():
        rows = score.reshape(len(score), -1)
        full = rows.shape[1] // m * m
        keep = torch.ones_like(rows)
        if full:
            groups = rows[:, :full].reshape(len(rows), -1, m)
            lowest = torch.topk(groups, n, dim=2, largest=False).indices
            keep[:, :full] = torch.ones_like(groups).scatter_(2, lowest, 0.0).reshape(len(rows), full)
        _attach(module, keep)


@torch.no_grad()
def input_norms(
    model: nn.Module, layers: list[nn.Module], calib: CalibBatches
) -> dict[nn.Module, torch.Tensor]:
    """Per layer, the L2 norm of each input feature (channel) over every calibration position and image."""
    sums = {layer: 0.0 for layer in layers}

    def hook(layer: nn.Module, args: tuple) -> None:
        x = args[0]
        x = x.transpose(0, 1).flatten(1) if isinstance(layer, nn.Conv2d) else x.reshape(-1, x.shape[-1]).T
        sums[layer] = sums[layer] + x.square().sum(dim=1)

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        for images, _ in calib:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: total.sqrt() for layer, total in sums.items()}


def make_permanent(model: nn.Module) -> nn.Module:
    """Zero the masked weights one last time and remove every mask and hook, leaving plain layers."""
    for module in model.modules():
        if hasattr(module, MASK):
            _zero_masked(module, ())
            delattr(module, MASK)
            for key in [k for k, hook in module._forward_pre_hooks.items() if hook is _zero_masked]:
                del module._forward_pre_hooks[key]
    return model


def _magnitudes(model: nn.Module) -> dict[nn.Module, torch.Tensor]:
    return {m: m.weight.detach().abs() for m in prunable_layers(model)}


@register_method("global_magnitude", kind="unstructured", tolerance=1.5, default_ratio=0.5)
def global_magnitude(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Smallest |w| across the whole network (Han et al., 2015, "Learning both Weights and Connections")."""
    mask_lowest(_magnitudes(model), ratio)


@register_method("magnitude", kind="unstructured", tolerance=1.5, default_ratio=0.5)
def layer_magnitude(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Smallest |w| of each layer, the same fraction in every layer.

    Zhu & Gupta, 2017, "To prune, or not to prune: exploring the efficacy of pruning for model compression".
    """
    mask_lowest(_magnitudes(model), ratio, scope="layer")


@register_method("random_unstructured", kind="unstructured", tolerance=1.5, default_ratio=0.5)
def random_weights(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Random weights, the same fraction in every layer: the control every mask criterion must beat.

    Liu et al., 2022, "The Unreasonable Effectiveness of Random Pruning" (ICLR).
    """
    mask_lowest({m: torch.rand_like(m.weight) for m in prunable_layers(model)}, ratio, scope="layer")


@register_method("nm_2_4", kind="unstructured", tolerance=1.5, default_ratio=0.5, ratios=(0.5,))
def n2_m4(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Semi-structured 2:4 sparsity: the smaller two |w| of every four along the input dimension, the
    pattern sparse tensor cores run at twice the dense rate. Only ``ratio=0.5`` is 2:4.

    Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks" (NVIDIA Ampere 2:4 sparsity).
    """
    mask_n_of_m(_magnitudes(model), 2, 4)


@register_method("wanda", kind="unstructured", needs=("calib",), tolerance=1.5, default_ratio=0.5)
def wanda(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Weights and activations: |w| times the L2 norm of its input feature over the calibration batches,
    ranked within each output row.

    Sun et al., 2024, "A Simple and Effective Pruning Approach for Large Language Models" (ICLR).
    """
    layers = prunable_layers(model)
    norms = input_norms(model, layers, data.calib)
    mask_lowest(
        {layer: layer.weight.detach().abs() * _per_weight(layer, norms[layer]) for layer in layers},
        ratio,
        scope="row",
    )


def _per_weight(layer: nn.Module, norm: torch.Tensor) -> torch.Tensor:
    """The input-feature ``norm`` (one per input channel) laid out like ``layer.weight`` (grouped too)."""
    groups, weight = getattr(layer, "groups", 1), layer.weight
    rows = norm.view(groups, 1, -1).expand(groups, len(weight) // groups, -1).reshape(len(weight), -1)
    return rows.view(*rows.shape, *(1,) * (weight.dim() - 2))
