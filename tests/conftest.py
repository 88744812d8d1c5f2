"""Shared fixtures: a temporary baseline cache, the digits workload and tiny timm models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp

import pruners
from pruners import sparse_training, structured
from pruners.train import Recipe

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ("test_resnet", "test_efficientnet", "test_vit")
TINY_RECIPE = Recipe(epochs=1, lr=2e-3)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden decisions of the cases run (pruners/reference/golden.json) instead of "
        "checking them; review the diff",
    )


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's baseline cache; a bench run inside a test (pytester) is a run of its own,
    not an xdist worker, even when this suite runs under ``-n`` (pytest-benchmark would not save its JSON)."""
    monkeypatch.setenv(pruners.files.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


@pytest.fixture
def bench(pytester: pytest.Pytester) -> pytest.Pytester:
    """A directory holding the bench's conftest and test file, to run ``pytest bench/`` inside a test."""
    pytester.makeconftest((ROOT / "bench" / "conftest.py").read_text())
    pytester.makepyfile(test_matrix=(ROOT / "bench" / "test_matrix.py").read_text())
    return pytester


RUN_RAISES = """

import pytest

import pruners
import pruners.bench


def _run_raises(*args, **kwargs):
    raise {error}


@pytest.fixture(autouse=True)
def _every_case_raises(monkeypatch):
    monkeypatch.setattr(pruners.bench, "run_case", _run_raises)
"""


def bench_where_run_raises(pytester: pytest.Pytester, error: str) -> pytest.Pytester:
    """The bench in ``pytester`` with ``pruners.bench.run_case`` replaced by one that raises ``error``
    (source text), to see what the bench makes of an error a case can meet."""
    pytester.makeconftest((ROOT / "bench" / "conftest.py").read_text() + RUN_RAISES.format(error=error))
    pytester.makepyfile(test_matrix=(ROOT / "bench" / "test_matrix.py").read_text())
    return pytester


def random_importance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every channel pruner ranks with Torch-Pruning's random importance instead of its criterion's."""
    build = structured.channel_pruner

    def with_random(model, importance, *args, **kwargs):
        return build(model, tp.importance.RandomImportance(), *args, **kwargs)

    monkeypatch.setattr(structured, "channel_pruner", with_random)
    monkeypatch.setattr(sparse_training, "channel_pruner", with_random)


@pytest.fixture(scope="session")
def workload() -> pruners.Workload:
    return pruners.digits()


@pytest.fixture(scope="session")
def inputs(workload: pruners.Workload) -> torch.Tensor:
    return workload.test_batch(4)


@pytest.fixture
def sparse_train(calib: list[tuple[torch.Tensor, torch.Tensor]]) -> SparseTrainSpy:
    return SparseTrainSpy(calib)


class SparseTrainSpy:
    """A two-epoch sparse training on the calibration batches that counts what the method asked of it."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.regularized, self.epochs = batches, 0, 0

    def __call__(self, model: torch.nn.Module, regularize, on_epoch) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        for _ in range(2):
            for images, labels in self.batches:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                regularize(model)
                self.regularized += 1
                optimizer.step()
            on_epoch()
            self.epochs += 1
        model.eval()


@pytest.fixture(scope="session")
def calib(workload: pruners.Workload) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = next(iter(workload.loader("train", batch_size=8)))
    return [(images, labels)]
