"""A whole case on a tiny model, the audits the accuracy gate must fail, and determinism."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch

import pruners
from pruners.decisions import weights_fingerprint
from pruners.levels import CriterionLevel
from pruners.measure import compare_latency, correct
from pruners.spec import Recipes, Timing
from pruners.train import Recipe

from .conftest import TINY_RECIPE

FAST_RECOVERY = Recipe(epochs=1, lr=1e-3, distill=0.5)


def run_tiny(method: str = "l1", seeds: tuple[int, ...] = (0,), rounds: int | None = 3) -> pruners.CaseResult:
    return pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            method,
            0.3,
            seeds=seeds,
            recipes=Recipes(baseline=TINY_RECIPE, recovery=FAST_RECOVERY),
            timing=Timing(batch_size=16, rounds=rounds),
        )
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> pruners.CaseResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(pruners.files.CACHE_ENV, str(tmp_path_factory.mktemp("case-cache")))
        return run_tiny(seeds=(0, 1))


def test_case_measures_everything(result: pruners.CaseResult) -> None:
    info = result.summary()
    assert result.record.macs_after < result.record.macs_before
    assert info["macs_speedup"] > 1
    assert 0 <= info["recovered_top1"] <= 100 and 0 <= info["dense_top1"] <= 100
    assert info["top1_drop"] == pytest.approx(info["dense_control_top1"] - info["recovered_top1"], abs=0.02)
    assert info["gate_reference"].startswith("dense control")
    assert result.latency is not None and result.latency.dense_ms > 0 and result.latency.pruned_ms > 0
    assert info["latency_speedup"] == pytest.approx(
        result.latency.dense_ms / result.latency.pruned_ms, rel=1e-2
    )
    assert info["batch_size"] == 16 and info["threads"] == torch.get_num_threads()
    assert info["tolerance"] == pruners.get_method("l1").tolerance
    assert info["passed"] == result.verdict.passed and "one-sided 99%" in info["gate"]


def test_each_seed_is_kept_with_its_paired_statistics(result: pruners.CaseResult) -> None:
    info = result.summary()
    assert info["seeds"] == [0, 1] and [s["seed"] for s in info["per_seed"]] == [0, 1]
    drops = [s["top1_drop"] for s in info["per_seed"]]
    assert info["top1_drop"] == pytest.approx(sum(drops) / 2, abs=0.01)
    assert info["top1_drop_min"] == min(drops) and info["top1_drop_max"] == max(drops)
    assert info["top1_drop_seed_std"] == pytest.approx(result.verdict.seed_std, abs=1e-3)
    for seed in info["per_seed"]:
        low, high = seed["top1_drop_ci95"]
        assert low <= seed["top1_drop"] <= high and seed["top1_drop_se"] >= 0
    assert result.seeds[0].dense is not result.seeds[1].dense, "each seed has its own baseline"


def test_paired_scores_are_the_models_own(result: pruners.CaseResult) -> None:
    test = pruners.digits().loader("test", 256)
    first = result.seeds[0]
    assert torch.equal(correct(first.pruned, test), correct(result.pruned, test))
    assert first.paired.pruned_correct == int(correct(result.pruned, test).sum())
    assert first.criterion.dense_correct == int(correct(result.dense, test).sum())
    control = pruners.gate.decode_correct(first.summary()["correct"]["control"])
    assert first.paired.dense_correct == int(control.sum()), "the recovery gate's reference is the control"
    assert first.paired.pruned_top1 != first.pruned_top1_before_recovery, "recovery changed nothing"


def audit(result: pruners.CaseResult, pruned_ok: torch.Tensor) -> pruners.CaseResult:
    """``result`` with its first seed's pruned model replaced by one scoring ``pruned_ok``."""
    dense_ok = correct(result.dense, pruners.digits().loader("test", 256))
    seed = dataclasses.replace(result.seeds[0], paired=pruners.PairedDrop.from_correct(dense_ok, pruned_ok))
    return dataclasses.replace(result, seeds=[seed])


