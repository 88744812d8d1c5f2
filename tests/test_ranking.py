"""The ranking at equal cost: tie groups from paired significance, and each group against random."""

from __future__ import annotations

import pytest
import torch

from pruners.ranking import critical_z, rank, tie_lines
from pruners.report import ReportRow

N = 2000


def _row(method: str, wrong: int, offset: int = 0) -> ReportRow:
    """A recovered model that misses ``wrong`` of the N images, starting at image ``offset``."""
    correct = torch.ones(N, dtype=torch.bool)
    correct[offset : offset + wrong] = False
    top1 = 100.0 * correct.float().mean().item()
    return ReportRow(
        "resnet18", method, 0.4, 99.0, 10.0, top1, 4, 1, 2, 1, 1.0, 0.5, True,
        target_speedup=3.0, recalibrated_top1=top1,
        correct={0: {"recovered": correct, "recalibrated": correct}},
    )  # fmt: skip


def test_the_bonferroni_quantile_grows_with_the_comparisons() -> None:
    assert critical_z(1) == pytest.approx(1.96, abs=0.01)
    assert critical_z(10) == pytest.approx(2.807, abs=0.01)


def test_methods_a_run_cannot_tell_apart_share_a_group_and_a_clear_gap_splits_them() -> None:
    rows = [_row("l2", 100), _row("fpgm", 102), _row("l1", 104), _row("taylor", 300), _row("random", 400)]
    standings = rank(rows)
    assert [s.method for s in standings] == ["l2", "fpgm", "l1", "taylor", "random"]
    assert [s.group for s in standings] == [1, 1, 1, 2, 3]
    assert standings[0].vs_best is None and standings[2].vs_best.mean_drop == pytest.approx(-0.2)
    assert standings[1].vs_random.mean_drop == pytest.approx(14.9)
    lines = tie_lines(standings)
    assert lines[0].startswith("1. `l2`, `fpgm`, `l1`: tied; each beats random (`l2` +15.00 ±")
    assert lines[1].startswith("2. `taylor`: alone; beats random")
    assert lines[2] == "3. `random`: alone"


def test_a_method_within_the_noise_of_random_is_not_called_better() -> None:
    standings = rank([_row("l1", 401, offset=5), _row("random", 400)])
    assert [s.group for s in standings] == [1, 1]
    assert "not told apart from random" in tie_lines(standings)[0]


def test_a_method_worse_than_random_is_said_to_lose_to_it() -> None:
    standings = rank([_row("lamp", 600), _row("random", 100)])
    assert [s.method for s in standings] == ["random", "lamp"]
    assert tie_lines(standings)[1].startswith("2. `lamp`: alone; loses to random")


def test_without_the_reference_the_groups_still_come_from_the_pairs() -> None:
    standings = rank([_row("l1", 100), _row("l2", 400)], reference=None)
    assert [s.group for s in standings] == [1, 2] and standings[1].vs_random is None
    assert tie_lines(standings, None) == ["1. `l1`: alone", "2. `l2`: alone"]


def test_cases_at_a_latency_target_get_their_own_equal_latency_table_naming_where_it_was_timed() -> None:
    import dataclasses

    from pruners.equal_cost import equal_cost_tables

    where = {"runtime": "onnxruntime", "size": 224}
    timed = [
        dataclasses.replace(r, target_speedup=None, target_latency=2.0, target_latency_search=where)
        for r in (_row("l1", 100), _row("random", 300))
    ]
    tables = equal_cost_tables([_row("l1", 100), _row("random", 300), *timed])
    assert "### resnet18 at 3x fewer MACs" in tables
    assert "### resnet18 at 2x measured latency (onnxruntime at 224 px)" in tables
    latency_part = tables.split("measured latency")[1]
    assert "| 1 | l1 |" in latency_part and "| 2 | random |" in latency_part
