"""Shared fixtures: a temporary baseline cache, the digits workload and tiny timm models."""

from __future__ import annotations

import pytest
import torch

import pruners
from pruners.train import Recipe

pytest_plugins = ["pytester"]

TINY_MODELS = ("test_resnet", "test_efficientnet", "test_vit")
TINY_RECIPE = Recipe(epochs=1, lr=2e-3)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's baseline cache."""
    monkeypatch.setenv(pruners.zoo.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def workload() -> pruners.Workload:
    return pruners.digits()


@pytest.fixture(scope="session")
def inputs(workload: pruners.Workload) -> torch.Tensor:
    return workload.test_batch(4)


@pytest.fixture(scope="session")
def calib(workload: pruners.Workload) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = next(iter(workload.loader("train", batch_size=8)))
    return [(images, labels)]
