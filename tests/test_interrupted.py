"""An interrupted run loses nothing: a process killed while it trains a baseline leaves no file a later run
reads as valid, and two processes that start at once on one cache train each baseline once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pruners.files import write_atomic

# Trains (or loads) test_resnet's baseline on the digits into the cache folder argv[1], with argv[2] epochs,
# printing a line per epoch to stderr when it trains. With argv[3] == "unlocked", the cache's file lock is
# replaced by a no-op, to show what the race test catches without it.
TRAIN = """
import contextlib, sys, torch
from pathlib import Path
import pruners
from pruners import zoo
from pruners.progress import show_progress
from pruners.train import Recipe
torch.set_num_threads(1)
show_progress(sys.stderr, "epochs")
if sys.argv[3] == "unlocked":
    zoo.FileLock = lambda path: contextlib.nullcontext()
recipe = Recipe(epochs=int(sys.argv[2]), lr=2e-3)
baseline = zoo.load_baseline("test_resnet", pruners.digits(), recipe=recipe, root=Path(sys.argv[1]))
print(f"top1 {baseline.top1:.4f}")
"""


def start(cache: Path, epochs: int, lock: str = "locked") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(cache), str(epochs), lock],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_baseline_killed_while_training_leaves_nothing_and_is_trained_again(tmp_path: Path) -> None:
    first = start(tmp_path, epochs=12)
    for line in first.stderr:
        if "baseline test_resnet: epoch 1/12" in line:
            break
    else:
        pytest.fail(f"the first run never reported an epoch: {first.communicate()}")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not list(tmp_path.glob("*.pt")), "a killed run left a baseline file"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"], "a killed run left a temporary file"
    second = start(tmp_path, epochs=12)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert "baseline test_resnet: epoch 12/12" in err, "the next run trained the baseline again"
    assert out.startswith("top1 ") and len(list(tmp_path.glob("*.pt"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("lock", "trainers"), [("locked", 1), ("unlocked", 2)])
def test_two_runs_started_at_once_train_a_baseline_once(tmp_path: Path, lock: str, trainers: int) -> None:
    """Without the file lock both runs train, which shows the race is real: both start before either ends."""
    runs = [start(tmp_path, epochs=4, lock=lock) for _ in range(2)]
    results = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    trained = [err for _, err in results if "baseline test_resnet: epoch 4/4" in err]
    assert len(trained) == trainers
    if lock == "locked":
        assert results[0][0] == results[1][0], "both runs score the one baseline"


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    # Ctrl-C raises KeyboardInterrupt, even where this process was started with SIGINT ignored (a shell's
    # background job).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    path = tmp_path / "baseline.pt"
    path.write_bytes(b"the old baseline")

    def half_then_interrupt(f) -> None:
        f.write(b"half of a new one")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)

    try:
        with pytest.raises(KeyboardInterrupt):
            write_atomic(path, half_then_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert path.read_bytes() == b"the old baseline"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.pt"]


@pytest.mark.slow
@pytest.mark.parametrize(("quiet", "shown"), [([], True), (["-q", "-q"], False)])
def test_training_under_the_bench_shows_a_line_per_epoch_past_the_capture(
    bench: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: list[str], shown: bool
) -> None:
    """Run as CI runs it (``CI`` set, output to a file): a line per epoch on stderr, none under ``-q -q``."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path))
    argv = ["--models", "test_resnet", "--methods", "l1", "--ratios", "0.3", "--recovery-epochs", "1"]
    result = bench.runpytest_subprocess(*argv, "--latency-rounds", "2", "--threads", "1", *quiet)
    lines = [line for line in result.stderr.lines if ": epoch " in line]
    if shown:
        assert "baseline test_resnet: epoch 1/6" in lines[0], result.stderr.lines
        assert any(line.startswith("recover test_resnet/l1: epoch 1/1, ") and "ETA" in line for line in lines)
    else:
        assert lines == []
