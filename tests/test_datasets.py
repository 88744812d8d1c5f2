"""Datasets named the timm way: Fashion-MNIST offline from Debian's package, CIFAR in its own format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import pruners
from pruners import datasets as data
from pruners.datasets import DatasetUnavailableError, fashion_mnist_hint, torch_dataset
from pruners.recipes import baseline_recipe
from pruners.settings import bench_settings

ROOT = Path(__file__).resolve().parents[1]
HAS_FASHION = all((data.DEBIAN_FASHION_MNIST / f"{n}.gz").is_file() for n in data.FASHION_MNIST_FILES)
needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason=fashion_mnist_hint(str(data.DEBIAN_FASHION_MNIST)))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> pruners.Workload:
    if not HAS_FASHION:
        pytest.skip(fashion_mnist_hint(str(data.DEBIAN_FASHION_MNIST)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pruners.files.CACHE_ENV, str(tmp_path_factory.mktemp("fashion-cache")))
        workload = torch_dataset("torch/fashion_mnist")
        raw = pruners.files.cache_dir() / "datasets" / "FashionMNIST" / "raw"
        assert sorted(p.name for p in raw.iterdir()) == sorted(data.FASHION_MNIST_FILES)
        return workload


@needs_fashion
def test_fashion_mnist_holds_out_all_ten_thousand_test_images(fashion: pruners.Workload) -> None:
    assert len(fashion.test) == 10_000 and len(fashion.train) == 60_000
    assert len(fashion.recovery) == data.RECOVERY_IMAGES and fashion.num_classes == 10
    assert fashion.family == "fashion_mnist" and "10000 test images held out" in fashion.split
    image, label = fashion.test[0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2]) and label == 9
    labels = torch.tensor([fashion.test[i][1] for i in range(len(fashion.test))])
    assert torch.bincount(labels).tolist() == [1000] * 10
    batch = torch.stack([fashion.test[i][0] for i in range(512)])
    assert abs(batch.mean().item()) < 0.3 and 0.7 < batch.std().item() < 1.3


@needs_fashion
def test_fashion_mnist_is_normalised_alike_at_one_thread_and_at_two(fashion: pruners.Workload) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        again = torch_dataset("torch/fashion_mnist")
    finally:
        torch.set_num_threads(before)
    normalize, expected = again.test.prepare.transforms[-1], fashion.test.prepare.transforms[-1]
    assert (normalize.mean, normalize.std) == (expected.mean, expected.std)
    assert torch.equal(again.test_batch(8), fashion.test_batch(8))


@needs_fashion
@pytest.mark.parametrize("img_size", [32, 64])
def test_prepared_once_each_image_is_what_the_per_image_transform_gives(img_size: int) -> None:
    fashion = torch_dataset("torch/fashion_mnist", img_size=img_size, train_images=600, test_images=300)
    mean, std = fashion.test.prepare.transforms[-1].mean, fashion.test.prepare.transforms[-1].std
    per_image = [
        torchvision.transforms.v2.ToDtype(torch.float32, scale=True),
        torchvision.transforms.v2.Resize((img_size, img_size), antialias=True),
        torchvision.transforms.v2.Lambda(lambda x: x.expand(3, -1, -1)),
    ]
    augment = [
        torchvision.transforms.v2.RandomCrop(img_size, padding=img_size // 16),
        torchvision.transforms.v2.RandomHorizontalFlip(),
    ]
    normalize = torchvision.transforms.v2.Normalize(mean, std)
    test_tf = torchvision.transforms.v2.Compose([*per_image, normalize])
    train_tf = torchvision.transforms.v2.Compose([*per_image, *augment, normalize])
    held = fashion.test
    assert all(torch.equal(held[i][0], test_tf(held.images[i])) for i in range(len(held)))
    for split in (fashion.train, fashion.recovery):
        torch.manual_seed(3)
        served = [split[i][0] for i in range(len(split))]
        torch.manual_seed(3)
        expected = [train_tf(split.images[i]) for i in range(len(split))]
        assert all(torch.equal(a, b) for a, b in zip(served, expected, strict=True))
    assert held.prepared() is held.prepared() and held.prepared().shape == (300, 3, img_size, img_size)


@needs_fashion
def test_fashion_mnist_recovery_subset_is_seeded_and_comes_from_the_train_split(
    fashion: pruners.Workload,
) -> None:
    train = {image.numpy().tobytes() for image in fashion.train.images}
    assert all(image.numpy().tobytes() in train for image in fashion.recovery.images[:500])
    again = torch_dataset("torch/fashion_mnist", test_images=500)
    assert torch.equal(again.recovery.labels, fashion.recovery.labels) and len(again.test) == 500
    first = next(iter(fashion.loader("recovery", 64, seed=1)))[1]
    assert torch.equal(first, next(iter(fashion.loader("recovery", 64, seed=1)))[1])


def test_without_the_files_fashion_mnist_is_one_line_that_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv(pruners.files.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist") as err:
        torch_dataset("torch/fashion_mnist")
    assert "\n" not in str(err.value) and "`dataset_download`" in str(err.value)
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        torch_dataset("torch/fashion_mnist", tmp_path)


def test_the_bench_stops_with_that_line_when_the_root_lacks_the_files(
    bench: pytest.Pytester, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = bench.runpytest(
        bench.path, "--collect-only", "-q", "--dataset", "torch/fashion_mnist", "--data-dir", str(empty),
        "--models", "resnet18", "--methods", "l1",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert "apt-get install dataset-fashion-mnist" in result.stderr.str()


def _write_fake_cifar10(root: Path, per_batch: int = 40) -> None:
    """CIFAR-10's own on-disk format: pickled batches of 3072-byte rows, labels and a meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [int(i % 10) for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar10_is_read_from_its_own_format_through_timm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_cifar10(tmp_path)
    # torchvision checks the md5 of the real files, which a fake cannot match: only that check is stubbed.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    workload = torch_dataset("torch/cifar10", tmp_path, train_images=150)
    assert len(workload.train) == 150 and len(workload.test) == 40 and workload.num_classes == 10
    assert workload.test[0][0].shape == (3, 32, 32) and workload.family == "cifar10"
    assert workload.name == "cifar1032-s0-tr150"


