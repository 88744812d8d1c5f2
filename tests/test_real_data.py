"""Your own data and weights: ImageFolder workloads, checkpoints, the offline pretrained error, devices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import pruners
from pruners import recipes, zoo
from pruners.data import DataDirError
from pruners.folder import fingerprint, image_folder
from pruners.measure import TimingOptions, compare_latency, resolve_device, timed_forward
from pruners.models import DIGITS_STEPS_PER_EPOCH, FOLDER_STEPS, FOLDER_STEPS_RESOLUTION, folder_recipe
from pruners.settings import bench_settings
from pruners.spec import Recipes, Timing
from pruners.train import Recipe

from .conftest import TINY_RECIPE


def write_digits(root: Path, val_only: bool = False) -> Path:
    """scikit-learn's digits as PNGs in an ImageFolder (``train/`` and ``val/`` with the embedded
    workload's seeded split, or one val-only folder), 32 px greyscale saved as RGB."""
    bunch = load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(bunch.target)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    splits = {"": range(len(bunch.target))} if val_only else {"train": train_idx, "val": test_idx}
    for split, indices in splits.items():
        for i in indices:
            folder = root / split / str(bunch.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (bunch.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


def test_an_image_folder_is_read_through_the_models_data_config(digits_dir: Path) -> None:
    workload = image_folder(digits_dir, "test_resnet", img_size=32)
    assert (len(workload.train), len(workload.test), workload.num_classes) == (1437, 360, 10)
    image, label = workload.test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert workload.native and workload.img_size == 32 and "val/ held out" in workload.split
    native = image_folder(digits_dir, "test_resnet")
    assert native.img_size == 160 and native.name != workload.name, "test_resnet's own input size"


def test_labels_follow_the_class_folders(digits_dir: Path) -> None:
    workload = image_folder(digits_dir, "test_resnet", img_size=32)
    dataset = workload.test.dataset
    for index in (0, 100, 359):
        path, target = dataset.reader.samples[workload.test.indices[index]]
        assert Path(path).parent.name == str(target) == str(workload.test[index][1])


def test_caps_take_seeded_subsets(digits_dir: Path) -> None:
    capped = image_folder(digits_dir, "test_resnet", img_size=32, train_images=100, test_images=50)
    again = image_folder(digits_dir, "test_resnet", img_size=32, train_images=100, test_images=50)
    assert (len(capped.train), len(capped.test)) == (100, 50)
    assert capped.train.indices == again.train.indices and capped.name == again.name
    assert capped.name != image_folder(digits_dir, "test_resnet", img_size=32).name


def test_a_val_only_folder_is_split_into_recovery_and_held_out_parts(tmp_path: Path) -> None:
    workload = image_folder(write_digits(tmp_path, val_only=True), "test_resnet", img_size=32)
    train, test = set(workload.train.indices), set(workload.test.indices)
    assert not train & test and len(train | test) == 1797 and abs(len(train) - len(test)) <= 1
    assert workload.split.startswith("val-only folder: a seeded random 50 % held out")


def test_a_changed_folder_changes_the_cache_key(tmp_path: Path) -> None:
    root = write_digits(tmp_path)
    before, key = fingerprint(root), image_folder(root, "test_resnet", img_size=32).name
    extra = root / "train" / "3" / "extra.png"
    Image.new("RGB", (32, 32)).save(extra)
    assert fingerprint(root) != before
    assert image_folder(root, "test_resnet", img_size=32).name != key
    extra.unlink()
    assert fingerprint(root) == before


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist or is not a directory"),
        ("train_only", "has train/ but no val/"),
        ("empty", "holds no images in class sub-folders"),
        ("extra_class", "has classes that"),
    ],
)
def test_an_unusable_data_dir_is_one_clear_error(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "train_only":
        (root / "train" / "a").mkdir(parents=True)
    elif layout == "empty":
        (root / "a").mkdir(parents=True)
    elif layout == "extra_class":
        for split, name in (("train", "a"), ("val", "a"), ("val", "b")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / split / name / "x.png")
    with pytest.raises(DataDirError, match=message):
        image_folder(root, "test_resnet")


@pytest.mark.slow
def test_a_case_on_an_image_folder_lands_near_the_embedded_run(digits_dir: Path) -> None:
    recipe = Recipe(epochs=3, lr=2e-3)
    folder = image_folder(digits_dir, "test_resnet", img_size=32, hflip=0.0, crop_scale=0.5)
    result = pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            "l1",
            0.3,
            workload=folder,
            recipes=Recipes(baseline=recipe),
            timing=Timing(batch_size=8, rounds=2),
        )
    )
    info = result.summary()
    assert info["data"] == folder.split and info["weights"] == "trained here"
    assert info["macs_pruned"] < info["macs_dense"] and info["latency_img_size"] == 32
    embedded = zoo.load_baseline("test_resnet", pruners.digits(), recipe=recipe)
    assert info["dense_top1"] > embedded.top1 - 15, "the same digits, read from PNGs by timm"


