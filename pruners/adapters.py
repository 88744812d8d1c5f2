"""Per-family handling of timm models: what the pruner must not touch and what it must keep consistent."""

from __future__ import annotations

from functools import cache

import timm
import torch
from torch import nn

# timm model modules whose constructors take ``img_size`` / ``patch_size`` (plain ViT and DeiT).
_PATCH_FAMILIES = ("timm.models.vision_transformer", "timm.models.deit")


def model_kwargs(model_name: str, img_size: int) -> dict[str, int]:
    """Extra ``timm.create_model`` arguments so ``model_name`` fits square inputs of ``img_size`` pixels.

    ViTs get a patch of ``img_size // 4``: 16 tokens keep attention cheap on small images.
    """
    module = timm.models.model_entrypoint(model_name).__module__
    if module in _PATCH_FAMILIES:
        return {"img_size": img_size, "patch_size": img_size // 4}
    return {}


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of the model's classifier head (``get_classifier()``), which pruning never touches."""
    head = model.get_classifier()
    return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Every ``Conv2d`` / ``Linear`` outside the classifier head."""
    head = {id(m) for m in classifier_layers(model)}
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in head]


def _attentions(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]


def features(model: nn.Module) -> frozenset[str]:
    """What a method may ``require`` of ``model``: ``"attention"`` heads, ``"batchnorm"`` layers."""
    found = set()
    if _attentions(model):
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
    """Total attention heads over all timm ``Attention`` modules (0 for a model without attention)."""
    return sum(m.num_heads for m in _attentions(model))


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{attn.qkv: attn.num_heads}`` for torch-pruning's ``num_heads`` argument."""
    return {m.qkv: m.num_heads for m in _attentions(model)}


# Token parameters of timm ViTs, pruned along their last (embedding) dimension.
_TOKEN_PARAMS = ("cls_token", "reg_token", "dist_token", "pos_embed")


def token_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """``[(param, dim)]`` for torch-pruning's ``unwrapped_parameters``: ViT tokens lose embedding channels."""
    return [
        (p, p.dim() - 1) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] in _TOKEN_PARAMS
    ]


def sync_attention(model: nn.Module, num_heads: dict[nn.Module, int]) -> None:
    """After pruning, make each timm ``Attention``'s head count and sizes agree with its new ``qkv``."""
    for attn in _attentions(model):
        attn.num_heads = num_heads.get(attn.qkv, attn.num_heads)
        attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)
        attn.attn_dim = attn.num_heads * attn.head_dim
        attn.scale = attn.head_dim**-0.5