def test_audit_destroyed_model_fails(result: pruners.CaseResult) -> None:
    destroyed = copy.deepcopy(result.pruned)
    with torch.no_grad():
        for p in destroyed.parameters():
            p.zero_()
    wrecked = audit(result, correct(destroyed, pruners.digits().loader("test", 256)))
    assert wrecked.pruned_top1 < 15
    with pytest.raises(pruners.AccuracyDropError, match=r"a drop of \d+\.\d\d points with noise \d\.\d\d"):
        pruners.check_accuracy(wrecked)


# How far past its tolerance an audited drop goes. On 360 images the gate's noise allowance grows with the
# drop (2.33 x SE is 3.7 points at a 10-point drop), so 5 points clear it for every tolerance up to 5.
AUDIT_MARGIN = 5


@pytest.mark.parametrize("method", pruners.list_methods())
def test_audit_drop_well_past_tolerance_fails(result: pruners.CaseResult, method: str) -> None:
    tolerance = pruners.get_method(method).tolerance
    dense_ok = correct(result.dense, pruners.digits().loader("test", 256))
    lost = round((tolerance + AUDIT_MARGIN) / 100 * len(dense_ok))
    pruned_ok = dense_ok.clone()
    pruned_ok[dense_ok.nonzero().flatten()[:lost]] = False
    past = dataclasses.replace(audit(result, pruned_ok), tolerance=tolerance)
    assert past.top1_drop == pytest.approx(tolerance + AUDIT_MARGIN, abs=0.2)
    with pytest.raises(pruners.AccuracyDropError) as err:
        pruners.check_accuracy(past)
    message = str(err.value)
    assert f"a drop of {past.top1_drop:.2f} points" in message
    assert f"tolerance of {tolerance:g} points" in message and "noise" in message


def test_drop_within_tolerance_passes(result: pruners.CaseResult) -> None:
    dense_ok = correct(result.dense, pruners.digits().loader("test", 256))
    pruners.check_accuracy(audit(result, dense_ok))


def test_a_recalibrated_figure_outside_its_band_is_reported_and_fails_nothing(
    result: pruners.CaseResult,
) -> None:
    dense_ok = correct(result.dense, pruners.digits().loader("test", 256))
    far = CriterionLevel(
        level=-50.0, tolerance=0.5, runs=5, baseline_recipe="", recovery_recipe="", img_size=32
    )
    outside = dataclasses.replace(audit(result, dense_ok), level=far)
    info = outside.summary()
    assert info["criterion_passed"] is False and "band" in info["criterion_gate"]
    assert info["passed"] is True and info["recovery_passed"] is True
    pruners.check_accuracy(outside)


def test_same_seed_gives_identical_figures_and_architecture(result: pruners.CaseResult) -> None:
    again = run_tiny(seeds=(0,), rounds=None)
    first = result.seeds[0]
    assert again.seeds[0].paired == first.paired
    assert again.seeds[0].pruned_top1_before_recovery == first.pruned_top1_before_recovery
    shapes = {k: v.shape for k, v in result.pruned.state_dict().items()}
    assert {k: v.shape for k, v in again.pruned.state_dict().items()} == shapes
    for k, v in again.pruned.state_dict().items():
        assert torch.equal(v, result.pruned.state_dict()[k]), k
    same = [again.summary()[k] == result.summary()["per_seed"][0][k] for k in FINGERPRINTS]
    assert same == [True, True], "the same seed must record the same baseline and decision fingerprints"


FINGERPRINTS = ("baseline_fingerprint", "decision_fingerprint")


def test_each_seed_records_its_baseline_and_decision_fingerprints(result: pruners.CaseResult) -> None:
    info = result.summary()
    first, second = info["per_seed"]
    assert first["baseline_fingerprint"] == weights_fingerprint(result.seeds[0].dense)
    assert first["decision_fingerprint"] == result.seeds[0].record.decision.fingerprint()
    assert first["baseline_fingerprint"] != second["baseline_fingerprint"], "each seed has its own baseline"
    assert [info[k] for k in FINGERPRINTS] == [first[k] for k in FINGERPRINTS]


def test_random_method_is_seeded(result: pruners.CaseResult) -> None:
    one, other = run_tiny("random", rounds=None), run_tiny("random", rounds=None)
    assert one.seeds[0].paired == other.seeds[0].paired


