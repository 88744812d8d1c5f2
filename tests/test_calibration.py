"""The committed calibration table covers the full matrix, and the registered tolerances follow it."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import pruners
from pruners import calibrate
from pruners.gate import PairedDrop, required_tolerance
from pruners.matrix import Case, build_cases

RERUN = "re-run `python -m pruners.calibrate` (see bench/CALIBRATION.md)"


@pytest.fixture(scope="module")
def calibrated() -> dict[Case, calibrate.CaseCalibration]:
    return calibrate.calibrations(calibrate.load(), build_cases(tier="full"))


def test_table_covers_every_case_of_the_full_tier(calibrated) -> None:
    for case, cal in calibrated.items():
        assert len(cal.seeds) >= calibrate.MIN_SEEDS, f"{case.id}: {len(cal.seeds)} seeds calibrated; {RERUN}"


@pytest.mark.parametrize("method", pruners.list_methods())
def test_registered_tolerance_is_the_calibrated_one(calibrated, method: str) -> None:
    cals = [cal for case, cal in calibrated.items() if case.method == method]
    assert all(cal.runs for cal in cals), f"{method}: a case of the full tier has no calibrated run; {RERUN}"
    suggested = calibrate.suggested_tolerance(cals)
    tolerance = pruners.get_method(method).tolerance
    assert tolerance >= suggested, f"{method}: tolerance {tolerance} does not cover its worst seed; {RERUN}"
    assert tolerance <= suggested + 1.0, (
        f"{method}: tolerance {tolerance} is looser than measured ({suggested})"
    )


def test_markdown_table_is_rendered_from_the_json() -> None:
    markdown = calibrate.markdown_path(calibrate.DEFAULT_PATH).read_text()
    assert markdown == calibrate.render(calibrate.load(), build_cases(tier="full"))


def entry(seed: int, dense_only: int, pruned_only: int, **changes) -> dict:
    return {
        "model": "resnet18",
        "method": "l1",
        "ratio": 0.3,
        "seed": seed,
        "threads": 1,
        "machine": "cpu",
        "torch": "x",
        **calibrate.recipe_keys("resnet18"),
        "n": 360,
        "dense_correct": 350,
        "pruned_correct": 350 - dense_only + pruned_only,
        "dense_only": dense_only,
        "pruned_only": pruned_only,
        "drop": 0.0,
        "se": 0.0,
        **changes,
    }


def test_record_replaces_a_rerun_and_ignores_stale_recipes(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    case = Case("resnet18", "l1", 0.3)
    calibrate.record(entry(0, 9, 1), path, [case])
    calibrate.record(entry(1, 4, 2), path, [case])
    calibrate.record(entry(0, 3, 1), path, [case])  # seed 0 again: replaces the first
    calibrate.record(entry(2, 40, 0, recovery_recipe="old"), path, [case])  # another recipe: stale
    runs = calibrate.load(path)
    assert len(runs) == 3 and json.loads(path.read_text())["confidence"] == pruners.CONFIDENCE
    cal = calibrate.calibrations(runs, [case])[case]
    assert sorted(cal.seeds) == [0, 1] and sorted(p.dense_only for _, _, p in cal.runs) == [3, 4]
    markdown = (tmp_path / "CALIBRATION.md").read_text()
    assert "| resnet18 | l1 | 0.3 | 2 | 0,1 |" in markdown


def test_suggested_tolerance_covers_the_worst_run_with_a_margin() -> None:
    case = Case("resnet18", "l1", 0.3)
    runs = tuple(
        (s, 1, PairedDrop(360, 340, 340 - a + b, a, b)) for s, (a, b) in enumerate([(6, 2), (12, 1)])
    )
    cal = calibrate.CaseCalibration(case, runs)
    required = [required_tolerance(p) for _, _, p in runs]
    spread = statistics.stdev(required)
    need = max(max(required) + calibrate.MARGIN_POINTS, statistics.fmean(required) + 3 * spread)
    assert cal.covering_tolerance == pytest.approx(need)
    suggested = calibrate.suggested_tolerance([cal])
    assert suggested >= need and suggested - need < 0.5 and (suggested * 2).is_integer()


def test_corrupt_calibration_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a calibration file"):
        calibrate.load(path)
    proc = subprocess.run(
        [sys.executable, "-m", "pruners.calibrate", "--out", str(path), "--models", "resnet18"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not a calibration file" in proc.stderr
    assert path.read_text() == "{not json", "the file was touched"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1,x"], "seeds must be"),
        (["--models", "resnet1800"], "unknown timm model"),
        (["--distill", "1"], "distill"),
    ],
)
def test_bad_calibration_arguments_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pruners.calibrate", *args], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
