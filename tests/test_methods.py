"""Every registered method on tiny timm models: it prunes, the model still runs, the head is kept."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp

import pruners
from pruners.adapters import classifier_layers, features, missing_features, prunable_layers

from .conftest import TINY_MODELS, SparseTrainSpy

RATIO = 0.5


@pytest.fixture(params=TINY_MODELS)
def model(request: pytest.FixtureRequest, workload: pruners.Workload) -> torch.nn.Module:
    torch.manual_seed(0)
    return pruners.zoo.create_model(request.param, workload).eval()


@pytest.mark.parametrize("method", pruners.list_methods())
def test_method_prunes_and_keeps_the_model_working(method: str, model, inputs, calib, sparse_train) -> None:
    spec = pruners.get_method(method)
    if missing_features(spec.requires, features(model)):
        with pytest.raises(pruners.NotApplicableError, match=f"'{method}' does not apply to this model: no"):
            pruners.prune(model, method, RATIO, inputs, calib=calib, sparse_train=sparse_train)
        return
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    head = classifier_layers(model)[0]

    pruned, record = pruners.prune(model, method, RATIO, inputs, calib=calib, sparse_train=sparse_train)

    assert all(torch.equal(v, dense_state[k]) for k, v in model.state_dict().items()), "dense model changed"
    with torch.no_grad():
        assert pruned(inputs).shape == (len(inputs), 10)
    assert classifier_layers(pruned)[0].out_features == head.out_features == 10
    assert (sparse_train.epochs > 0) == ("train" in spec.needs), "sparse training only when declared"
    assert record.unit == spec.unit
    if spec.kind == "structured":
        assert record.macs_after < record.macs_before
        assert record.params_after < record.params_before
        assert record.achieved_ratio > 0.2
        assert (record.head_ratio > 0) == (spec.unit == "heads"), "only head methods remove heads"
    else:
        assert record.sparsity == pytest.approx(RATIO, abs=0.01)
        assert record.macs_after == record.macs_before
        assert torch.equal(classifier_layers(pruned)[0].weight, head.weight), "classifier head was masked"


@pytest.mark.parametrize("method", pruners.list_methods(kind="unstructured"))
def test_unstructured_zeros_survive_training_and_folding(method: str, model, inputs, calib) -> None:
    pruned, record = pruners.prune(model, method, RATIO, inputs, calib=calib)
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    for images, labels in calib:
        torch.nn.functional.cross_entropy(pruned(images), labels).backward()
        optimizer.step()
    pruners.make_permanent(pruned)
    layers = prunable_layers(pruned)
    assert not any(hasattr(m, "weight_mask") or m._forward_pre_hooks for m in layers)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    assert zeros / sum(m.weight.numel() for m in layers) == pytest.approx(record.sparsity, abs=1e-3)


def test_vit_attention_stays_consistent_after_channel_pruning(workload, inputs) -> None:
    model = pruners.zoo.create_model("test_vit", workload).eval()
    pruned, _ = pruners.prune(model, "l1", RATIO, inputs)
    for block in pruned.blocks:
        attn = block.attn
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.attn_dim
        assert attn.head_dim < model.blocks[0].attn.head_dim
        assert attn.proj.in_features == attn.attn_dim


def test_structured_channel_counts_are_rounded(workload, inputs) -> None:
    model = pruners.zoo.create_model("test_resnet", workload).eval()
    pruned, _ = pruners.prune(model, "l1", 0.3, inputs)
    channels = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c % pruners.structured.ROUND_TO == 0 for c in channels), channels


def test_fisher_is_the_mean_of_per_sample_squared_gradients() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    images, labels = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    expected = torch.zeros_like(model.weight)
    for x, y in zip(images, labels, strict=True):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[None]), y[None]).backward()
        expected += model.weight.grad.square() / 4
    pruners.structured.fisher_diagonal(model, [(images[:2], labels[:2]), (images[2:], labels[2:])])
    assert torch.allclose(model.weight.grad, expected)
    pruners.structured.fisher_diagonal(model, [(images, labels)], samples=1)
    assert not torch.allclose(model.weight.grad, expected)


@pytest.mark.parametrize("method", pruners.list_methods(kind="structured"))
def test_structured_methods_remove_about_what_they_are_asked(
    method: str, model, inputs, calib, sparse_train
) -> None:
    if missing_features(pruners.get_method(method).requires, features(model)):
        pytest.skip(f"{method} does not apply to this model")
    _, record = pruners.prune(model, method, 0.3, inputs, calib=calib, sparse_train=sparse_train)
    assert record.achieved_ratio >= pruners.pruning.MIN_ACHIEVED_FRACTION * 0.3


def test_vit_heads_removes_whole_heads_only(workload, inputs) -> None:
    model = pruners.zoo.create_model("test_vit", workload).eval()
    pruned, record = pruners.prune(model, "vit_heads", 0.5, inputs)
    for dense, block in zip(model.blocks, pruned.blocks, strict=True):
        assert block.attn.num_heads == dense.attn.num_heads - 1
        assert block.attn.head_dim == dense.attn.head_dim, "head sizes stay"
        assert block.mlp.fc1.out_features == dense.mlp.fc1.out_features, "MLP widths stay"
        assert block.attn.qkv.out_features == 3 * block.attn.num_heads * block.attn.head_dim
    assert record.head_ratio == pytest.approx(0.5)


@pytest.mark.parametrize(
    "method", [m for m in pruners.list_methods() if "train" in pruners.get_method(m).needs]
)
def test_sparse_training_methods_regularise_every_step(method: str, workload, inputs, sparse_train) -> None:
    model = pruners.zoo.create_model("test_resnet", workload).eval()
    with pytest.raises(ValueError, match=f"'{method}' needs sparse-training epochs: pass sparse_train="):
        pruners.prune(model, method, 0.3, inputs)
    pruners.prune(model, method, 0.3, inputs, sparse_train=sparse_train)
    assert sparse_train.regularized == 2 * len(sparse_train.batches) and sparse_train.epochs == 2


def test_network_slimming_drives_batchnorm_scales_down(workload, inputs, calib) -> None:
    """bn_scale's regulariser really acts: scales end smaller than after the same training without it."""
    spy = SparseTrainSpy(calib)
    model = pruners.zoo.create_model("test_resnet", workload).eval()
    pruner = pruners.structured.channel_pruner(
        model, tp.importance.BNScaleImportance(), 0.3, inputs, pruner_type=tp.pruner.BNScalePruner, reg=0.05
    )
    plain = copy.deepcopy(model)
    spy(model, pruner.regularize, lambda: None)
    spy(plain, lambda m: None, lambda: None)

    def scale(m: torch.nn.Module) -> float:
        return sum(
            float(b.weight.detach().abs().sum()) for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)
        )

    assert scale(model) < scale(plain) - 0.01


