"""The model table and the per-family adapters: every bench model prunes at the embedded workload's size."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from timm.layers import BlurPool2d, ScaledStdConv2d
from timm.models.metaformer import GroupNorm1NoBias, Scale
from timm.models.swin_transformer import PatchMerging
from torch import nn

import pruners
from pruners.adapters import channel_rounding, classifier_layers, features, foreign_attention, model_kwargs
from pruners.layer_pruners import PatchMergingPruner
from pruners.matrix import build_cases
from pruners.models import (
    DEFAULT_RECIPE,
    MODELS,
    UnmeasuredModelWarning,
    get_model,
    list_models,
    select_models,
)


def test_table_covers_twelve_families_with_timm_names() -> None:
    assert len({entry.family for entry in MODELS}) >= 12
    assert len({entry.name for entry in MODELS}) == len(MODELS)
    assert all(timm.is_model(entry.name) for entry in MODELS)


@pytest.mark.parametrize("name", list_models())
def test_every_bench_model_prunes_at_the_workload_size(name: str, workload: pruners.Workload) -> None:
    torch.manual_seed(0)
    model = pruners.zoo.create_model(name, workload).eval()
    inputs = workload.test_batch(2)
    head = classifier_layers(model)[0]
    pruned, record = pruners.prune(model, "l1", 0.3, inputs)
    with torch.no_grad():
        assert pruned(inputs).shape == (2, workload.num_classes)
    assert record.macs_speedup > 1.5, f"{name}: l1 at 0.3 removed too little"
    assert record.channel_ratio > 0.25
    kept = classifier_layers(pruned)[0]
    assert kept.weight.shape[0] == head.weight.shape[0] == workload.num_classes, "classifier was pruned"


def test_wildcards_match_the_table_and_plain_names_any_timm_model() -> None:
    assert select_models(["vit_*", "deit_*"]) == ["vit_tiny_patch16_224", "deit_tiny_patch16_224"]
    assert select_models(["*"]) == list_models() == [entry.name for entry in MODELS]
    assert select_models(["resnet18", "resnet18"]) == ["resnet18"]
    assert [c.model for c in build_cases(["swin_*"], ["l1"])] == ["swin_tiny_patch4_window7_224"]
    with pytest.raises(ValueError, match=re.escape("no bench model matches 'nothing_*'; known: resnet18,")):
        select_models(["nothing_*"])
    with pytest.raises(ValueError, match="unknown timm model 'resnet1800'"):
        select_models(["resnet1800"])


def test_a_timm_model_without_an_entry_gets_the_default_recipe_and_a_warning() -> None:
    get_model.cache_clear()
    with pytest.warns(UnmeasuredModelWarning, match="resnet10t has no entry in pruners.models.MODELS"):
        entry = get_model("resnet10t")
    assert entry.recipe == DEFAULT_RECIPE and not entry.measured
    assert pruners.recipes.baseline_recipe("resnet10t") == DEFAULT_RECIPE
    assert model_kwargs("vit_small_patch16_224", 32) == {"img_size": 32, "patch_size": 8}


def test_entry_kwargs_shape_the_model() -> None:
    assert model_kwargs("swin_tiny_patch4_window7_224", 32) == {
        "img_size": 32,
        "patch_size": 4,
        "window_size": 4,
    }
    assert model_kwargs("resnet18", 32) == {}
    swin = pruners.zoo.create_model("swin_tiny_patch4_window7_224", pruners.digits())
    assert swin.patch_embed.grid_size == (8, 8)


def test_patch_merging_removes_each_input_channel_from_all_four_pixels() -> None:
    torch.manual_seed(0)
    merge = PatchMerging(dim=4, out_dim=6)
    norm, weight = merge.norm.weight.detach().clone(), merge.reduction.weight.detach().clone()
    PatchMergingPruner().prune_in_channels(merge, [1, 3])
    kept = [k * 4 + c for k in range(4) for c in (0, 2)]
    assert merge.dim == 2
    assert torch.equal(merge.norm.weight, norm[kept])
    assert torch.equal(merge.reduction.weight, weight[:, kept])
    assert merge(torch.randn(1, 4, 4, 2)).shape == (1, 2, 2, 6)
    PatchMergingPruner().prune_out_channels(merge, [0])
    assert merge.out_dim == 5 and merge(torch.randn(1, 4, 4, 2)).shape == (1, 2, 2, 5)


def test_swin_keeps_relative_position_tables_and_head_counts(workload: pruners.Workload) -> None:
    swin = pruners.zoo.create_model("swin_tiny_patch4_window7_224", workload).eval()
    tables = {n: p.shape for n, p in swin.named_parameters() if "relative_position_bias_table" in n}
    heads = [m.num_heads for m in swin.modules() if hasattr(m, "relative_position_bias_table")]
    pruned, _ = pruners.prune(swin, "l1", 0.3, workload.test_batch(2))
    assert {n: p.shape for n, p in pruned.named_parameters() if n in tables} == tables
    attn = [m for m in pruned.modules() if hasattr(m, "relative_position_bias_table")]
    assert [m.num_heads for m in attn] == heads
    assert all(m.qkv.out_features == 3 * m.num_heads * m.head_dim for m in attn)
    assert "attention" not in features(swin), "windowed heads cannot be removed, so vit_heads must not apply"


def test_grouped_convolutions_turn_channel_rounding_off() -> None:
    grouped = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3, groups=2))
    depthwise = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3, groups=16))
    assert channel_rounding(grouped, 8) is None
    assert channel_rounding(depthwise, 8) == 8


@pytest.mark.parametrize(
    ("name", "kwargs", "attention"),
    [
        ("convit_tiny", {}, "GPSA"),
        ("beit_base_patch16_224", {"patch_size": 8, "depth": 2}, "Attention"),
        ("cait_xxs24_224", {"patch_size": 8, "depth": 2}, "TalkingHeadAttn"),
        ("vit_relpos_small_patch16_rpn_224", {"patch_size": 8, "depth": 2}, "RelPosAttention"),
    ],
)
def test_attention_of_other_kinds_is_left_whole_and_the_rest_pruned(name, kwargs, attention) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, img_size=32, **kwargs).eval()
    inputs = torch.randn(2, 3, 32, 32)
    found = foreign_attention(model)
    assert found and attention in {type(m).__name__ for m in found}
    shapes = [[p.shape for p in m.parameters()] for m in found]
    pruned, record = pruners.prune(model, "l1", 0.3, inputs)
    assert [[p.shape for p in m.parameters()] for m in foreign_attention(pruned)] == shapes
    assert record.macs_after < record.macs_before
    assert pruned(inputs).shape == (2, 10)


class _Net(nn.Module):
    """A small CNN around timm layers, with a torchvision-style ``fc`` head."""

    def __init__(self, *layers: nn.Module, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _pruned(model: nn.Module, ratio: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 32, 32)
    pruned, record = pruners.prune(model.eval(), "l1", ratio, inputs)
    assert record.macs_after < record.macs_before
    assert pruned(inputs).shape == (2, 10)
    return pruned


def test_blur_pool_filters_lose_the_channels_of_their_input() -> None:
    pruned = _pruned(_Net(nn.Conv2d(3, 32, 3), BlurPool2d(32), nn.Conv2d(32, 32, 3), width=32))
    conv, blur = pruned.body[0], pruned.body[1]
    assert conv.out_channels < 32 and blur.channels == blur.filt.shape[0] == conv.out_channels


def test_scaled_weight_standardisation_gains_lose_their_output_channels() -> None:
    pruned = _pruned(_Net(ScaledStdConv2d(3, 32, 3), nn.ReLU(), ScaledStdConv2d(32, 32, 3), width=32))
    for conv in (pruned.body[0], pruned.body[2]):
        assert conv.out_channels < 32 and conv.gain.shape[0] == conv.out_channels


def test_metaformer_layer_scales_and_shiftless_group_norms_follow_their_channels() -> None:
    pruned = _pruned(
        _Net(nn.Conv2d(3, 32, 3), GroupNorm1NoBias(32), Scale(32), nn.Conv2d(32, 32, 1), width=32)
    )
    norm, scale = pruned.body[1], pruned.body[2]
    kept = pruned.body[0].out_channels
    assert kept < 32 and norm.bias is None and norm.weight.shape == (kept,) == (norm.num_channels,)
    assert scale.shape == (kept, 1, 1) and scale.scale.shape == (kept,)


def test_what_feeds_a_channel_multiplying_depthwise_convolution_is_left_whole() -> None:
    model = _Net(
        nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3, groups=16), nn.ReLU(), nn.Conv2d(32, 32, 1), width=32
    )
    pruned = _pruned(model)
    assert pruned.body[0].out_channels == 16 and pruned.body[1].in_channels == 16
    assert pruned.body[3].out_channels < 32


def test_gmlp_spatial_gating_is_left_whole_and_the_residual_width_pruned() -> None:
    model = timm.create_model("gmlp_ti16_224", num_classes=10, img_size=32)
    gates = [
        (block.mlp_channels.fc1.out_features, block.mlp_channels.gate.proj.weight.shape)
        for block in model.blocks
    ]
    pruned = _pruned(model)
    assert [
        (b.mlp_channels.fc1.out_features, b.mlp_channels.gate.proj.weight.shape) for b in pruned.blocks
    ] == gates
    assert pruned.stem.proj.out_channels < model.stem.proj.out_channels


class _PartialConvolution(nn.Module):
    """FasterNet's block: a convolution over the first channels only, its result concatenated with the
    rest, then a residual; Torch-Pruning maps the residual's channel indices past the split."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.partial = nn.Conv2d(3, 32, 3), nn.Conv2d(8, 8, 3, padding=1)
        self.mix, self.head = nn.Conv2d(32, 32, 1), nn.Sequential(nn.Conv2d(32, 64, 1), nn.Conv2d(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        first, rest = torch.split(x, [8, 24], dim=1)
        x = x + self.mix(torch.cat((self.partial(first), rest), dim=1))
        return self.fc(self.head(x).mean((2, 3)))


def test_groups_whose_channels_torch_pruning_maps_out_of_range_are_left_whole_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="past the end of a layer"):
        pruned = _pruned(_PartialConvolution())
    assert (pruned.stem.out_channels, pruned.partial.out_channels, pruned.mix.out_channels) == (32, 8, 32)
    assert pruned.head[0].out_channels < 64 and pruned.head[1].out_channels < 64


@pytest.mark.parametrize(
    ("name", "split_layers"),
    [
        ("mambaout_femto", lambda m: [m.stages[0].blocks[0].fc1, m.stages[0].blocks[0].conv]),
        ("inception_next_tiny", lambda m: [m.stages[0].blocks[0].token_mixer.dwconv_hw]),
        ("mobilevitv2_050", lambda m: [m.stages[2][1].transformer[0].attn.qkv_proj]),
        ("skresnet18", lambda m: [m.conv1]),
        ("res2next50", lambda m: [m.layer1[0].conv1, *m.layer1[0].convs]),
    ],
)
def test_layers_around_a_split_by_constant_channel_counts_are_left_whole(name, split_layers) -> None:
    model = timm.create_model(name, num_classes=10)
    widths = [layer.weight.shape[0] for layer in split_layers(model)]
    pruned = _pruned(model, ratio=0.3)
    assert [layer.weight.shape[0] for layer in split_layers(pruned)] == widths