def test_recovery_is_a_third_of_the_baseline_budget_and_distils() -> None:
    recipe = pruners.recipes.baseline_recipe("resnet18")
    recovery = pruners.recipes.recovery_recipe(recipe)
    assert recovery.epochs == recipe.epochs // 3 and recovery.lr == recipe.lr and recovery.warmup_epochs == 0
    assert recovery.distill == pruners.recipes.RECOVERY_DISTILL
    assert pruners.recipes.recovery_recipe(Recipe(epochs=2, lr=1e-3)).epochs == 1


def test_distilling_recipe_needs_a_teacher(workload: pruners.Workload) -> None:
    model = pruners.zoo.create_model("test_resnet", workload)
    with pytest.raises(ValueError, match="no teacher"):
        pruners.train.train(model, workload, FAST_RECOVERY)


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    teacher = torch.randn(8, 10) * 3
    same = pruners.train.distill_loss(teacher.clone(), teacher, temperature=4.0)
    other = pruners.train.distill_loss(torch.randn(8, 10), teacher, temperature=4.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and other.item() > 0.1


def test_a_teachers_logits_are_run_once_per_batch_and_found_exactly(workload: pruners.Workload) -> None:
    memo = pruners.train.TeacherLogits()
    teacher = pruners.zoo.create_model("test_resnet", workload)
    runs: list[int] = []
    teacher.register_forward_hook(lambda *_: runs.append(1))
    start = pruners.zoo.create_model("test_resnet", workload)

    def recovered(seed: int) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(start)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pruners.train, "TEACHER_LOGITS", memo)
            pruners.train.train(model, workload, FAST_RECOVERY, seed=seed, teacher=teacher)
        return model.state_dict()

    first = recovered(0)
    steps = len(runs)
    assert steps == len(workload.loader("train", FAST_RECOVERY.batch_size))
    again = recovered(0)
    assert len(runs) == steps, "the same batches ran the teacher again"
    assert all(torch.equal(first[k], again[k]) for k in first), "found logits are not the forward pass's"
    recovered(1)
    assert len(runs) == 2 * steps, "another seed's batches were taken for seed 0's"


def test_logits_past_their_budget_drop_the_teacher_used_longest_ago(workload: pruners.Workload) -> None:
    memo = pruners.train.TeacherLogits(budget=1)
    batch = workload.test_batch(4)
    teachers = [pruners.zoo.create_model("test_resnet", workload) for _ in range(2)]
    for teacher in teachers:
        memo.of(teacher, torch.preserve_format)(batch, batch)
    assert len(memo.kept) == 1 and memo.size == 4 * workload.num_classes * 4
    logits = memo.of(teachers[1], torch.preserve_format)(batch, batch)
    assert torch.equal(logits, teachers[1](batch).detach())


def test_logits_kept_in_one_memory_format_are_not_served_to_another(workload: pruners.Workload) -> None:
    memo = pruners.train.TeacherLogits()
    teacher = pruners.zoo.create_model("test_resnet", workload).eval()
    batch = workload.test_batch(4)
    nhwc = batch.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = teacher(nhwc)
    runs: list[int] = []
    teacher.register_forward_hook(lambda *_: runs.append(1))
    memo.of(teacher, torch.preserve_format)(batch, batch)
    logits = memo.of(teacher, torch.channels_last)(batch, nhwc)
    assert len(runs) == 2 and len(memo.kept) == 2, "channels-last training was served contiguous logits"
    assert torch.equal(logits, expected)
    memo.of(teacher, torch.channels_last)(batch, nhwc)
    assert len(runs) == 2, "the channels-last logits were not kept for the next fine-tune"


