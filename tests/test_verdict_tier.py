"""The verdict tier's machinery: its cases, per-case tolerances from its calibration, the recovery budget
measured per workload, and a calibration that resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import pruners
from pruners import calibrate, calibration, levels, models
from pruners.case import split_budget
from pruners.cli import main
from pruners.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES
from pruners.gate import PairedDrop, encode_correct
from pruners.matrix import Case, build_cases, choose_tier
from pruners.models import get_model
from pruners.recipes import case_recipes, recovery_budget, recovery_recipe
from pruners.registry import get_method
from pruners.spec import CaseSpec

HAS_FASHION = all((DEBIAN_FASHION_MNIST / f"{n}.gz").is_file() for n in FASHION_MNIST_FILES)


def test_fashion_mnist_runs_the_verdict_tier_and_the_digits_the_default() -> None:
    assert choose_tier(False, False, False, "fashion_mnist") == "verdict"
    assert choose_tier(False, False, False) == choose_tier(False, False, False, "cifar10") == "default"
    assert choose_tier(True, False, False, "fashion_mnist") == "quick"
    verdict = build_cases(tier="verdict", family="fashion_mnist")
    mobile = [c.method for c in verdict if c.model == "mobilenetv3_small_100"]
    assert mobile == ["random", "l1"] or sorted(mobile) == ["l1", "random"]
    assert {c.method for c in verdict if c.model == "resnet18"} == {
        c.method for c in build_cases() if c.model == "resnet18"
    }


def _tolerance_file(tmp_path: Path, **changes) -> Path:
    keys = calibration.run_keys("resnet18", "fashion_mnist")
    value = {"tolerance": 1.0, "runs": 6, **keys, **changes}
    path = tmp_path / "gate_tolerances.json"
    path.write_text(json.dumps({"fashion_mnist/resnet18-l1-3x": value}))
    return path


def test_a_calibrated_case_tolerance_replaces_the_method_one_only_under_its_recipes_and_size(
    tmp_path: Path,
) -> None:
    keys = calibration.run_keys("resnet18", "fashion_mnist")
    args = ("resnet18-l1-3x", keys["baseline_recipe"], keys["recovery_recipe"], keys["img_size"], 3.0)
    tolerance, source = levels.case_tolerance("fashion_mnist", *args, path=_tolerance_file(tmp_path))
    assert tolerance == 1.0 and "calibrated for this case on fashion_mnist (6 runs)" in source
    for change in ({"recovery_recipe": "old"}, {"img_size": keys["img_size"] * 2}):
        stale = _tolerance_file(tmp_path, **change)
        tolerance, source = levels.case_tolerance("fashion_mnist", *args, path=stale)
        assert tolerance == 3.0 and "calibrated under other recipes or input size" in source, change
    assert levels.case_tolerance("cifar10", *args, path=stale)[0] == 3.0
    assert "registered" in levels.case_tolerance("digits", *args, path=stale)[1]


def test_a_case_tolerance_is_written_only_from_enough_seeds() -> None:
    case = Case("resnet18", "l1", None, 3.0)
    right = torch.arange(1000) < 900

    def run(seed: int) -> calibration.Run:
        return calibration.Run(
            seed, 1, PairedDrop(1000, 900, 895, 10, 5), PairedDrop.from_correct(right, right), {}
        )

    short = calibration.CaseCalibration(case, tuple(run(s) for s in range(calibration.VERDICT_SEEDS - 1)))
    enough = calibration.CaseCalibration(case, tuple(run(s) for s in range(calibration.VERDICT_SEEDS)))
    assert calibration.tolerances({case: short}, "fashion_mnist") == {}
    written = calibration.tolerances({case: enough}, "fashion_mnist")[("fashion_mnist", "resnet18-l1-3x")]
    assert written.tolerance == enough.case_tolerance and written.runs == calibration.VERDICT_SEEDS
    assert written.recovery_recipe == calibration.recipe_keys("resnet18", "fashion_mnist")["recovery_recipe"]


def test_the_recovery_budget_measured_on_a_workload_sets_the_recovery_recipe() -> None:
    entry = get_model("resnet18")
    assert entry.recovery_epochs_for("digits") is None
    spec = CaseSpec("resnet18", "l1", 0.3)
    plain = spec.recovery_recipe
    assert (plain.epochs, plain.lr) == (max(1, spec.baseline_recipe.epochs // 3), spec.baseline_recipe.lr)
    assert recovery_budget("resnet18", "fashion_mnist") == {"epochs": 3, "lr": 5e-4}
    measured = dataclasses.replace(entry, recovery_epochs={"digits": 5}, recovery_lr={"digits": 5e-4})
    models.register_model(measured, replace=True)
    try:
        recovery = CaseSpec("resnet18", "l1", 0.3).recovery_recipe
        assert (recovery.epochs, recovery.lr) == (5, 5e-4)
        assert recovery.key != plain.key
        assert (
            calibration.recipe_keys("resnet18")["recovery_recipe"]
            == CaseSpec("resnet18", "l1", 0.3).recovery_recipe.key
        )
    finally:
        models.register_model(entry, replace=True)


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100"])
def test_a_case_spec_and_the_calibration_run_the_recipes_case_recipes_names(model: str) -> None:
    dense, recovery = case_recipes(model, "fashion_mnist")
    workload = dataclasses.replace(pruners.digits(), family="fashion_mnist")
    spec = CaseSpec(model, "l1", 0.3, workload=workload)
    assert (spec.baseline_recipe, spec.recovery_recipe) == (dense, recovery)
    budget = recovery_budget(model, "fashion_mnist")
    assert recovery.epochs == (budget["epochs"] or dense.epochs // 3)
    assert recovery.lr == (budget["lr"] or dense.lr)
    keys = calibration.recipe_keys(model, "fashion_mnist")
    assert keys == {"baseline_recipe": dense.key, "recovery_recipe": recovery.key}


def test_a_recovery_lr_replaces_the_recipes_peak_lr_and_changes_its_key() -> None:
    from pruners.spec import Recipes

    plain = CaseSpec("resnet18", "l1", 0.3).recovery_recipe
    frozen = CaseSpec("resnet18", "l1", 0.3, recipes=Recipes(recovery_lr=1e-7)).recovery_recipe
    assert frozen.lr == 1e-7 and frozen.epochs == plain.epochs and frozen.key != plain.key
    with pytest.raises(ValueError, match="`recovery_lr` must be > 0"):
        Recipes(recovery_lr=0.0)


@pytest.mark.parametrize(
    "model", sorted({c.model for c in build_cases(tier="verdict", family="fashion_mnist")})
)
def test_sparse_training_methods_keep_recovery_epochs_on_the_verdict_tier(model: str) -> None:
    budget = get_model(model).recovery_epochs_for("fashion_mnist")
    dense = get_model(model).recipe_for("fashion_mnist")
    recovery = recovery_recipe(dense, epochs=budget)
    sparse, recover = split_budget(recovery, ("train",))
    assert sparse >= 1 and recover >= 1


def _entry(spec: CaseSpec, seed: int) -> dict:
    n, ok = 1000, torch.arange(1000) < 900
    correct = {k: encode_correct(ok) for k in ("dense", "control", "recalibrated", "recovered")}
    return {
        "reference": calibration.REFERENCE,
        "model": spec.model,
        "method": spec.method,
        "ratio": spec.case().ratio,
        "speedup": spec.speedup,
        "family": "digits",
        "seed": seed,
        "threads": torch.get_num_threads(),
        "machine": "test-cpu",
        "baseline_recipe": spec.baseline_recipe.key,
        "recovery_recipe": spec.recovery_recipe.key,
        "img_size": spec.data.img_size,
        "n": n,
        "dense_correct": 900,
        "pruned_correct": 900,
        "dense_only": 0,
        "pruned_only": 0,
        "drop": 0.0,
        "se": 0.0,
        "correct": correct,
    }


def test_an_interrupted_calibration_resumes_with_the_runs_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ran: list[int] = []

    def fake_run(spec: CaseSpec):
        if spec.seeds[0] == 2 and not ran.count(-1):
            ran.append(-1)
            raise KeyboardInterrupt
        ran.append(spec.seeds[0])
        return spec

    monkeypatch.setattr(calibrate, "run_case", fake_run)
    monkeypatch.setattr(calibrate, "run_entry", lambda spec, result, family, cpu: _entry(spec, spec.seeds[0]))
    monkeypatch.setattr(calibrate, "machine", lambda: "test-cpu")
    out = tmp_path / "calibration.json"
    args = ["calibrate", "--models", "resnet18", "--methods", "l1", "--seeds", "0,1,2,3", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert ran == [0, 1, -1] and sorted(e["seed"] for e in calibration.load(out)) == [0, 1]
    assert main(args) == 0
    assert ran == [0, 1, -1, 2, 3], "the second call ran only the seeds the first had not recorded"
    assert sorted(e["seed"] for e in calibration.load(out)) == [0, 1, 2, 3]
    assert "resnet18-l1-3x seed 0: recorded already, skipped" in capsys.readouterr().err


def test_rerun_runs_the_recorded_runs_again_and_replaces_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    def fake_run(spec: CaseSpec):
        ran.append(spec.seeds[0])
        return spec

    def fake_entry(spec, result, family, cpu):
        return _entry(spec, spec.seeds[0]) | {"drop": float(len(ran))}

    monkeypatch.setattr(calibrate, "run_case", fake_run)
    monkeypatch.setattr(calibrate, "run_entry", fake_entry)
    monkeypatch.setattr(calibrate, "machine", lambda: "test-cpu")
    out = tmp_path / "calibration.json"
    args = ["calibrate", "--models", "resnet18", "--methods", "l1", "--seeds", "0,1", "--out", str(out)]
    assert main(args) == 0 and main(args) == 0
    assert ran == [0, 1], "without --rerun the recorded runs are skipped"
    assert main([*args, "--rerun"]) == 0
    assert ran == [0, 1, 0, 1]
    runs = calibration.load(out)
    assert [(e["seed"], e["drop"]) for e in runs] == [(0, 3.0), (1, 4.0)], "each rerun replaced its run"


@pytest.mark.skipif(
    not HAS_FASHION, reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
)
def test_calibrate_runs_each_model_at_its_input_size_and_reruns_a_run_recorded_at_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[str, int]] = []

    def fake_run(spec: CaseSpec):
        sizes.append((spec.model, spec.data.img_size))
        return spec

    monkeypatch.setattr(calibrate, "run_case", fake_run)
    monkeypatch.setattr(
        calibrate,
        "run_entry",
        lambda spec, result, family, cpu: _entry(spec, spec.seeds[0]) | {"family": family},
    )
    monkeypatch.setattr(calibrate, "machine", lambda: "test-cpu")
    out = tmp_path / "calibration-fashion_mnist.json"
    args = ["calibrate", "--dataset", "torch/fashion_mnist", "--models", "resnet18,mobilenetv3_small_100"]
    assert main([*args, "--methods", "l1", "--seeds", "0", "--out", str(out)]) == 0
    mobile = models.model_img_size("mobilenetv3_small_100", "fashion_mnist")
    assert sorted(sizes) == [("mobilenetv3_small_100", mobile), ("resnet18", 32)]
    runs = calibration.load(out)
    cases = [calibration.entry_case(e) for e in runs]
    assert all(cal.runs for cal in calibration.calibrations(runs, cases, "fashion_mnist").values())
    for run in runs:
        run["img_size"] = 32
    out.write_text(json.dumps({"confidence": 0.99, "runs": runs}))
    current = calibration.calibrations(runs, cases, "fashion_mnist")
    assert {c.model for c, cal in current.items() if not cal.runs} == {"mobilenetv3_small_100"}
    sizes.clear()
    assert main([*args, "--methods", "l1", "--seeds", "0", "--out", str(out)]) == 0
    assert sizes == [("mobilenetv3_small_100", mobile)], (
        "only the run recorded at another input size ran again"
    )


def test_a_failing_case_names_where_its_tolerance_came_from() -> None:
    from pruners.gates import RecoveryGate
    from pruners.record import CaseRecord

    source = "calibrated for this case on fashion_mnist (6 runs)"
    record = CaseRecord(
        "resnet18", "l1", 0.4, 90.0, 10.0, 85.0, 4, 1, 2, 1, dense_control_top1=90.0, top1_drop=5.0,
        top1_drop_noise=0.2, tolerance=1.0, tolerance_source=source, gate="5.00 - 2.33 x 0.20 > 1",
    )  # fmt: skip
    assert "(calibrated for this case on fashion_mnist (6 runs))" in RecoveryGate().failure(record)
    assert get_method("l1").tolerance > 0


def test_a_planted_drop_lowers_the_recovered_top1_by_that_much_and_the_gate_sees_it() -> None:
    control = torch.arange(2000) % 10 != 0
    same = PairedDrop.from_correct(control, control)
    run = calibration.Run(0, 1, same, same, {"control": control, "recovered": control.clone()})
    planted = calibration.planted_drop(run, 1.5)
    assert planted.drop == pytest.approx(1.5) and planted.pruned_only == 0
    assert torch.equal(run.correct["recovered"], control), "the run itself is left as it was"
    cal = calibration.CaseCalibration(Case("resnet18", "l1", None, 3.0), (run,))
    assert calibration.planted_caught(cal, tolerance=1.0, points=2.0) == 1
    assert calibration.planted_caught(cal, tolerance=1.0, points=0.5) == 0


def _calibrated(method: str, recovered: torch.Tensor, seeds: int = 2) -> calibration.CaseCalibration:
    dense = torch.ones(recovered.numel(), dtype=torch.bool)
    correct = {"dense": dense, "control": dense, "recalibrated": recovered, "recovered": recovered}
    paired = PairedDrop.from_correct(dense, recovered)
    runs = tuple(calibration.Run(s, 1, paired, paired, correct) for s in range(seeds))
    return calibration.CaseCalibration(Case("resnet18", method, None, 3.0), runs)


def test_the_calibration_ranks_the_methods_at_each_cost_with_their_tie_groups() -> None:
    from pruners.calibration_tables import ranking_section

    n = 4000
    index = torch.arange(n)
    cals = {
        cal.case: cal
        for cal in (
            _calibrated("l1", index % 100 >= 5),
            _calibrated("l2", (index % 100 >= 6) | (index % 100 == 0)),
            _calibrated("random", index % 100 >= 15),
        )
    }
    text = "\n".join(ranking_section(cals))
    assert "### resnet18 at 3x, seeds 0,1" in text
    assert "1. `l1`, `l2`: tied; each beats random (`l1` +10.00 ± " in text
    assert "2. `random`: alone" in text
    assert text.index("| 1 | l1 |") < text.index("| 1 | l2 |") < text.index("| 2 | random |")


def test_the_lead_over_random_counts_each_seed_once_however_many_thread_counts_ran_it() -> None:
    index = torch.arange(4000)
    chance = _calibrated("random", index % 100 >= 15)
    once = _calibrated("lamp", index % 100 >= 5)
    rerun = dataclasses.replace(
        once.runs[0], threads=2, correct=_calibrated("lamp", index % 100 >= 9).runs[0].correct
    )
    twice = dataclasses.replace(once, runs=(*once.runs, rerun))
    assert list(twice.first_runs) == [0, 1] and twice.first_runs[0] is once.runs[0]
    lead = calibration.lead_over_random({chance.case: chance, once.case: once}, once.case, "recovered")
    again = calibration.lead_over_random({chance.case: chance, twice.case: twice}, twice.case, "recovered")
    assert lead is not None and again == lead
    assert lead.drops == pytest.approx((10.0, 10.0)) and lead.mean_drop == pytest.approx(10.0)


def test_the_regression_a_run_detects_is_measured_from_the_cases_own_mean_drop() -> None:
    lossy = _calibrated("random", torch.arange(4000) % 100 >= 2, seeds=6)
    assert lossy.mean_drop == pytest.approx(2.0)
    assert lossy.detects == pytest.approx(lossy.case_tolerance + calibration.one_sided_z() * lossy.mean_se)
    assert lossy.regression_detected == pytest.approx(lossy.detects - 2.0)
    assert lossy.detects > 2.0 > lossy.regression_detected


def test_a_method_is_held_to_the_drop_bound_and_a_chance_rival_to_the_regression_bound_alone() -> None:
    lossy, scattered = torch.arange(4000) % 100 >= 4, torch.arange(4000) % 100 >= 2
    for method in ("l1", "random"):
        cal = _calibrated(method, lossy, seeds=6)
        assert cal.mean_drop > calibration.MAX_VERDICT_TOLERANCE
        assert cal.regression_detected <= calibration.REGRESSION_BOUNDS["resnet18"]
        assert calibration.keeps_bounds(cal) == (method == "random")
        assert calibration.keeps_bounds(_calibrated(method, scattered, seeds=6))
    assert calibration.drop_bound(Case("resnet18", "random_unstructured", 0.5, None)) is None
    assert calibration.drop_bound(Case("resnet18", "magnitude", 0.5, None)) == 2.0


def test_a_method_whose_drop_spreads_over_seeds_gets_a_wide_tolerance_held_by_the_regression_bound() -> None:
    from pruners.calibration_tables import case_tolerance_section

    index = torch.arange(4000)
    typical, outlier = _calibrated("lamp", index % 200 >= 3, seeds=5), _calibrated("lamp", index % 200 >= 5)
    spread = dataclasses.replace(typical, runs=(*typical.runs, dataclasses.replace(outlier.runs[0], seed=5)))
    assert spread.mean_drop == pytest.approx((2.5 + 1.5 * 5) / 6)
    assert spread.case_tolerance > calibration.MAX_VERDICT_TOLERANCE >= spread.mean_drop
    assert calibration.keeps_bounds(spread)
    table = "\n".join(case_tolerance_section({spread.case: spread}, [spread.case], "fashion_mnist"))
    assert table.splitlines()[-1].endswith("| yes, wide |")
    tight = _calibrated("lamp", index % 100 >= 2, seeds=6)
    assert tight.case_tolerance <= calibration.MAX_VERDICT_TOLERANCE
    table = "\n".join(case_tolerance_section({tight.case: tight}, [tight.case], "fashion_mnist"))
    assert table.splitlines()[-1].endswith("| yes |")


def test_a_models_target_on_a_workload_family_sets_its_cases_there_and_only_there() -> None:
    entry = get_model("mobilenetv3_small_100")
    models.register_model(dataclasses.replace(entry, targets={"fashion_mnist": 1.25}), replace=True)
    try:
        fashion = build_cases(["mobilenetv3_small_100"], ["l1"], family="fashion_mnist")
        digits = build_cases(["mobilenetv3_small_100"], ["l1"])
        assert [c.speedup for c in fashion] == [1.25] and [c.speedup for c in digits] == [entry.target]
        assert (
            build_cases(["mobilenetv3_small_100"], ["l1"], speedups=[3.0], family="fashion_mnist")[0].speedup
            == 3.0
        )
    finally:
        models.register_model(entry, replace=True)
