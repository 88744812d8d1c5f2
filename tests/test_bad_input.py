"""Bad input is refused before any work: every bench option and CLI flag with a bad value gives one line
that names the problem and a non-zero exit, and no case, baseline or training starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm
import torch

import pruners
from pruners.cli import main
from pruners.data import DataDirError
from pruners.folder import image_folder
from pruners.pruning import NothingPrunedError, UnderPrunedError

from .conftest import bench_where_run_raises
from .test_real_data import write_digits


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training or case that starts fails the test: refusals must come first."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the input was refused")

    for target in ("pruners.zoo.train", "pruners.case.train", "pruners.commands.run_case"):
        monkeypatch.setattr(target, started)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Image folders that cannot be used as they are: one with a corrupt PNG, one too small to train."""
    root = tmp_path_factory.mktemp("bad")
    corrupt = write_digits(root / "corrupt")
    (corrupt / "train" / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    small = write_digits(root / "small")
    for digit, folder in enumerate(sorted((small / "train").iterdir())):
        for image in sorted(folder.iterdir())[2 if digit < 7 else 1 :]:
            image.unlink()
    return {"corrupt": corrupt, "small": small, "file": Path(shutil.copy(__file__, root / "a_file"))}


BENCH_REFUSALS = [
    (["--methods", "nm_2_4", "--ratios", "0.3"], "method 'nm_2_4' takes ratio 0.5 only, got 0.3"),
    (["--methods", "l1", "--ratios", "0.99"], "ratio 0.99 leaves every layer fewer than the 8 channels"),
    (["--methods", "l1", "--ratios", "1.5"], "pruning ratio must be in (0, 1)"),
    (["--methods", "l1", "--ratios", "half"], "pruning ratio must be a number in (0, 1), got 'half'"),
    (["--methods", "l1", "--speedups", "0.5"], "a MACs target must be > 1"),
    (["--methods", "l1", "--speedups", "2,2"], "MACs targets must be distinct"),
    (["--methods", "nope"], "no pruning method matches 'nope'"),
    (["--models", "resnet1"], "unknown timm model 'resnet1'"),
    (["--quick", "--full"], "choose one of --quick, --full"),
    (["--seeds", "0,0"], "seeds must be distinct, got '0,0'"),
    (["--seeds", "-1"], "seeds must be comma-separated non-negative integers, got '-1'"),
    (["--shard", "3/2"], "shard must be I/N with 1 <= I <= N"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--latency-rounds", "1"], "--latency-rounds must be >= 2, got 1"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--hflip", "2"], "--hflip is a probability in [0, 1], got 2.0"),
    (["--crop-scale", "0"], "--crop-scale is a fraction of the image in (0, 1], got 0.0"),
    (["--img-size", "0", "--dataset", "torch/mnist"], "--img-size must be a positive integer, got 0"),
    (
        ["--img-size", "4", "--data-dir={small}"],
        "--img-size 4 px is below what resnet18 can take: its last stage downsamples 32x",
    ),
    (["--dataset", "torch/imagenet"], "torch/imagenet"),
    (["--dataset-download"], "--dataset-download downloads a --dataset; name one"),
    (["--skip-bad-images"], "--skip-bad-images applies to --data-dir"),
    (["--pretrained", "--checkpoint", "w.pth"], "--pretrained and --checkpoint both name the dense weights"),
    (["--checkpoint", "/no/such.pth"], "/no/such.pth"),
    (["--data-dir", "/no/such/dir"], "data dir /no/such/dir does not exist"),
    (["--data-dir={file}"], "is not a directory"),
    (["--data-dir={small}"], "holds 17 images, fewer than one training batch of 64"),
    (["--data-dir={corrupt}"], "1 image(s) under {corrupt} cannot be read: {corrupt}/train/3/broken.png"),
    (["--profile-dir={file}/profiles"], "cannot be created: {file} is a file"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--latency-size", "big"], "--latency-size is a pixel count or 'model'"),
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
]


@pytest.mark.parametrize(("argv", "message"), BENCH_REFUSALS, ids=[" ".join(a) for a, _ in BENCH_REFUSALS])
def test_a_bad_bench_option_is_one_line_and_exit_4_before_any_case(
    bench: pytest.Pytester, folders: dict[str, Path], no_work: None, argv: list[str], message: str
) -> None:
    argv = [arg.format(**folders) for arg in argv]
    selection = [] if {"--models", "--methods", "--quick"} & set(argv) else ["--methods", "l1"]
    selection += [] if {"--models", "--quick"} & set(argv) else ["--models", "resnet18"]
    result = bench.runpytest(*argv, *selection)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and "Traceback" not in result.stderr.str(), errors
    assert message.format(**folders) in errors[0]


def test_an_option_of_the_wrong_type_is_pytests_usage_error(bench: pytest.Pytester, no_work: None) -> None:
    result = bench.runpytest("--batch-size", "many", "--models", "resnet18", "--methods", "l1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "argument --batch-size: invalid int value: 'many'" in result.stderr.str()


def test_an_unwritable_cache_is_a_usage_error(
    bench: pytest.Pytester, folders: dict[str, Path], no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pruners.files.CACHE_ENV, str(folders["file"] / "cache"))
    result = bench.runpytest("--models", "resnet18", "--methods", "l1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"cache folder ($PRUNEBENCH_CACHE, default ~/.cache/prunebench) {folders['file']}/cache cannot"
        in (result.stderr.str())
    )


def test_ratios_a_method_does_not_take_are_left_out_and_said(bench: pytest.Pytester) -> None:
    result = bench.runpytest(
        "--models", "resnet18", "--methods", "nm_2_4,magnitude", "--ratios", "0.3,0.5", "--collect-only"
    )
    result.stdout.fnmatch_lines(
        ["*left out resnet18-nm_2_4-0.3 (not applicable: method 'nm_2_4' takes ratio 0.5 only, got 0.3)*"]
    )
    assert "3 cases" in result.stdout.str()


CLI_REFUSALS = [
    (
        ["--method", "l1", "--ratio", "0.99", "--out", "x.pt"],
        "ratio 0.99 leaves every layer fewer than the 8",
    ),
    (["--method", "nm_2_4", "--ratio", "0.3"], "method 'nm_2_4' takes ratio 0.5 only, got 0.3"),
    (["--method", "l1", "--ratio", "1.5"], "pruning ratio must be in (0, 1)"),
    (["--method", "l1", "--speedup", "0.5"], "a MACs target must be > 1"),
    (["--method", "l1", "--ratio", "0.3", "--speedup", "2"], "--ratio and --speedup both set the cost"),
    (["--method", "magnitude", "--speedup", "2"], "magnitude"),
    (["--method", "nope"], "unknown pruning method 'nope'"),
    (["--method", "l1", "--model", "resnet1"], "unknown timm model 'resnet1'"),
    (["--method", "l1", "--out", "{file}/x.pt"], "--out {file}/x.pt cannot be created: {file} is a file"),
    (["--method", "l1", "--out", "{corrupt}"], "--out {corrupt} is a folder; name a file"),
    (["--method", "l1", "--data-dir", "/no/such/dir"], "data dir /no/such/dir does not exist"),
    (["--method", "l1", "--data-dir", "{small}"], "holds 17 images, fewer than one training batch of 64"),
    (["--method", "l1", "--data-dir", "{corrupt}"], "1 image(s) under {corrupt} cannot be read"),
    (["--method", "l1", "--skip-bad-images"], "--skip-bad-images applies to --data-dir"),
    (["--method", "l1", "--pretrained", "--checkpoint", "w.pth"], "--pretrained and --checkpoint both"),
    (["--method", "l1", "--device", "tpu"], "unknown device 'tpu'"),
    (["--method", "l1", "--runtime", "eager,eager"], "runtimes must be distinct"),
    (["--method", "l1", "--speedup", "80"], "no channel method can remove more than 66.27x"),
    (["--method", "l1", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--method", "l1", "--latency-rounds", "1"], "--latency-rounds must be >= 2, got 1"),
    (["--method", "l1", "--data-dir", "{small}", "--img-size", "4"], "--img-size 4 px is below"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_REFUSALS, ids=[" ".join(a) for a, _ in CLI_REFUSALS])
def test_a_bad_prune_flag_is_one_line_and_a_non_zero_exit_before_any_work(
    folders: dict[str, Path], no_work: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [arg.format(**folders) for arg in argv]
    model = [] if "--model" in argv else ["--model", "resnet18"]
    assert main(["prune", *model, *argv]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("prunebench prune: error: "), errors
    assert message.format(**folders) in errors[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "--model", "resnet18", "--method", "l1", "--out-dir", "{file}/p"], "--out-dir {file}/p"),
        (["report", "{file}", "--out-dir", "{file}/r"], "--out-dir {file}/r cannot be created"),
        (["sweep", "resnet18", "--out-dir", "{file}/s"], "--out-dir {file}/s cannot be created"),
        (["sweep", "resnet18", "--method", "nm_2_4", "--ratio", "0.3"], "takes ratio 0.5 only"),
        (["merge-benchmarks", "{file}", "--out", "{file}/m.json"], "--out {file}/m.json cannot be created"),
        (["merge-asv", "{file}", "--out", "{file}/asv"], "--out {file}/asv cannot be created"),
    ],
)
def test_every_subcommand_checks_where_it_writes_first(
    folders: dict[str, Path], no_work: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [arg.format(**folders) for arg in argv]
    assert main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"prunebench {argv[0]}: error: "), errors
    assert message.format(**folders) in errors[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["prune", "--model", "resnet18", "--method", "l1", "--ratio", "half"],
        ["prune", "--method", "l1"],
        ["sweep", "--jobs", "0"],
        ["merge-benchmarks", "a.json"],
    ],
)
def test_a_malformed_flag_is_a_usage_error(
    no_work: None, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_unreadable_images_are_counted_and_named_or_left_out_when_asked(folders: dict[str, Path]) -> None:
    with pytest.raises(
        DataDirError, match=r"1 image\(s\) under .* cannot be read: .*broken\.png; fix or remove"
    ):
        image_folder(folders["corrupt"], "test_resnet", img_size=32)
    kept = image_folder(folders["corrupt"], "test_resnet", img_size=32, skip_unreadable=True)
    assert kept.unreadable == 1 and len(kept.train) == 1437 and "(1 unreadable left out)" in kept.split
    clean = image_folder(folders["small"], "test_resnet", img_size=32)
    assert clean.unreadable == 0 and len(clean.train) == 17


def test_the_pruning_step_says_what_was_asked_what_was_possible_and_why() -> None:
    model, inputs = timm.create_model("resnet18", num_classes=10), torch.randn(2, 3, 32, 32)
    with pytest.raises(
        NothingPrunedError,
        match=r"'l1' at ratio 0\.99 pruned nothing: ratio 0\.99 leaves every layer fewer than the 8 channels "
        r".* ratios up to 0\.984 shrink the widest layers, up to 0\.875 all",
    ):
        pruners.prune(model, "l1", 0.99, inputs)
    with pytest.raises(
        UnderPrunedError,
        match=r"asked to remove 0\.97 of the channels and removed 0\.\d+ .*; 15 of 20 layers "
        r"\(those of up to 256 channels\) cannot shrink at ratio 0\.97",
    ):
        pruners.prune(model, "l1_global", 0.97, inputs)


def test_a_corrupt_cache_fails_its_case_in_one_line_without_a_traceback(pytester: pytest.Pytester) -> None:
    bench = bench_where_run_raises(
        pytester,
        'pruners.CorruptCacheError("the baseline cache /c/r.pt: UnpicklingError: bad; nothing was changed")',
    )
    result = bench.runpytest("--models", "resnet18", "--methods", "l1,random")
    result.assert_outcomes(failed=2)
    assert "Traceback" not in result.stdout.str() and "raise pruners" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*_ test_prune[[]resnet18-l1-3x[]] _*",
            "the baseline cache /c/r.pt: *nothing was changed",
            "*_ test_prune*",
        ]
    )
