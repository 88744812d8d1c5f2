"""The baseline cache: keyed, atomic, locked, and rebuilt when a file is corrupt."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

import pruners
from pruners import zoo

from .conftest import TINY_RECIPE


def _load(workload, root: Path, **kwargs) -> pruners.Baseline:
    return pruners.load_baseline("test_resnet", workload, recipe=TINY_RECIPE, root=root, **kwargs)


def test_baseline_is_trained_once_then_loaded(workload, tmp_path: Path, monkeypatch) -> None:
    first = _load(workload, tmp_path)
    assert first.path.is_file() and first.path.parent == tmp_path
    assert first.top1 > 30, "one epoch on digits must beat chance (10 %) by far"
    monkeypatch.setattr(zoo, "train", lambda *a, **k: pytest.fail("a cached baseline was retrained"))
    second = _load(workload, tmp_path)
    assert (second.top1, second.train_seconds) == (first.top1, first.train_seconds)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert pruners.measure.top1(second.model, workload.loader("test", 256)) == first.top1


def test_cache_key_separates_seed_and_recipe(workload, tmp_path: Path) -> None:
    base = _load(workload, tmp_path)
    other_seed = _load(workload, tmp_path, seed=1)
    assert other_seed.path != base.path
    assert TINY_RECIPE.key != pruners.train.Recipe(epochs=2, lr=2e-3).key
    assert "test_resnet" in base.path.name and workload.name in base.path.name


def test_a_truncated_cache_is_an_error_that_leaves_it_alone_until_deleted(workload, tmp_path: Path) -> None:
    path = _load(workload, tmp_path).path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(zoo.CorruptCacheError, match=f"the baseline cache {path}: .*delete the file") as err:
        _load(workload, tmp_path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == data[: len(data) // 2], "nothing was changed"
    path.unlink()
    rebuilt = _load(workload, tmp_path)
    assert rebuilt.top1 > 30
    assert torch.load(path, weights_only=True)["top1"] == rebuilt.top1


def test_a_cache_holding_another_model_is_an_error(workload, tmp_path: Path) -> None:
    path = _load(workload, tmp_path).path
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "model": "resnet50"}, path)
    with pytest.raises(zoo.CorruptCacheError, match="metadata does not match"):
        _load(workload, tmp_path)
    assert torch.load(path, weights_only=True)["model"] == "resnet50", "nothing was changed"
    del payload["top1"]
    torch.save(payload, path)
    with pytest.raises(zoo.CorruptCacheError, match="top-1 or training time missing"):
        _load(workload, tmp_path)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.pt"

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        zoo.save_atomic({"x": 1}, target)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_suggests_close_names(workload) -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet181'.*resnet18"):
        zoo.create_model("resnet181", workload)


def _train_in_child(root: str, out: str) -> None:
    os.environ["PRUNEBENCH_CACHE"] = root
    torch.set_num_threads(1)
    baseline = _load(pruners.digits(), Path(root))
    Path(out).write_text(repr(baseline.train_seconds))


@pytest.mark.slow
def test_parallel_workers_train_a_baseline_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [ctx.Process(target=_train_in_child, args=(str(tmp_path / "cache"), str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    seconds = {o.read_text() for o in outs}
    assert len(seconds) == 1, f"both workers trained: {seconds}"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