def test_layer_magnitude_zeroes_the_smallest_half_of_every_layer(model, inputs) -> None:
    pruned, _ = pruners.prune(model, "magnitude", 0.5, inputs)
    for dense, layer in zip(prunable_layers(model), prunable_layers(pruned), strict=True):
        keep = layer.weight_mask.bool()
        assert int((~keep).sum()) == int(0.5 * layer.weight.numel())
        weights = dense.weight.detach().abs()
        assert weights[keep].min() >= weights[~keep].max()


def test_two_of_every_four_weights_go(model, inputs) -> None:
    dense = {id(m): m.weight.detach().clone() for m in prunable_layers(model)}
    pruned, _ = pruners.prune(model, "nm_2_4", 0.5, inputs)
    for layer in prunable_layers(pruned):
        mask = layer.weight_mask.reshape(len(layer.weight), -1)
        full = mask.shape[1] // 4 * 4
        groups = mask[:, :full].reshape(len(mask), -1, 4)
        assert (groups.sum(dim=2) == 2).all(), "exactly two of every four kept"
        assert (mask[:, full:] == 1).all(), "a row's remainder is kept"
    layer = prunable_layers(model)[1]
    weights = dense[id(layer)].reshape(len(layer.weight), -1)[:, :4].abs()
    kept = prunable_layers(pruned)[1].weight_mask.reshape(len(layer.weight), -1)[:, :4].bool()
    assert (
        weights[kept].reshape(-1, 2).min(dim=1).values >= weights[~kept].reshape(-1, 2).max(dim=1).values
    ).all()
    with pytest.raises(ValueError, match=r"method 'nm_2_4' takes ratio 0\.5 only, got 0\.3"):
        pruners.prune(model, "nm_2_4", 0.3, inputs)


def test_input_norms_are_per_input_channel() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    conv, linear = model[0], model[2]
    images = torch.randn(5, 2, 4, 4)
    norms = pruners.unstructured.input_norms(model, [conv, linear], [(images[:3], None), (images[3:], None)])
    assert torch.allclose(norms[conv], images.transpose(0, 1).reshape(2, -1).norm(dim=1))
    hidden = torch.flatten(conv(images), 1)
    assert torch.allclose(norms[linear], hidden.norm(dim=0), atol=1e-5)


def test_wanda_keeps_small_weights_on_loud_inputs() -> None:
    """Per output row, |w| x ||x||: a small weight on a loud input outranks a larger one on a quiet input."""
    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 1.0, 2.0, 3.0]]))
    norms = torch.tensor([100.0, 1.0, 1.0, 1.0])
    scores = layer.weight.abs() * pruners.unstructured._per_weight(layer, norms)
    pruners.unstructured.mask_lowest({layer: scores}, 0.25, scope="row")
    assert layer.weight_mask.tolist() == [[1.0, 0.0, 1.0, 1.0]]


def test_wanda_scores_grouped_convolutions_per_group() -> None:
    depthwise = torch.nn.Conv2d(4, 4, 3, groups=4)
    per_weight = pruners.unstructured._per_weight(depthwise, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert per_weight.shape == (4, 1, 1, 1)
    assert per_weight.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
