from __future__ import annotations

import math

import pytest
import torch
import torch_pruning as tp
from torch import nn

import pruners
from pruners import registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Methods registered inside a test vanish after it."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def test_the_starting_methods_are_registered() -> None:
    assert {"random", "l1", "global_magnitude"} <= set(pruners.list_methods())
    assert pruners.list_methods("*l1*") == ["l1", "l1_global"]
    assert pruners.list_methods(["l1", "glob*"]) == ["global_magnitude", "l1"]
    assert "global_magnitude" not in pruners.list_methods(kind="structured")
    assert pruners.list_methods(kind="unstructured") == sorted(
        n for n in pruners.list_methods() if pruners.get_method(n).kind == "unstructured"
    )


def test_specs_describe_themselves() -> None:
    for name in pruners.list_methods():
        spec = pruners.get_method(name)
        assert spec.name == name
        assert spec.kind in ("structured", "unstructured")
        assert spec.tolerance >= 0
        assert 0 < spec.default_ratio < 1
        assert spec.doc, f"{name} needs a docstring giving the idea and its paper"


def test_unknown_method_lists_the_available_ones() -> None:
    with pytest.raises(KeyError, match=r"available: .*l1"):
        pruners.get_method("l2_typo")


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, math.nan, "abc", None])
def test_invalid_ratio_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="ratio"):
        pruners.check_ratio(bad)


def test_prune_rejects_invalid_ratio_before_touching_the_model(inputs: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match="ratio must be in"):
        pruners.prune(model, "l1", 1.2, inputs)


@pytest.mark.usefixtures("scratch_registry")
def test_register_validates_its_arguments() -> None:
    def noop(model, ratio, example_inputs, calib):
        """Does nothing."""

    with pytest.raises(ValueError, match="kind"):
        pruners.register_method("x", kind="sideways", tolerance=1, default_ratio=0.5)(noop)
    with pytest.raises(ValueError, match="needs"):
        pruners.register_method("x", kind="structured", tolerance=1, default_ratio=0.5, needs=("oracle",))
    with pytest.raises(ValueError, match="tolerance"):
        pruners.register_method("x", kind="structured", tolerance=-1, default_ratio=0.5)
    with pytest.raises(ValueError, match="unknown requires"):
        pruners.register_method("x", kind="structured", tolerance=1, default_ratio=0.5, requires=("wings",))
    with pytest.raises(ValueError, match="unit must be one of"):
        pruners.register_method("x", kind="structured", tolerance=1, default_ratio=0.5, unit="bits")
    with pytest.raises(ValueError, match="already registered"):
        pruners.register_method("l1", kind="structured", tolerance=1, default_ratio=0.5)(noop)


@pytest.mark.usefixtures("scratch_registry")
def test_a_method_that_prunes_nothing_is_an_error(inputs: torch.Tensor) -> None:
    @pruners.register_method("noop", kind="structured", tolerance=1, default_ratio=0.5)
    def noop(model, ratio, example_inputs, calib):
        """Prunes nothing."""

    model = timm_model("test_resnet")
    with pytest.raises(pruners.NothingPrunedError, match=r"noop.*pruned nothing"):
        pruners.prune(model, "noop", 0.5, inputs)


@pytest.mark.usefixtures("scratch_registry")
def test_a_structured_method_that_prunes_far_less_than_asked_is_an_error(inputs: torch.Tensor) -> None:
    @pruners.register_method("timid", kind="structured", tolerance=1, default_ratio=0.5)
    def timid(model, ratio, example_inputs, calib):
        """Asks the pruner for a tenth of ``ratio``."""
        pruners.structured.prune_channels(model, tp.importance.GroupMagnitudeImportance(), ratio / 10, inputs)

    message = r"'timid' was asked to remove 0.5 of the channels and removed 0\.1\d\d \(MACs"
    with pytest.raises(pruners.UnderPrunedError, match=message):
        pruners.prune(timm_model("test_resnet"), "timid", 0.5, inputs)


@pytest.mark.parametrize("method", [m for m in pruners.list_methods() if pruners.get_method(m).needs])
def test_every_method_that_needs_data_says_so_without_it(method: str, inputs: torch.Tensor) -> None:
    what = "sparse-training epochs" if "train" in pruners.get_method(method).needs else "calibration batches"
    with pytest.raises(ValueError, match=rf"method '{method}' needs {what}"):
        pruners.prune(timm_model("test_resnet"), method, 0.5, inputs)


@pytest.mark.usefixtures("scratch_registry")
def test_a_method_that_needs_calibration_gets_it(inputs: torch.Tensor) -> None:
    @pruners.register_method("needy", kind="unstructured", tolerance=1, default_ratio=0.5, needs=("calib",))
    def needy(model, ratio, example_inputs, calib):
        """Needs calibration batches."""

    with pytest.raises(ValueError, match=r"needy.*calib"):
        pruners.prune(timm_model("test_resnet"), "needy", 0.5, inputs)


@pytest.mark.usefixtures("scratch_registry")
def test_a_method_gets_only_what_it_declared(inputs: torch.Tensor, calib) -> None:
    seen = {}

    @pruners.register_method("modest", kind="unstructured", tolerance=1, default_ratio=0.5)
    def modest(model, ratio, example_inputs, data):
        """Records what it was handed, then masks by magnitude."""
        seen["modest"] = data
        pruners.unstructured.global_magnitude(model, ratio, example_inputs, data)

    @pruners.register_method("needy", kind="unstructured", tolerance=1, default_ratio=0.5, needs=("calib",))
    def needy(model, ratio, example_inputs, data):
        """Records what it was handed, then masks by magnitude."""
        seen["needy"] = data
        pruners.unstructured.global_magnitude(model, ratio, example_inputs, data)

    def sparse_train(model, regularize, on_epoch):
        raise AssertionError("no method here asked for sparse training")

    for name in ("modest", "needy"):
        pruners.prune(timm_model("test_resnet"), name, 0.5, inputs, calib=calib, sparse_train=sparse_train)
    assert seen["modest"] == pruners.MethodData(None, None)
    assert seen["needy"].calib is calib and seen["needy"].sparse_train is None


def timm_model(name: str) -> nn.Module:
    return pruners.zoo.create_model(name, pruners.digits())
