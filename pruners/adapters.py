"""Per-family handling of timm models: what the pruner must not touch and what it must keep consistent."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import timm
import torch
from timm.layers import Attention
from timm.models.inception_next import InceptionDWConv2d
from timm.models.mambaout import GatedConvBlock
from timm.models.metaformer import Scale
from timm.models.mlp_mixer import SpatialGatingUnit
from timm.models.mobilevit import LinearSelfAttention
from timm.models.res2net import Bottle2neck
from timm.models.swin_transformer import WindowAttention
from torch import nn

from .layer_pruners import kept_indices
from .models import get_model

# timm model modules whose constructors take ``img_size`` / ``patch_size`` (plain ViT and DeiT).
_PATCH_FAMILIES = ("timm.models.vision_transformer", "timm.models.deit")


def model_kwargs(model_name: str, img_size: int, native: bool = False) -> dict[str, object]:
    """Extra ``timm.create_model`` arguments so ``model_name`` fits square inputs of ``img_size`` pixels.

    On the embedded workload, models in :data:`pruners.models.MODELS` take their entry's kwargs and other
    ViTs and DeiTs get a patch of ``img_size // 4``: 16 tokens keep attention cheap on small images.
    With ``native`` images (your own folder, at the model's data config) a model keeps its own
    architecture; one with a fixed token grid (ViT, DeiT, Swin) is told ``img_size`` when it differs from
    its default, and timm resamples pretrained position embeddings to it.
    """
    entry = get_model(model_name)
    if native:
        default = timm.models.get_pretrained_cfg_value(model_name, "input_size") or (3, 224, 224)
        fixed_grid = entry.sized or timm.models.model_entrypoint(model_name).__module__ in _PATCH_FAMILIES
        return {"img_size": img_size} if fixed_grid and img_size != default[-1] else {}
    if entry.measured:
        return {**({"img_size": img_size} if entry.sized else {}), **entry.kwargs}
    if timm.models.model_entrypoint(model_name).__module__ in _PATCH_FAMILIES:
        return {"img_size": img_size, "patch_size": img_size // 4}
    return {}


# Where models that are not from timm keep their classifier: torchvision's ResNet (``fc``), VGG, MobileNet
# and EfficientNet (``classifier``), ViT (``heads``), and many hand-written models (``head``).
HEAD_NAMES = ("fc", "classifier", "head", "heads")


class HeadNotFoundError(ValueError):
    """A model without ``get_classifier()`` whose classifier head cannot be told apart."""


def _classifier(model: nn.Module) -> nn.Module | tuple[nn.Module, ...]:
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in head.modules()):
            return head
    raise HeadNotFoundError(
        f"cannot tell the classifier head of {type(model).__name__}: it has no get_classifier() and no "
        f"layer named {', '.join(HEAD_NAMES)}; give it a get_classifier() that returns its last layer, "
        "as timm models have"
    )


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of the model's classifier head, which pruning never touches: ``get_classifier()`` as
    timm models have, else the first of :data:`HEAD_NAMES` that holds a layer (torchvision models).

    Distilled models (DeiT, LeViT) return a tuple of heads; each of them is kept.
    """
    heads = _classifier(model)
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    return [m for head in heads for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Every ``Conv2d`` / ``Linear`` outside the classifier head and the modules :func:`left_whole`."""
    kept = {id(m) for m in classifier_layers(model)}
    kept |= {id(m) for whole in left_whole(model) for m in whole.modules()}
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in kept]


# Attention whose head bookkeeping :func:`sync_attention` keeps right after pruning: timm's fused-``qkv``
# ``Attention`` (ViT, DeiT, MobileViT, ...) and Swin's ``WindowAttention``. Exact types: a subclass may
# reshape by other rules.
_KNOWN_ATTENTION = (Attention, WindowAttention)


def _attentions(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules of a :data:`_KNOWN_ATTENTION` type."""
    return [m for m in model.modules() if type(m) in _KNOWN_ATTENTION]


def _has_heads(module: nn.Module) -> bool:
    return isinstance(getattr(module, "num_heads", None), int)


def _projects(module: nn.Module) -> bool:
    """Whether ``module`` has heads and a ``Linear`` / ``Conv2d`` of its own: an attention, not a helper
    with a head count such as the relative-position MLP of ViT-relpos."""
    return _has_heads(module) and any(isinstance(c, (nn.Linear, nn.Conv2d)) for c in module.children())


def foreign_attention(model: nn.Module) -> list[nn.Module]:
    """Attention of other kinds (BEiT, CaiT, ConViT, CoaT, CrossViT, ViT-relpos, ...): the innermost
    modules with a ``num_heads`` that are not a :data:`_KNOWN_ATTENTION`, looking through helpers inside
    them that only share the head count. Their reshapes follow rules DepGraph cannot see (talking heads,
    gated positional attention, ``C // num_heads``), so they are left whole and the rest of the model (MLPs,
    convolutions) is pruned."""
    return [
        m
        for m in model.modules()
        if _has_heads(m)
        and type(m) not in _KNOWN_ATTENTION
        and not any(_projects(sub) for sub in m.modules() if sub is not m)
    ]


def _head_prunable(model: nn.Module) -> list[nn.Module]:
    """Attention whose heads can go: not Swin's windowed attention, whose relative position bias table
    holds one column per head and is indexed, not multiplied, so DepGraph cannot follow it."""
    return [m for m in _attentions(model) if not hasattr(m, "relative_position_bias_table")]


def features(model: nn.Module) -> frozenset[str]:
    """What a method may ``require`` of ``model``: ``"attention"`` heads, ``"batchnorm"`` layers."""
    found = set()
    if _head_prunable(model):
        found.add("attention")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        found.add("batchnorm")
    return frozenset(found)


@cache
def model_features(model_name: str) -> frozenset[str]:
    """:func:`features` of the timm model ``model_name``, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return features(timm.create_model(model_name, pretrained=False))


def missing_features(required: tuple[str, ...], present: frozenset[str]) -> str | None:
    """Why a method that ``required`` these features does not apply, or ``None`` when it does."""
    missing = [f for f in required if f not in present]
    return f"no {' or '.join(missing)} layers to prune" if missing else None


def attention_head_count(model: nn.Module) -> int:
    """Total prunable attention heads over all timm ``Attention`` modules (0 for a model without)."""
    return sum(m.num_heads for m in _head_prunable(model))


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{attn.qkv: attn.num_heads}`` for torch-pruning's ``num_heads`` argument (every attention, so its
    head dimensions shrink evenly across heads)."""
    return {m.qkv: m.num_heads for m in _attentions(model)}


def prunable_heads(model: nn.Module) -> list[nn.Module]:
    """The ``qkv`` layers of attention whose whole heads may be removed (see :func:`features`)."""
    return [m.qkv for m in _head_prunable(model)]


# Parameters outside any layer, pruned along their last (channel) dimension: the tokens of timm ViTs and
# ConvNeXt's layer scale ``gamma``.
_UNWRAPPED_PARAMS = ("cls_token", "reg_token", "dist_token", "pos_embed", "gamma")


def unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """``[(param, dim)]`` for torch-pruning's ``unwrapped_parameters``: ViT tokens and ConvNeXt layer scales
    lose the channels their block loses. A 4-D one is a feature map (PiT's ``pos_embed``, ``1 x C x H x W``)
    and loses them along dim 1."""
    return [
        (p, 1 if p.dim() == 4 else p.dim() - 1)
        for name, p in model.named_parameters()
        if name.rsplit(".", 1)[-1] in _UNWRAPPED_PARAMS
    ]


def sync_attention(model: nn.Module, num_heads: dict[nn.Module, int]) -> None:
    """After pruning, make each timm ``Attention``'s head count and sizes agree with its new ``qkv``."""
    for attn in _attentions(model):
        attn.num_heads = num_heads.get(attn.qkv, attn.num_heads)
        attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)
        attn.attn_dim = attn.num_heads * attn.head_dim
        attn.scale = attn.head_dim**-0.5


def spatial_gating(model: nn.Module) -> list[nn.Module]:
    """gMLP's spatial gating units and the ``fc1`` that feeds each: ``fc1``'s output is chunked into gate
    halves that multiply channel by channel, and the gate's ``proj`` mixes tokens behind transposes, which
    DepGraph takes for channels. The MLP's hidden width is left whole; its input and output still prune."""
    return [
        layer
        for m in model.modules()
        if isinstance(getattr(m, "gate", None), SpatialGatingUnit)
        for layer in (m.fc1, m.gate)
    ]


# Per block type, the layers around a split by constant channel counts.
_FIXED_SPLIT_LAYERS: dict[type, tuple[str, ...]] = {
    GatedConvBlock: ("fc1", "conv"),
    InceptionDWConv2d: ("dwconv_hw", "dwconv_w", "dwconv_h"),
    LinearSelfAttention: ("qkv_proj",),
    Bottle2neck: ("conv1", "convs"),
}


def fixed_splits(model: nn.Module) -> list[nn.Module]:
    """Layers whose output a timm block splits by channel counts it keeps as constants: MambaOut's gated
    ``fc1`` (and the depthwise ``conv`` on its last part), InceptionNeXt's depthwise branches (their split
    is of the block's input, so that width is held too), MobileViT-v2's ``qkv_proj`` and Res2Net's ``conv1``
    and the convolutions on its parts. Pruning them would leave the constants wrong, so they are left
    whole; the rest of each block still prunes."""
    return [getattr(m, name) for m in model.modules() for name in _FIXED_SPLIT_LAYERS.get(type(m), ())]


def left_whole(model: nn.Module) -> list[nn.Module]:
    """The modules structured pruning leaves whole, by family rule: :func:`foreign_attention`,
    :func:`spatial_gating` and :func:`fixed_splits`."""
    return [*foreign_attention(model), *spatial_gating(model), *fixed_splits(model)]


def sync_layer_scales(model: nn.Module) -> None:
    """After pruning, make each MetaFormer ``Scale``'s ``shape`` (which ``forward`` views its ``scale`` as)
    agree with its pruned ``scale``."""
    for m in model.modules():
        if isinstance(m, Scale):
            m.shape = (m.scale.numel(), *m.shape[1:])


def prune_channel_extras(layer: nn.Module, idxs: Sequence[int]) -> None:
    """Prune the output channels ``idxs`` from the extra parameters of a ``Conv2d`` / ``Linear`` subclass
    that Torch-Pruning's rule for the base class leaves whole: those with one row per output channel (the
    ``gain`` of timm's ``ScaledStdConv2d`` in NFNets). Call before the layer itself is pruned."""
    rows = layer.weight.shape[0]
    for name, p in list(layer.named_parameters(recurse=False)):
        if name not in ("weight", "bias") and p.dim() > 0 and p.shape[0] == rows:
            setattr(
                layer, name, nn.Parameter(p.data[kept_indices(rows, idxs)], requires_grad=p.requires_grad)
            )


def ignored_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters pruning must leave whole: Swin's relative position bias tables (one row per offset) and
    every parameter of :func:`foreign_attention`, which may be used outside its layer (BEiT's ``qkv``
    weight goes to ``F.linear`` with a separate ``q_bias`` / ``v_bias``)."""
    tables = [
        m.relative_position_bias_table for m in model.modules() if hasattr(m, "relative_position_bias_table")
    ]
    return tables + [p for m in foreign_attention(model) for p in m.parameters()]


def channel_rounding(model: nn.Module, round_to: int) -> int | None:
    """``round_to`` for Torch-Pruning, or ``None`` for models with grouped (not depthwise) convolutions such
    as RegNet and ResNeXt: DepGraph removes the same channels from every group, and rounding the total
    would round away every group's share."""
    grouped = any(isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels for m in model.modules())
    return None if grouped else round_to