def test_a_channels_last_recipe_trains_in_that_format_and_hands_back_the_default_one(
    workload: pruners.Workload,
) -> None:
    nhwc = dataclasses.replace(TINY_RECIPE, channels_last=True)
    assert "channels_last" not in TINY_RECIPE.settings() and nhwc.key != TINY_RECIPE.key
    start = pruners.zoo.create_model("test_efficientnet", workload)
    trained, seen = {}, []
    for recipe in (TINY_RECIPE, nhwc):
        model = copy.deepcopy(start)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        hook = conv.register_forward_pre_hook(
            lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        pruners.train.train(model, workload, recipe)
        hook.remove()
        assert all(p.is_contiguous() for p in model.parameters())
        trained[recipe.channels_last] = model
    steps = len(seen) // 2
    assert not any(seen[:steps]) and all(seen[steps:])
    before = dict(start.named_parameters())
    assert all(not torch.equal(w, before[name]) for name, w in trained[True].named_parameters())
    test = workload.loader("test", 64)
    contiguous, nhwc_correct = (correct(trained[layout], test).float() for layout in (False, True))
    assert abs(contiguous.mean() - nhwc_correct.mean()) <= 0.02
    assert (contiguous == nhwc_correct).float().mean() >= 0.95, "another float path, not another model"


def test_latency_compares_a_slower_model() -> None:
    fast = torch.nn.Conv2d(3, 8, 3)
    slow = torch.nn.Sequential(
        *[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(20)], torch.nn.Conv2d(3, 8, 3)
    )
    stats = compare_latency(slow, fast, torch.randn(8, 3, 64, 64), rounds=5)
    assert stats.speedup > 2
    assert stats.dense_p90_ms >= stats.dense_ms
    with pytest.raises(ValueError, match="rounds"):
        compare_latency(slow, fast, torch.randn(1, 3, 8, 8), rounds=1)


def test_sparse_training_takes_its_epochs_out_of_the_recovery_budget() -> None:
    split = pruners.case.split_budget
    assert split(Recipe(epochs=2, lr=1e-3), ("train",)) == (1, 1)
    assert split(Recipe(epochs=10, lr=1e-3), ("train",)) == (5, 5)
    assert split(Recipe(epochs=10, lr=1e-3), ("grad",)) == (0, 10)


def test_a_sparse_training_case_records_how_its_budget_was_split() -> None:
    budget = Recipe(epochs=2, lr=1e-3, distill=0.5)
    result = pruners.run_case(
        pruners.CaseSpec(
            "test_resnet",
            "bn_scale",
            0.3,
            recipes=Recipes(baseline=TINY_RECIPE, recovery=budget),
            timing=Timing(batch_size=16, rounds=None),
        )
    )
    info = result.summary()
    assert (info["sparse_train_epochs"], info["recovery_epochs"]) == (1, 1)
    assert info["recovery_recipe"] == repr(budget), "the row names the whole budget, not its remainder"
    assert result.record.macs_after < result.record.macs_before
    assert info["per_seed"][0]["prune_seconds"] > 0


def test_a_case_keeps_the_recalibrated_criterion_and_each_image_verdict(result: pruners.CaseResult) -> None:
    info = result.summary()
    assert "re-estimated on 1024 training images (16 batches)" in info["recalibration"]
    for seed in info["per_seed"]:
        verdicts = {k: pruners.gate.decode_correct(v) for k, v in seed["correct"].items()}
        assert set(verdicts) == {"dense", "control", "recalibrated", "recovered"}
        assert all(len(v) == 360 for v in verdicts.values())
        pairs = (("dense", "dense_top1"), ("control", "dense_control_top1"), ("recovered", "recovered_top1"))
        for key, field in pairs:
            assert 100 * verdicts[key].float().mean().item() == pytest.approx(seed[field], abs=0.01)
        assert 100 * verdicts["recalibrated"].float().mean().item() == pytest.approx(
            seed["recalibrated_top1"], abs=0.01
        )
        assert seed["baseline_train_seconds"] >= 0
    assert info["target_speedup"] is None and info["search_probes"] == 1


def test_a_dense_model_is_scored_once_per_process_and_again_once_its_weights_change(
    workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pruners import case as case_module

    model = timm.create_model("resnet18", num_classes=workload.num_classes, in_chans=3).eval()
    expected = correct(model, workload.loader("test", batch_size=256))
    scored: list[int] = []
    monkeypatch.setattr(case_module, "correct", lambda m, loader: scored.append(1) or correct(m, loader))
    first = case_module.dense_correct(model, workload)
    again = case_module.dense_correct(copy.deepcopy(model), workload)
    assert torch.equal(first, expected) and torch.equal(again, expected) and len(scored) == 1
    first[:] = False
    assert torch.equal(case_module.dense_correct(model, workload), expected), "callers get their own copy"
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    case_module.dense_correct(model, workload)
    assert len(scored) == 2, "changed weights are scored again"