@pytest.mark.slow
def test_a_checkpoint_is_the_dense_model_end_to_end(workload: pruners.Workload, tmp_path: Path) -> None:
    trained = zoo.load_baseline("test_resnet", workload, recipe=TINY_RECIPE, root=tmp_path)
    checkpoint = tmp_path / "test_resnet.pth"
    torch.save(trained.model.state_dict(), checkpoint)
    loaded = zoo.load_baseline("test_resnet", workload, recipe=TINY_RECIPE, checkpoint=checkpoint)
    assert loaded.top1 == pytest.approx(trained.top1) and loaded.train_seconds == 0.0
    assert loaded.path == checkpoint
    weights = pruners.Weights(checkpoint=checkpoint)
    result = pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            "l1",
            0.3,
            workload=workload,
            weights=weights,
            timing=Timing(batch_size=8, rounds=None),
        )
    )
    assert result.summary()["weights"] == f"checkpoint {checkpoint}"
    assert result.dense_top1 == pytest.approx(trained.top1)


def test_a_checkpoint_that_is_missing_or_does_not_fit_is_one_line(
    workload: pruners.Workload, tmp_path: Path
) -> None:
    with pytest.raises(
        pruners.WeightsUnavailableError, match=r"checkpoint .*nothing\.pth for test_resnet not"
    ):
        zoo.create_model("test_resnet", workload, checkpoint=tmp_path / "nothing.pth")
    other = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), other)
    with pytest.raises(
        pruners.WeightsUnavailableError, match="does not fit test_resnet with 10 classes"
    ) as err:
        zoo.create_model("test_resnet", workload, checkpoint=other)
    assert "\n" not in str(err.value)


def test_a_model_without_pretrained_weights_is_an_error_not_random_weights() -> None:
    with pytest.raises(
        pruners.WeightsUnavailableError, match="timm has no pretrained weights for botnet50ts_256"
    ):
        zoo.pretrained_source("botnet50ts_256")


@pytest.mark.slow
def test_offline_pretrained_is_one_line_and_a_non_zero_exit(
    bench: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = bench.runpytest_subprocess("--pretrained", "--models", "resnet18", "--methods", "l1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "ERROR: pretrained weights for resnet18 could not be had from the Hugging Face"
    )
    assert "pass --checkpoint PATH" in errors[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "1000"], "--batch-size 1000 is larger than the 360 held-out images"),
        (["--data-dir", "/no/such/dir"], "data dir /no/such/dir does not exist"),
        (["--train-images", "10"], "--train-images applies to --dataset and --data-dir"),
        (["--recovery-epochs", "0"], "--recovery-epochs must be a positive integer, got 0"),
        (["--recovery-lr", "0"], "--recovery-lr must be > 0, got 0"),
        (["--checkpoint", "x.pth", "--models", "resnet18,resnet18d"], "--checkpoint holds one model's"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--latency-size", "big"], "--latency-size is a pixel count or 'model'"),
    ],
)
def test_options_that_cannot_work_are_usage_errors_before_any_case(bench, argv, message) -> None:
    selection = [] if "--models" in argv else ["--models", "resnet18"]
    result = bench.runpytest(*argv, *selection, "--methods", "l1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


@pytest.mark.slow
def test_bench_runs_a_case_on_a_data_dir(bench: pytest.Pytester, digits_dir: Path, tmp_path: Path) -> None:
    """A folder with one corrupt image, left out as asked; the dense weights are a checkpoint, so that the
    folder's baseline recipe (hundreds of steps) is not trained here."""
    out, folder, checkpoint = tmp_path / "run.json", tmp_path / "digits", tmp_path / "dense.pth"
    shutil.copytree(digits_dir, folder)
    (folder / "train" / "0" / "broken.png").write_bytes(b"not a png")
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), checkpoint)
    options = [f"--data-dir={folder}", "--img-size", "32", "--hflip", "0", "--crop-scale", "0.5"]
    options += ["--skip-bad-images", f"--checkpoint={checkpoint}"]
    options += ["--train-images", "400", "--test-images", "200", f"--profile-dir={tmp_path / 'prof'}"]
    result = bench.runpytest(
        "--models", "test_resnet", "--methods", "l1", *options, "--recovery-epochs", "1",
        "--latency-rounds", "3", "--latency-size", "64", "--benchmark-json", out,
    )  # fmt: skip
    info = json.loads(out.read_text())["benchmarks"][0]["extra_info"]
    assert info["data"].endswith("400 train / 200 held-out images (1 unreadable left out)")
    assert info["unreadable_images"] == 1 and info["recovery_epochs"] == 1
    assert info["family"] == "folder" and info["criterion_gate"].startswith("not judged: no calibrated level")
    assert info["latency_img_size"] == 32 and info["latency_at_size_img_size"] == 64
    assert info["latency_at_size_dense_ms"] > 0 and info["latency_at_size_pruned_ms"] > 0
    profile = (tmp_path / "prof" / "test_resnet-l1-2x" / "profile.md").read_text()
    assert "| `aten::" in profile and " at 64 px after 2 warm-up" in profile, "profiled at --latency-size"
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1


