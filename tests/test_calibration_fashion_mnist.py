"""The verdict tier's committed calibration (``bench/calibration-fashion_mnist.json``): its Markdown and case
tolerances are rendered from it, and every case gated from it keeps the tier's promises: no calibrated run
fails, a method's mean drop of at most 2 points, a detected regression within the model's bound, and a
planted drop of tolerance + 1 point failing every run."""

from __future__ import annotations

import pytest

from pruners import calibration, calibration_tables
from pruners.calibrate import markdown_path
from pruners.gate import judge
from pruners.levels import load_tolerances
from pruners.matrix import Case, build_cases

FAMILY = "fashion_mnist"
PATH = calibration.default_path(FAMILY)
TIER = build_cases(tier="verdict", family="fashion_mnist")
RERUN = f"re-run `prunebench calibrate --dataset torch/{FAMILY} --render` (see {markdown_path(PATH)})"


@pytest.fixture(scope="module")
def cals() -> dict:
    return calibration.calibrations(calibration.load(PATH), TIER, FAMILY)


def gated(cals: dict) -> dict:
    return {case: cal for case, cal in cals.items() if len(cal.seeds) >= calibration.VERDICT_SEEDS}


def test_the_markdown_and_the_case_tolerances_are_rendered_from_the_json(cals: dict) -> None:
    entries = calibration.load(PATH)
    assert entries, f"{PATH} holds no runs"
    cases = calibration_tables.rendered_cases(entries, FAMILY)
    assert markdown_path(PATH).read_text() == calibration_tables.render(entries, cases, FAMILY), RERUN
    written = {k: v for k, v in load_tolerances().items() if k.startswith(f"{FAMILY}/")}
    assert written == {f"{f}/{c}": t for (f, c), t in calibration.tolerances(cals, FAMILY).items()}, RERUN


@pytest.mark.parametrize("case", TIER, ids=[case.id for case in TIER])
def test_every_gated_case_keeps_the_tiers_bounds(cals: dict, case: Case) -> None:
    cal = gated(cals).get(case)
    if cal is None:
        pytest.skip(f"{case.id} is not gated: fewer than {calibration.VERDICT_SEEDS} calibrated seeds")
    if calibration.rival(case) != case:
        assert cal.mean_drop <= calibration.MAX_VERDICT_TOLERANCE, case.id
    bound = calibration.REGRESSION_BOUNDS[case.model]
    assert cal.regression_detected <= bound, f"{case.id} misses a regression of {bound}"
    assert calibration.keeps_bounds(cal), case.id


def test_no_calibrated_run_fails_its_case_and_a_planted_drop_fails_every_one(cals: dict) -> None:
    for case, cal in gated(cals).items():
        assert all(judge([r.paired], cal.case_tolerance).passed for r in cal.runs), case.id
        points = cal.case_tolerance + 1
        assert calibration.planted_caught(cal, cal.case_tolerance, points) == len(cal.runs), case.id
