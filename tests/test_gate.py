"""The paired, noise-aware accuracy gate: its statistics and its verdicts, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pruners.gate import CONFIDENCE, PairedDrop, Verdict, judge, one_sided_z, required_tolerance


def paired(n: int, dense_only: int, pruned_only: int, both: int) -> PairedDrop:
    """Correctness vectors over ``n`` images with the given discordant and concordant-right counts."""
    dense = torch.zeros(n, dtype=torch.bool)
    pruned = torch.zeros(n, dtype=torch.bool)
    dense[:both] = pruned[:both] = True
    dense[both : both + dense_only] = True
    pruned[both + dense_only : both + dense_only + pruned_only] = True
    return PairedDrop.from_correct(dense, pruned)


def test_paired_drop_matches_the_textbook_formulas() -> None:
    p = paired(360, dense_only=12, pruned_only=5, both=330)
    assert (p.dense_correct, p.pruned_correct) == (342, 335)
    assert p.drop == pytest.approx(100 * 7 / 360)
    assert p.dense_top1 - p.pruned_top1 == pytest.approx(p.drop)
    d = torch.zeros(360)
    d[:12], d[12:17] = 1.0, -1.0
    assert p.se == pytest.approx(100 * d.std().item() / math.sqrt(360), rel=1e-6)


def test_exact_interval_and_mcnemar() -> None:
    p = paired(360, dense_only=12, pruned_only=5, both=330)
    low, high = p.ci(0.95)
    assert low < p.drop < high
    assert low < 0, "7 net images of 17 discordant is not significant at 95 %"
    assert 0.05 < p.mcnemar_p < 0.2
    strong = paired(360, dense_only=30, pruned_only=2, both=300)
    assert strong.ci(0.95)[0] > 0 and strong.mcnemar_p < 1e-5
    same = paired(360, 0, 0, 340)
    assert (same.drop, same.se, same.ci(), same.mcnemar_p) == (0.0, 0.0, (0.0, 0.0), 1.0)


def test_unpaired_vectors_are_rejected() -> None:
    with pytest.raises(ValueError, match="paired"):
        PairedDrop.from_correct(torch.ones(10, dtype=torch.bool), torch.ones(9, dtype=torch.bool))


def test_single_seed_rule_can_be_checked_by_hand() -> None:
    p = paired(360, dense_only=12, pruned_only=5, both=330)
    v = judge([p], tolerance=1.0)
    assert v.z == pytest.approx(2.326, abs=1e-3) and CONFIDENCE == 0.99
    assert v.noise == pytest.approx(p.se)
    assert v.bound == pytest.approx(p.drop - 2.3263 * p.se, abs=1e-3)
    assert v.passed == (v.bound <= 1.0)
    assert f"{v.mean_drop:.2f} - 2.33 x {v.noise:.2f} = {v.bound:.2f}" in v.rule
    assert required_tolerance(p) == pytest.approx(v.bound)


def test_gate_passes_inside_the_noise_and_fails_outside_it() -> None:
    tolerance = 1.0
    inside = paired(360, dense_only=14, pruned_only=4, both=330)  # 2.78 points, within noise of 1.0
    assert inside.drop > tolerance and judge([inside], tolerance).passed
    outside = paired(360, dense_only=26, pruned_only=4, both=320)  # 6.1 points: clearly past
    verdict = judge([outside], tolerance)
    assert not verdict.passed and verdict.bound > tolerance and "> 1 points" in verdict.rule


def test_gate_tightens_on_a_large_test_set() -> None:
    small = paired(360, dense_only=14, pruned_only=4, both=330)
    large = paired(36000, dense_only=1400, pruned_only=400, both=33000)
    assert small.drop == pytest.approx(large.drop)
    assert large.se == pytest.approx(small.se / 10, rel=0.01)
    assert judge([small], 1.0).passed and not judge([large], 1.0).passed


def test_seed_spread_joins_the_noise() -> None:
    runs = [paired(360, a, b, 330) for a, b in [(10, 4), (16, 3), (8, 6)]]
    v = judge(runs, tolerance=1.0)
    drops = [r.drop for r in runs]
    assert v.mean_drop == pytest.approx(sum(drops) / 3)
    expected = math.sqrt((sum(r.se**2 for r in runs) / 3 + torch.tensor(drops).var().item()) / 3)
    assert v.noise == pytest.approx(expected)
    assert "mean over 3 seeds" in v.rule
    one = judge(runs[:1], tolerance=1.0)
    assert one.seed_std == 0 and one.noise == pytest.approx(runs[0].se)


def test_verdict_validates_its_input() -> None:
    with pytest.raises(ValueError, match="one drop"):
        Verdict((), (), 1.0)
    with pytest.raises(ValueError, match="confidence"):
        Verdict((1.0,), (0.5,), 1.0, confidence=1.5)
    assert one_sided_z(0.95) == pytest.approx(1.645, abs=1e-3)
