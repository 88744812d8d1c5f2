"""Planted structure: a reference model with channels, heads or weights made clearly the weakest, by every
measure a criterion uses (norm, BatchNorm scale, gradient effect), must lose exactly those, which checks
each criterion's ranking direction without a golden file. Random ranking must not pass, or the test has no
power."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruners
from pruners import golden
from pruners.unstructured import MASK

# Channels of test_resnet's layer2.0.conv1 (48 channels) scaled by WEAK, with its BatchNorm and the next
# convolution's inputs: at CHANNEL_RATIO Torch-Pruning removes 8 channels of that layer (48 - int(48 * 0.9)
# = 5, rounded to keep a multiple of 8).
LAYER, NORM, NEXT = "layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2"
PLANTED = (1, 6, 13, 20, 27, 34, 41, 46)
CHANNEL_RATIO = 0.1
WEAK = 1e-3
# The weights of MASKED_LAYER planted at two of every four along the input dimension: half of each row.
MASKED_LAYER = "layer2.0.conv2"
PLANTED_OF_FOUR = (0, 3)
CONTROLS = ("random", "random_unstructured")
STRUCTURED = [m for m in pruners.list_methods(kind="structured") if pruners.get_method(m).unit == "channels"]
MASKS = pruners.list_methods(kind="unstructured")


def _module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


@torch.no_grad()
def planted_channels(model: nn.Module) -> nn.Module:
    conv, norm, following = (_module(model, n) for n in (LAYER, NORM, NEXT))
    idx = torch.tensor(PLANTED)
    conv.weight[idx] *= WEAK
    norm.weight[idx] *= WEAK
    norm.bias[idx] *= WEAK
    norm.running_mean[idx] *= WEAK
    norm.running_var[idx] *= WEAK**2
    following.weight[:, idx] *= WEAK
    return model


def prune_planted(model: nn.Module, method: str, ratio: float) -> tuple[nn.Module, pruners.PruneRecord]:
    _, calib, inputs, _ = golden._reference_data()
    spec = pruners.get_method(method)
    sparse_train = golden._sparse_train(calib) if "train" in spec.needs else None
    torch.manual_seed(0)
    return pruners.prune(model, method, ratio, inputs, calib, sparse_train=sparse_train)


def channels_found(method: str) -> tuple[set[int], list[int]]:
    """The channels of LAYER ``method`` removed, and the 8 its ranking scored lowest."""
    _, record = prune_planted(planted_channels(golden.reference_model("test_resnet")), method, CHANNEL_RATIO)
    ranking = record.decision.groups[LAYER]
    lowest = sorted(range(len(ranking.scores)), key=ranking.scores.__getitem__)[: len(PLANTED)]
    return set(record.decision.layers[LAYER].removed), sorted(lowest)


@pytest.mark.parametrize("method", [m for m in STRUCTURED if m not in CONTROLS])
def test_every_channel_criterion_ranks_the_planted_channels_lowest_and_removes_them(method: str) -> None:
    removed, lowest = channels_found(method)
    assert lowest == list(PLANTED), f"{method} does not score the planted channels lowest: {lowest}"
    assert set(PLANTED) <= removed, f"{method} kept planted channels {sorted(set(PLANTED) - removed)}"


def test_a_local_criterion_removes_exactly_the_planted_channels() -> None:
    removed, _ = channels_found("l1")
    assert removed == set(PLANTED)


def test_random_channels_do_not_pass_the_planted_test() -> None:
    removed, lowest = channels_found("random")
    assert lowest != list(PLANTED) and not set(PLANTED) <= removed


def test_vit_heads_removes_the_planted_head_of_every_block() -> None:
    model = golden.reference_model("test_vit")
    heads = {}
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            attn = block.attn
            head = i % attn.num_heads
            dim, width = attn.head_dim, attn.num_heads * attn.head_dim
            rows = torch.tensor([part * width + head * dim + j for part in range(3) for j in range(dim)])
            attn.qkv.weight[rows] *= WEAK
            attn.qkv.bias[rows] *= WEAK
            attn.proj.weight[:, head * dim : (head + 1) * dim] *= WEAK
            heads[f"blocks.{i}.attn.qkv"] = set(rows.tolist())
    _, record = prune_planted(model, "vit_heads", 0.3)
    for name, rows in heads.items():
        assert set(record.decision.layers[name].removed) == rows, f"{name} lost another head"


@torch.no_grad()
def planted_weights(model: nn.Module) -> torch.Tensor:
    """Plant the weakest weights of MASKED_LAYER (the rest kept well away from zero); their positions."""
    weight = _module(model, MASKED_LAYER).weight
    rows = weight.view(len(weight), -1)
    planted = torch.zeros_like(rows, dtype=torch.bool)
    for position in PLANTED_OF_FOUR:
        planted[:, position::4] = True
    floor = 0.1 * rows.abs().mean()
    rows.copy_(torch.where(planted, rows.sign() * 1e-6, rows.sign() * rows.abs().clamp(min=floor)))
    return planted


def masked_found(method: str) -> tuple[torch.Tensor, torch.Tensor]:
    model = golden.reference_model("test_resnet")
    planted = planted_weights(model)
    pruned, _ = prune_planted(model, method, pruners.get_method(method).default_ratio)
    mask = getattr(_module(pruned, MASKED_LAYER), MASK)
    return planted, mask.view(len(mask), -1) == 0


@pytest.mark.parametrize("method", [m for m in MASKS if m not in CONTROLS])
def test_every_mask_criterion_zeroes_the_planted_weights(method: str) -> None:
    planted, zeroed = masked_found(method)
    missed = int((planted & ~zeroed).sum())
    assert missed == 0, f"{method} kept {missed} of {int(planted.sum())} planted weights"
    if method != "global_magnitude":
        assert torch.equal(planted, zeroed), f"{method} zeroed {int((zeroed & ~planted).sum())} others"


def test_random_weights_do_not_pass_the_planted_test() -> None:
    planted, zeroed = masked_found("random_unstructured")
    assert int((planted & ~zeroed).sum()) > 0
