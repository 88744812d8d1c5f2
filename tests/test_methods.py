"""Every registered method on tiny timm models: it prunes, the model still runs, the head is kept."""

from __future__ import annotations

import pytest
import torch

import pruners
from pruners.adapters import classifier_layers, prunable_layers

from .conftest import TINY_MODELS

RATIO = 0.5


@pytest.fixture(params=TINY_MODELS)
def model(request: pytest.FixtureRequest, workload: pruners.Workload) -> torch.nn.Module:
    torch.manual_seed(0)
    return pruners.zoo.create_model(request.param, workload).eval()


@pytest.mark.parametrize("method", pruners.list_methods())
def test_method_prunes_and_keeps_the_model_working(method: str, model, inputs, calib) -> None:
    spec = pruners.get_method(method)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    head = classifier_layers(model)[0]

    pruned, record = pruners.prune(model, method, RATIO, inputs, calib=calib)

    assert all(torch.equal(v, dense_state[k]) for k, v in model.state_dict().items()), "dense model changed"
    with torch.no_grad():
        assert pruned(inputs).shape == (len(inputs), 10)
    assert classifier_layers(pruned)[0].out_features == head.out_features == 10
    if spec.kind == "structured":
        assert record.macs_after < record.macs_before
        assert record.params_after < record.params_before
        assert record.channel_ratio > 0.2
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
def test_structured_methods_remove_about_what_they_are_asked(method: str, model, inputs, calib) -> None:
    _, record = pruners.prune(model, method, 0.3, inputs, calib=calib)
    assert record.channel_ratio >= pruners.pruning.MIN_ACHIEVED_FRACTION * 0.3
