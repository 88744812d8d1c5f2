"""The committed calibration table covers the full matrix, and the registered tolerances follow it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

import pruners
from pruners import calibrate, calibration, calibration_tables
from pruners.cli import main
from pruners.gate import PairedDrop, band, encode_correct, judge, required_tolerance
from pruners.levels import load_levels
from pruners.matrix import Case, build_cases
from pruners.zoo import CorruptCacheError

RERUN = "re-run `prunebench calibrate` (see bench/CALIBRATION.md)"
DEFAULT_TIER = build_cases(tier="default")


@pytest.fixture(scope="module")
def calibrated() -> dict[Case, calibration.CaseCalibration]:
    return calibration.calibrations(calibration.load(), DEFAULT_TIER)


def test_table_covers_every_case_of_the_default_tier(calibrated) -> None:
    for case, cal in calibrated.items():
        assert len(cal.seeds) >= calibration.MIN_SEEDS, (
            f"{case.id}: {len(cal.seeds)} seeds calibrated; {RERUN}"
        )


@pytest.mark.parametrize("method", sorted({case.method for case in DEFAULT_TIER}))
def test_registered_tolerance_is_the_calibrated_one(calibrated, method: str) -> None:
    cals = [cal for case, cal in calibrated.items() if case.method == method]
    assert all(cal.runs for cal in cals), (
        f"{method}: a case of the default tier has no calibrated run; {RERUN}"
    )
    suggested = calibration.suggested_tolerance(cals)
    tolerance = pruners.get_method(method).tolerance
    assert tolerance >= suggested, f"{method}: tolerance {tolerance} does not cover its worst seed; {RERUN}"
    assert tolerance <= suggested + 1.0, (
        f"{method}: tolerance {tolerance} is looser than measured ({suggested})"
    )


@pytest.mark.parametrize("method", pruners.list_methods())
def test_no_tolerance_is_wider_than_the_bound(method: str) -> None:
    tolerance = pruners.get_method(method).tolerance
    assert tolerance <= calibration.MAX_TOLERANCE, (
        f"{method}: {tolerance} points is a gate that detects little"
    )


def test_every_calibrated_run_passes_both_gates(calibrated) -> None:
    levels = load_levels()
    for case, cal in calibrated.items():
        level = levels[f"digits/{case.id}"]
        for run in cal.runs:
            assert judge([run.paired], pruners.get_method(case.method).tolerance).passed, (case.id, run.seed)
            assert band([run.criterion], level.level, level.tolerance).passed, (case.id, run.seed)


def test_the_levels_and_the_markdown_are_rendered_from_the_json(calibrated) -> None:
    entries = calibration.load()
    expected = {
        f"{family}/{case_id}": level for (family, case_id), level in calibration.levels(calibrated).items()
    }
    assert {k: v for k, v in load_levels().items() if k in expected} == expected, RERUN
    markdown = calibrate.markdown_path(calibration.DEFAULT_PATH).read_text()
    assert markdown == calibration_tables.render(entries, calibration_tables.rendered_cases(entries)), RERUN


def packed(n: int, right: int) -> dict:
    return encode_correct(torch.arange(n) < right)


def entry(seed: int, dense_only: int, pruned_only: int, **changes) -> dict:
    correct = {name: packed(360, 350) for name in ("dense", "control", "recalibrated", "recovered")}
    return {
        "reference": calibration.REFERENCE,
        "model": "resnet18",
        "method": "l1",
        "ratio": 0.3,
        "seed": seed,
        "threads": 1,
        "machine": "cpu",
        "torch": "x",
        **calibration.run_keys("resnet18"),
        "n": 360,
        "dense_correct": 350,
        "pruned_correct": 350 - dense_only + pruned_only,
        "dense_only": dense_only,
        "pruned_only": pruned_only,
        "drop": 0.0,
        "se": 0.0,
        "correct": correct,
        **changes,
    }


def test_record_replaces_a_rerun_and_ignores_stale_runs(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    case = Case("resnet18", "l1", 0.3)
    calibrate.record(entry(0, 9, 1), path, [case])
    calibrate.record(entry(1, 4, 2), path, [case])
    calibrate.record(entry(0, 3, 1), path, [case])  # seed 0 again: replaces the first
    calibrate.record(entry(2, 40, 0, recovery_recipe="old"), path, [case])  # another recipe: stale
    calibrate.record(entry(3, 40, 0, reference="dense baseline"), path, [case])  # another reference: stale
    runs = calibration.load(path)
    assert len(runs) == 4 and json.loads(path.read_text())["confidence"] == pruners.CONFIDENCE
    cal = calibration.calibrations(runs, [case])[case]
    assert sorted(cal.seeds) == [0, 1] and sorted(r.paired.dense_only for r in cal.runs) == [3, 4]
    markdown = (tmp_path / "CALIBRATION.md").read_text()
    assert "| resnet18 | l1 | 0.3 | 2 | 0,1 |" in markdown
    assert not (tmp_path / "gate_levels.json").exists(), "levels from fewer than MIN_SEEDS seeds"


def runs_of(pairs: list[tuple[int, int]], recalibrated: list[int]) -> tuple[calibration.Run, ...]:
    dense = torch.arange(360) < 340
    return tuple(
        calibration.Run(
            s,
            1,
            PairedDrop(360, 340, 340 - a + b, a, b),
            PairedDrop.from_correct(dense, torch.arange(360) < right),
            {},
        )
        for s, ((a, b), right) in enumerate(zip(pairs, recalibrated, strict=True))
    )


def test_suggested_tolerance_covers_the_worst_run_with_a_margin() -> None:
    runs = runs_of([(6, 2), (12, 1)], [330, 320])
    cal = calibration.CaseCalibration(Case("resnet18", "l1", 0.3), runs)
    required = [required_tolerance(r.paired) for r in runs]
    spread = statistics.stdev(required)
    need = max(max(required) + calibration.MARGIN_POINTS, statistics.fmean(required) + 3 * spread)
    assert cal.covering_tolerance == pytest.approx(need)
    suggested = calibration.suggested_tolerance([cal])
    assert suggested >= need and suggested - need < 0.5 and (suggested * 2).is_integer()


def test_the_criterion_band_holds_every_calibrated_run() -> None:
    runs = runs_of([(0, 0)] * 5, [330, 322, 336, 328, 318])
    cal = calibration.CaseCalibration(Case("resnet18", "l1", None, 2.0), runs)
    assert cal.criterion_level == pytest.approx(statistics.fmean(r.criterion.drop for r in runs))
    for run in runs:
        assert band([run.criterion], cal.criterion_level, cal.criterion_tolerance).passed
    assert cal.criterion_detects > cal.criterion_tolerance and (cal.criterion_tolerance * 2).is_integer()
    level = calibration.levels({cal.case: cal})[("digits", "resnet18-l1-2x")]
    assert level.tolerance == cal.criterion_tolerance and level.runs == 5


def test_random_runs_caught_counts_the_random_runs_outside_the_criterion_band() -> None:
    """The band's power against a criterion that stopped ranking: per seed, whether the calibrated
    ``random`` run at the same model and cost lies outside the criterion's band. Its band (level 18/360
    points lost, 5 runs) holds random's seed 0 and excludes its seeds 1 and 2, which lost far more."""
    target = 2.0
    l1 = calibration.CaseCalibration(
        Case("resnet18", "l1", None, target), runs_of([(0, 0)] * 5, [322, 320, 324, 322, 321])
    )
    chance = calibration.CaseCalibration(
        Case("resnet18", "random", None, target), runs_of([(0, 0)] * 3, [321, 250, 200])
    )
    cals = {l1.case: l1, chance.case: chance}
    assert calibration.random_runs_caught(cals, l1.case) == {(0, 1): False, (1, 1): True, (2, 1): True}
    assert calibration.random_runs_caught(cals, chance.case) == {}, "random is not its own rival"
    assert calibration.random_runs_caught({l1.case: l1}, l1.case) == {}, "no random calibrated"