def test_a_torchvision_model_prunes_and_a_plain_module_says_what_it_needs() -> None:
    inputs = torch.randn(2, 3, 32, 32)
    pruned, record = pruners.prune(torchvision.models.resnet18(num_classes=10), "l1", 0.3, inputs)
    assert pruned.fc.out_features == 10 and record.macs_after < record.macs_before
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    plain(inputs)
    with pytest.raises(pruners.HeadNotFoundError, match="give it a get_classifier"):
        pruners.prune(plain, "l1", 0.3, inputs)


def test_devices_resolve_or_say_why_not() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_timing_options_are_recorded_with_the_figures() -> None:
    dense = torchvision.models.resnet18(num_classes=10).eval()
    stats = compare_latency(
        dense, dense, torch.randn(2, 3, 32, 32), rounds=2, options=TimingOptions(channels_last=True, amp=True)
    )
    assert (stats.channels_last, stats.amp, stats.device, stats.img_size) == (True, True, "cpu", 32)
    assert dense.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_latency_is_synchronised_and_recorded(workload: pruners.Workload) -> None:
    result = pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            "l1",
            0.3,
            workload=workload,
            recipes=Recipes(baseline=TINY_RECIPE),
            weights=pruners.Weights(device="cuda"),
            timing=Timing(batch_size=8, rounds=5, options=TimingOptions(amp=True)),
        )
    )
    info = result.summary()
    assert info["device"].startswith("cuda") and info["latency_device"].startswith("cuda")
    assert info["latency_amp"] is True and info["latency_dense_ms"] > 0
    timed_forward(result.pruned, result.inputs)()


def test_settings_build_each_models_workload_once(digits_dir: Path) -> None:
    settings = bench_settings(
        ["test_resnet", "test_resnet"],
        {"batch_size": 8, "data_dir": str(digits_dir), "img_size": 32, "latency_size": "model"},
    )
    assert settings.workload("test_resnet") is settings.workload("test_resnet")
    assert settings.latency_size_for("resnet18") == 224


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100"])
def test_a_folder_baseline_is_a_number_of_steps_whatever_the_folders_size(model: str) -> None:
    digits_recipe = recipes.baseline_recipe(model)
    steps = {}
    for images in (400, 1347, 5000):
        for size in (64, 112, 224):
            recipe = folder_recipe(digits_recipe, images, size)
            steps[images, size] = recipe.epochs * (images // recipe.batch_size)
            assert recipe.lr == digits_recipe.lr and recipe.warmup_epochs >= 1
    least = max(FOLDER_STEPS, digits_recipe.epochs * DIGITS_STEPS_PER_EPOCH)
    for (images, size), count in steps.items():
        wanted = least * max(1, size / FOLDER_STEPS_RESOLUTION)
        assert abs(count - wanted) <= images // 64 / 2 + 1, (images, size, count, wanted)
    assert steps[1347, 224] > 1.9 * steps[1347, 112] and steps[1347, 64] == steps[1347, 112]


def test_the_folder_recipe_is_what_a_folder_workload_trains_with(digits_dir: Path) -> None:
    folder = image_folder(digits_dir, "test_resnet", img_size=32, train_images=400)
    recipe = recipes.baseline_recipe("resnet18", folder)
    assert (
        recipe
        == folder_recipe(recipes.baseline_recipe("resnet18"), 400, 32)
        != recipes.baseline_recipe("resnet18")
    )
    assert recipes.baseline_recipe("resnet18", pruners.digits()) == recipes.baseline_recipe("resnet18")
