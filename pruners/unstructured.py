"""Unstructured (mask) pruning: weights are zeroed, shapes are kept.

A criterion scores every weight; :func:`mask_lowest` zeroes the lowest-scoring fraction. The mask stays on
the layer as a ``weight_mask`` buffer and a forward pre-hook re-zeroes those weights before every forward,
so a fine-tune cannot revive them; :func:`make_permanent` drops the mask and hook, leaving a plain layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapters import prunable_layers
from .registry import CalibBatches, register_method

MASK = "weight_mask"


def _zero_masked(module: nn.Module, args: tuple) -> None:
    with torch.no_grad():
        module.weight.mul_(getattr(module, MASK))


@torch.no_grad()
def mask_lowest(scores: dict[nn.Module, torch.Tensor], ratio: float) -> None:
    """Mask exactly ``ratio`` of all scored weights: the lowest scores across all layers at once."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = torch.ones_like(flat)
    keep[torch.topk(flat, int(ratio * flat.numel()), largest=False).indices] = 0.0
    for module, layer_keep in zip(scores, keep.split([s.numel() for s in scores.values()]), strict=True):
        module.register_buffer(MASK, layer_keep.view_as(module.weight).to(module.weight.dtype))
        module.register_forward_pre_hook(_zero_masked)
        _zero_masked(module, ())


def make_permanent(model: nn.Module) -> nn.Module:
    """Zero the masked weights one last time and remove every mask and hook, leaving plain layers."""
    for module in model.modules():
        if hasattr(module, MASK):
            _zero_masked(module, ())
            delattr(module, MASK)
            for key in [k for k, hook in module._forward_pre_hooks.items() if hook is _zero_masked]:
                del module._forward_pre_hooks[key]
    return model


@register_method("global_magnitude", kind="unstructured", tolerance=1.0, default_ratio=0.5)
def global_magnitude(
    model: nn.Module, ratio: float, example_inputs: torch.Tensor, calib: CalibBatches | None
) -> None:
    """Smallest |w| across the whole network (Han et al., 2015, "Learning both Weights and Connections")."""
    mask_lowest({m: m.weight.detach().abs() for m in prunable_layers(model)}, ratio)