def calibrate_exit(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``prunebench calibrate ARGS``'s exit code and stderr, for arguments it refuses."""
    code = main(["calibrate", *args])
    return code, capsys.readouterr().err


def test_corrupt_calibration_file_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a calibration file"):
        calibration.load(path)
    code, err = calibrate_exit(["--out", str(path), "--models", "resnet18"], capsys)
    assert code == 1 and "not a calibration file" in err
    assert path.read_text() == "{not json", "the file was touched"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1,x"], "seeds must be"),
        (["--models", "resnet1800"], "unknown timm model"),
        (["--distill", "1"], "distill"),
    ],
)
def test_bad_calibration_arguments_are_one_line_and_exit_1(
    args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    code, err = calibrate_exit(args, capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_cache_stops_the_calibration_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(*args, **kwargs):
        raise CorruptCacheError("the baseline cache /c/r.pt: EOFError: ; nothing was changed")

    monkeypatch.setattr(calibrate, "run_case", corrupt)
    out = tmp_path / "calibration.json"
    code, err = calibrate_exit(["--models", "resnet18", "--methods", "l1", "--out", str(out)], capsys)
    assert code == 1
    assert err.strip().endswith("error: the baseline cache /c/r.pt: EOFError: ; nothing was changed")
    assert not out.exists()