def test_a_named_dataset_without_files_or_download_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="`data_dir` ROOT"):
        torch_dataset("torch/cifar10")
    with pytest.raises(DatasetUnavailableError, match="`dataset_download`"):
        torch_dataset("torch/cifar100", tmp_path)
    with pytest.raises(pruners.DataDirError, match="unknown `dataset` 'torch/svhn'"):
        torch_dataset("torch/svhn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "torch/svhn"}, "unknown `dataset` 'torch/svhn'"),
        ({"dataset_download": True}, "`dataset_download` downloads a `dataset`"),
        ({"train_images": 100}, "applies to `dataset` and `data_dir`"),
    ],
)
def test_bench_settings_check_the_dataset_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench_settings(["resnet18"], {"batch_size": 8, **kwargs})


def test_a_split_smaller_than_one_batch_is_refused(workload: pruners.Workload) -> None:
    with pytest.raises(ValueError, match="fewer than one batch of 4096"):
        workload.loader("train", 4096)


def test_fashion_mnist_baselines_have_their_own_recipes() -> None:
    for model in ("resnet18", "mobilenetv3_small_100", "vit_tiny_patch16_224"):
        assert baseline_recipe(model, "fashion_mnist") != baseline_recipe(model)
    assert baseline_recipe("resnet18d", "fashion_mnist") == baseline_recipe("resnet18d")


@needs_fashion
def test_a_model_runs_a_dataset_at_its_measured_size_unless_the_run_names_one() -> None:
    size = pruners.models.get_model("mobilenetv3_small_100").img_size_for("fashion_mnist")
    assert size is not None and size != pruners.data.DEFAULT_IMG_SIZE
    models = ["resnet18", "mobilenetv3_small_100"]
    settings = bench_settings(models, {"dataset": "torch/fashion_mnist", "test_images": 500})
    mobile, resnet = (settings.workload(m) for m in reversed(models))
    assert (mobile.img_size, mobile.test[0][0].shape[-1], mobile.name) == (
        size,
        size,
        f"fashion_mnist{size}-s0-te500",
    )
    assert resnet.img_size == resnet.test[0][0].shape[-1] == pruners.data.DEFAULT_IMG_SIZE
    assert settings.workload("resnet18") is resnet, "a workload is built once per size"
    named = bench_settings(models, {"dataset": "torch/fashion_mnist", "test_images": 500, "img_size": 48})
    assert named.workload("mobilenetv3_small_100") is named.workload("resnet18")
    assert named.workload("resnet18").img_size == 48
