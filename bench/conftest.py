"""Options and fixtures of the PruneBench matrix; cases come from :func:`pruners.matrix.select_cases`."""

from __future__ import annotations

import os
import sys

import pytest
import torch

import pruners
from pruners.files import check_writable
from pruners.history import first_run_without_baseline
from pruners.matrix import (
    DEFAULT_MODELS,
    Case,
    choose_tier,
    left_out,
    parse_seeds,
    parse_shard,
    parse_speedups,
    select_cases,
    split_csv,
)
from pruners.progress import show_progress
from pruners.report import ReportRow, convergence_lines, equal_cost_tables
from pruners.settings import BenchSettings, bench_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prunebench")
    group.addoption(
        "--models",
        help="comma-separated timm models, or wildcards over pruners.models.MODELS such as '*' "
        f"(default: {','.join(DEFAULT_MODELS)})",
    )
    group.addoption("--methods", help="comma-separated method names or wildcards (default: all registered)")
    group.addoption("--ratios", help="comma-separated pruning ratios in (0, 1) (default: each method's own)")
    group.addoption(
        "--speedup",
        "--speedups",
        dest="speedups",
        help="MACs targets, e.g. 2 or 1.5,2,3: each structured method is pruned until dense / pruned MACs "
        "lands within 2%% of each (equal cost); mask methods keep --ratios",
    )
    group.addoption("--quick", action="store_true", help="smoke tier: 6 cases on resnet18 and mobilenetv3")
    group.addoption("--full", action="store_true", help="whole matrix: every method on every default model")
    group.addoption("--batch-size", type=int, default=64, help="images per forward for MACs and latency")
    group.addoption("--threads", type=int, help="torch threads (default: all cores; 1 per xdist worker)")
    group.addoption("--latency-rounds", type=int, default=20, help="timed rounds per model and case")
    group.addoption(
        "--seeds",
        default="0",
        help="comma-separated training seeds; each case runs once per seed and is judged on the mean drop",
    )
    group.addoption(
        "--shard",
        help="I/N: run only shard I of N (round-robin over the selected cases), to split across machines",
    )
    data = parser.getgroup("prunebench data, weights and device")
    data.addoption(
        "--data-dir",
        help="your labelled images: an ImageFolder with train/ and val/, or a val-only folder of classes "
        "(half held out, half for training and recovery); read at each model's own timm data config",
    )
    data.addoption(
        "--dataset",
        help="a dataset named the timm way: torch/fashion_mnist (offline from Debian's "
        "dataset-fashion-mnist), torch/mnist, torch/kmnist, torch/cifar10, torch/cifar100; --data-dir is "
        "then its torchvision root",
    )
    data.addoption(
        "--dataset-download", action="store_true", help="let torchvision download --dataset (network needed)"
    )
    data.addoption(
        "--img-size", type=int, help="input size for --data-dir (default: the model's own) or --dataset (32)"
    )
    data.addoption("--train-images", type=int, help="cap the training images of --dataset / --data-dir")
    data.addoption("--test-images", type=int, help="cap the held-out images of --dataset / --data-dir")
    data.addoption("--hflip", type=float, default=0.5, help="horizontal flip probability when training")
    data.addoption(
        "--crop-scale", type=float, help="smallest random-resized-crop area when training (timm's: 0.08)"
    )
    data.addoption(
        "--skip-bad-images",
        action="store_true",
        help="leave out the unreadable images of --data-dir (counted in extra_info) instead of stopping",
    )
    data.addoption("--recovery-epochs", type=int, help="recovery fine-tune epochs (default: each recipe's)")
    data.addoption(
        "--pretrained", action="store_true", help="timm's pretrained weights as the dense model (no training)"
    )
    data.addoption("--checkpoint", help="a local checkpoint of the one --models model, loaded the timm way")
    data.addoption("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    data.addoption("--channels-last", action="store_true", help="time latency in channels_last memory format")
    data.addoption("--amp", action="store_true", help="time latency under autocast (fp16 CUDA, bf16 CPU)")
    data.addoption(
        "--profile-dir",
        help="after each case's timed rounds, torch.profiler its dense and pruned model into DIR/CASE "
        "(profile.md, Chrome traces)",
    )
    data.addoption(
        "--runtime",
        "--runtimes",
        dest="runtimes",
        help="also time dense and pruned in these runtimes: eager, compile (torch.compile, inductor), "
        "onnxruntime (ONNX Runtime's CPU provider on the exported model); comma-separated",
    )
    data.addoption(
        "--latency-size",
        help="also time dense and pruned at this input size, or 'model' for each model's pretrained size",
    )


def pytest_configure(config: pytest.Config) -> None:
    models, methods = split_csv(config.option.models), split_csv(config.option.methods)
    try:
        tier = choose_tier(config.option.quick, config.option.full, bool(models or methods))
        matrix, config.prunebench_cases = select_cases(
            models,
            methods,
            split_csv(config.option.ratios),
            tier=tier,
            shard_spec=config.option.shard,
            speedups=parse_speedups(config.option.speedups),
        )
        config.prunebench_left_out = left_out(
            models,
            methods,
            tier,
            split_csv(config.option.ratios),
            parse_speedups(config.option.speedups),
        )
        config.prunebench_matrix_size = len(matrix)
        config.prunebench_seeds = parse_seeds(config.option.seeds)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    if config.option.batch_size < 1 or config.option.latency_rounds < 2:
        raise pytest.UsageError("--batch-size must be >= 1 and --latency-rounds >= 2")
    if config.option.threads is not None and config.option.threads < 1:
        raise pytest.UsageError(f"--threads must be a positive integer, got {config.option.threads}")
    option = config.option
    try:
        config.prunebench_settings = bench_settings(
            [case.model for case in config.prunebench_cases],
            batch_size=option.batch_size,
            data_dir=option.data_dir,
            dataset=option.dataset,
            download=option.dataset_download,
            img_size=option.img_size,
            train_images=option.train_images,
            test_images=option.test_images,
            hflip=option.hflip,
            crop_scale=option.crop_scale,
            skip_bad_images=option.skip_bad_images,
            recovery_epochs=option.recovery_epochs,
            pretrained=option.pretrained,
            checkpoint=option.checkpoint,
            device=option.device,
            channels_last=option.channels_last,
            amp=option.amp,
            latency_size=option.latency_size,
            runtimes=split_csv(option.runtimes),
        )
        if option.profile_dir:
            check_writable(option.profile_dir, "--profile-dir", folder=True)
    except (ValueError, pruners.WeightsUnavailableError) as err:
        raise pytest.UsageError(str(err)) from None
    config.prunebench_progress = TerminalStream(config)
    show_progress(config.prunebench_progress, progress_mode(config))
    config.prunebench_rows = []
    config.prunebench_dense = DenseRecords()
    config.pluginmanager.register(config.prunebench_dense, "prunebench-dense")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    torch.set_num_threads(config.option.threads or (1 if worker else os.cpu_count() or 1))


def pytest_unconfigure(config: pytest.Config) -> None:
    show_progress()


def pytest_report_header(config: pytest.Config) -> str:
    index, count = parse_shard(config.option.shard)
    part = f", shard {index}/{count} of {config.prunebench_matrix_size}" if count > 1 else ""
    skipped = (
        f", {len(config.prunebench_left_out)} pairs not applicable" if config.prunebench_left_out else ""
    )
    return f"prunebench: {len(config.prunebench_cases)} cases{part}{skipped}, seeds {config.prunebench_seeds}"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.prunebench_first_run = first_run_without_baseline(session.config)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [
        f"prunebench: left out {model}-{method} (not applicable: {reason})"
        for model, method, reason in config.prunebench_left_out
    ]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if config.prunebench_first_run:
        terminalreporter.write_line(config.prunebench_first_run, yellow=True)
    for line in convergence_lines(config.prunebench_dense.records):
        terminalreporter.write_line(line, yellow=True)
    tables = equal_cost_tables(config.prunebench_rows)
    if tables:
        terminalreporter.write_sep("=", "prunebench: methods at equal cost")
        terminalreporter.write_line(tables)


def progress_mode(config: pytest.Config) -> str:
    """Live bars on a terminal, a line per epoch in CI logs and other files, nothing under ``-q -q`` or in an
    xdist worker (whose output the controller does not show)."""
    if config.option.verbose <= -2 or hasattr(config, "workerinput"):
        return "off"
    return "bar" if os.isatty(2) and not os.environ.get("CI") else "epochs"


class TerminalStream:
    """A file for progress output that writes past pytest's capture, onto the real stderr."""

    def __init__(self, config: pytest.Config) -> None:
        self.capture = config.pluginmanager.getplugin("capturemanager")

    def write(self, text: str) -> int:
        with self.capture.global_and_fixture_disabled():
            return sys.stderr.write(text)

    def flush(self) -> None:
        with self.capture.global_and_fixture_disabled():
            sys.stderr.flush()


class DenseRecords:
    """Each case's dense baseline and control figures, collected from its report so that xdist workers'
    cases count too (user properties travel with the report to the controller)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.records += [value for name, value in report.user_properties if name == "prunebench_dense"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = metafunc.config.prunebench_cases
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> BenchSettings:
    return request.config.prunebench_settings


@pytest.fixture
def workload(case: Case, settings: BenchSettings) -> pruners.Workload:
    return settings.workload(case.model)


@pytest.fixture
def opts(request: pytest.FixtureRequest) -> pytest.Config:
    return request.config.option


@pytest.fixture
def seeds(request: pytest.FixtureRequest) -> list[int]:
    return request.config.prunebench_seeds


@pytest.fixture
def rows(request: pytest.FixtureRequest) -> list[ReportRow]:
    """The timed cases of this process, for the equal-cost tables of the terminal summary."""
    return request.config.prunebench_rows
