"""Layer sensitivity: one dependency group pruned at a time, each point paired against the dense model, the
groups ranked by the top-1 their MACs cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import pruners
from pruners import sensitivity
from pruners.cli import main
from pruners.registry import MethodData
from pruners.spec import CaseSpec


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).eval()


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_each_point_prunes_only_its_group_and_the_dear_and_cheap_groups_are_found(
    dense: nn.Module, inputs: torch.Tensor
) -> None:
    groups = sensitivity.layer_groups(dense, "l1", inputs, MethodData())
    assert len(groups) >= 3 and len(set(groups)) == len(groups)
    ruinous, harmless = groups[1], groups[-1]
    full = _widths(dense)
    seen = []

    def score(pruned: nn.Module) -> tuple[float, float, float]:
        shrunk = {n for n, w in _widths(pruned).items() if w < full[n]}
        assert shrunk, "every scored point removed channels"
        seen.append(shrunk)
        drop = 30.0 if ruinous in shrunk else 0.0 if harmless in shrunk else 2.0
        return 90.0 - drop, drop, 0.5

    points, skipped = sensitivity.scan(dense, "l1", inputs, MethodData(), score, (0.25, 0.5))
    assert {p.group for p in points} | {g for g, _, _ in skipped} == set(groups)
    assert all(len([g for g in groups if g in s]) == 1 for s in seen), "one group's root per point"
    assert all(0 < p.share < 100 and p.macs_removed > 0 for p in points)
    result = sensitivity.Sensitivity(
        "test_resnet", "l1", "digits", 90.0, 1000, tuple(points), tuple(skipped), 1
    )
    assert result.costliest(1) == [ruinous] and result.cheapest(1) == [harmless]
    assert f"the largest drop per MAC removed is in {ruinous}" in result.summary()


def test_a_wider_ratio_of_one_group_removes_more_of_its_macs(dense: nn.Module, inputs: torch.Tensor) -> None:
    points, _ = sensitivity.scan(dense, "l1", inputs, MethodData(), lambda m: (90.0, 1.0, 0.1), (0.25, 0.75))
    by_group: dict[str, list[sensitivity.SensitivityPoint]] = {}
    for p in points:
        by_group.setdefault(p.group, []).append(p)
    pairs = [sorted(v, key=lambda p: p.ratio) for v in by_group.values() if len(v) == 2]
    assert pairs and all(a.macs_removed < b.macs_removed for a, b in pairs)


def test_methods_that_are_not_channel_criteria_are_refused() -> None:
    with pytest.raises(ValueError, match="`method`: sensitivity scans channel groups"):
        sensitivity.layer_sensitivity(CaseSpec("resnet18", "magnitude", 0.5))
    with pytest.raises(ValueError, match="trains while it prunes"):
        sensitivity.layer_sensitivity(CaseSpec("resnet18", "group_norm", 0.3))


@pytest.mark.slow
def test_the_scan_of_resnet18_writes_its_table_and_plot(tmp_path: Path) -> None:
    result = pruners.layer_sensitivity(CaseSpec("resnet18", "l1", 0.3), ratios=(0.5,))
    assert result.points and result.dense_top1 > 90
    md, png = result.write(tmp_path)
    assert "| `" in md.read_text() and png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratios", "0.5,1.5"], "pruning ratio must be in (0, 1), got '1.5'"),
        (["--method", "magnitude"], "--method: sensitivity scans channel groups"),
        (["--model", "resnet_nope"], "resnet_nope"),
    ],
)
def test_bad_sensitivity_arguments_are_one_line_and_exit_1(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = {"--model": "resnet18", "--method": "l1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["sensitivity", *[x for kv in base.items() for x in kv], "--out-dir", str(tmp_path / "out")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
