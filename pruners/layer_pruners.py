"""Torch-Pruning's pruning functions for timm layers it does not know (patch merging, blur pooling, a
GroupNorm without bias), and the dependency-graph checks that keep layers whole where Torch-Pruning would
map their channels wrongly."""

from __future__ import annotations

from collections.abc import Sequence

import torch_pruning as tp
from timm.layers import BlurPool2d, SelectiveKernel
from timm.models.swin_transformer import PatchMerging
from torch import nn


class PatchMergingPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning rule for Swin's ``PatchMerging``: it concatenates the four pixels of each 2x2 patch,
    so input channel ``c`` is columns ``c``, ``C + c``, ``2C + c`` and ``3C + c`` of its ``norm`` and
    ``reduction``; its output channels are those of ``reduction``."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_linear_out_channels(layer.reduction, idxs)
        layer.out_dim = layer.reduction.out_features
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        merged = [k * layer.dim + i for k in range(4) for i in idxs]
        tp.prune_layernorm_out_channels(layer.norm, merged)
        tp.prune_linear_in_channels(layer.reduction, merged)
        layer.dim -= len(idxs)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.reduction.out_features

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.dim


def kept_indices(count: int, idxs: Sequence[int]) -> list[int]:
    """The indices of ``range(count)`` that pruning ``idxs`` leaves."""
    gone = set(idxs)
    return [i for i in range(count) if i not in gone]


class BlurPoolPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning rule for timm's ``BlurPool2d`` (TResNet, DenseNet-blur): a depthwise blur whose
    per-channel filter is a buffer, so a channel it loses is a row of ``filt``."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        if layer.channels is not None:
            kept = kept_indices(layer.channels, idxs)
            layer.filt = layer.filt[kept]
            layer.channels = len(kept)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return layer.channels

    get_in_channels = get_out_channels


class NoBiasGroupNormPruner(tp.pruner.function.GroupNormPruner):
    """Torch-Pruning's ``GroupNorm`` rule for a norm with a scale and no shift (MetaFormer's
    ``GroupNorm1NoBias``): the stock rule prunes ``bias`` whenever ``affine`` is set; this one only when there
    is one, so it also serves the other norms of the same type."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = kept_indices(layer.num_channels, idxs)
        layer.num_channels = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        return layer

    prune_in_channels = prune_out_channels


# Torch-Pruning rules for timm layers DepGraph cannot trace channel by channel, by layer type.
_CUSTOMIZED: dict[type, tp.pruner.BasePruningFunc] = {
    PatchMerging: PatchMergingPruner(),
    BlurPool2d: BlurPoolPruner(),
}


def customized_pruners(model: nn.Module) -> dict[type, tp.pruner.BasePruningFunc]:
    """Torch-Pruning rules for the timm layers of :data:`_CUSTOMIZED` that ``model`` holds, and for its
    ``GroupNorm`` layers with a scale and no shift."""
    present = {type(m) for m in model.modules()}
    rules = {kind: rule for kind, rule in _CUSTOMIZED.items() if kind in present}
    shiftless = {
        type(m) for m in model.modules() if isinstance(m, nn.GroupNorm) and m.affine and m.bias is None
    }
    return rules | {kind: NoBiasGroupNormPruner() for kind in shiftless}


def _multiplies_channels(module: nn.Module) -> bool:
    """A depthwise convolution with a channel multiplier (``groups == in_channels < out_channels``)."""
    return isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels < module.out_channels


def multiplier_feeders(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> list[nn.Module]:
    """Layers whose output channels feed a depthwise convolution with a channel multiplier (PiT's pooling,
    FastViT's downsampling), to be left whole: Torch-Pruning treats such a convolution as an ordinary one,
    so it scores and removes its input channels wrongly. Empty when the model has none."""
    return _feeders(graph, ignored, {m for m in graph.module2node if _multiplies_channels(m)})


def split_input_feeders(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> list[nn.Module]:
    """Layers whose output channels a timm block splits by a count it keeps as a constant (SKNet's selective
    kernels with ``split_input``), to be left whole: after pruning, the split would no longer fit."""
    return _feeders(
        graph,
        ignored,
        {
            conv
            for m in graph.model.modules()
            if isinstance(m, SelectiveKernel) and m.split_input
            for path in m.paths
            for conv in path.modules()
            if isinstance(conv, nn.Conv2d)
        },
    )


def _feeders(graph: tp.DependencyGraph, ignored: list[nn.Module], targets: set[nn.Module]) -> list[nn.Module]:
    """The layers whose output channels are in a group with the input channels of one of ``targets``."""
    if not targets:
        return []
    feeding = (
        group
        for group in graph.get_all_groups(ignored_layers=ignored)
        if any(
            graph.is_in_channel_pruning_fn(dep.handler) and dep.target.module in targets for dep, _ in group
        )
    )
    return [
        dep.target.module
        for group in feeding
        for dep, _ in group
        if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, nn.Module)
    ]


def _width(graph: tp.DependencyGraph, dep: tp.Dependency) -> int | None:
    """The size of the dimension ``dep`` prunes on its target, or ``None`` where Torch-Pruning cannot tell."""
    if dep.target.module not in graph.module2node or graph.get_pruner_of_module(dep.target.module) is None:
        return None
    if graph.is_out_channel_pruning_fn(dep.handler):
        return graph.get_out_channels(dep.target.module)
    return graph.get_in_channels(dep.target.module)


def _out_of_range(graph: tp.DependencyGraph, group: tp.Group) -> bool:
    for dep, idxs in group:
        width = _width(graph, dep)
        if width is not None and idxs and max(idxs) >= width:
            return True
    return False


def mis_mapped_groups(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> list[nn.Module]:
    """The layers of dependency groups whose channel indices Torch-Pruning maps past the end of a layer (its
    concat, split and reshape index mappings on DPN, FasterNet, EfficientViT, EVA-02, gMixer), to be left
    whole: scoring or pruning such a group raises or removes the wrong channels. Empty when none is."""
    return [
        dep.target.module
        for group in graph.get_all_groups(ignored_layers=ignored)
        if _out_of_range(graph, group)
        for dep, _ in group
        if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, nn.Module)
    ]
