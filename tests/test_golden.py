"""Golden decisions on the pinned reference models (pruners/reference/): every method on every reference
model it applies to decides what its golden entry says, and a case without an entry says how to add one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pruners import cli, golden, registry
from pruners.decisions import Decision, GroupRanking, LayerDecision, differences

CASES = golden.golden_cases()
# The MACs-target searches on the two larger reference models take most of the time: the slow set.
FAST_MODELS = ("test_resnet",)


def _param(case: golden.GoldenCase) -> object:
    slow = case.speedup is not None and case.model not in FAST_MODELS
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_the_method_decides_what_its_golden_entry_says(
    case: golden.GoldenCase, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--update-golden"):
        golden.update({case.id: golden.decide(case)})
        return
    try:
        lines = golden.check(case)
    except KeyError as err:
        pytest.fail(err.args[0], pytrace=False)
    assert not lines, f"{case.id} decides differently from its golden entry:\n  " + "\n  ".join(lines)


def test_a_method_without_a_golden_entry_fails_with_one_line_that_says_how_to_add_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = registry.get_method("l1")
    monkeypatch.setitem(registry._METHODS, "l1_copy", dataclasses.replace(spec, name="l1_copy"))
    cases = [c for c in golden.golden_cases(["test_resnet"]) if c.method == "l1_copy"]
    assert [c.id for c in cases] == ["test_resnet/l1_copy/0.3", "test_resnet/l1_copy/2x"]
    with pytest.raises(KeyError) as err:
        golden.check(cases[0])
    message = err.value.args[0]
    assert "\n" not in message
    assert message.startswith("no golden entry for test_resnet/l1_copy/0.3: run `prunebench golden --update`")


def test_every_golden_entry_belongs_to_a_case_and_every_case_has_one() -> None:
    entries = golden.load_golden()
    assert sorted(entries) == sorted(c.id for c in CASES)


def _ranking(scores: tuple[float, ...], removed: tuple[int, ...]) -> Decision:
    layers = {"conv": LayerDecision(len(scores), removed)}
    return Decision(layers, {"conv": GroupRanking(scores, removed, ("conv",))})


def test_a_tie_at_the_cut_may_change_sides_and_nothing_else_may() -> None:
    golden_decision = _ranking((0.1, 0.5, 0.50001, 0.9), (0, 1))
    tied = _ranking((0.1, 0.50001, 0.5, 0.9), (0, 2))
    assert differences(golden_decision, tied) == []
    swapped = _ranking((0.1, 0.5, 0.50001, 0.9), (0, 3))
    lines = differences(golden_decision, swapped)
    assert any("outside the tie band" in line for line in lines), lines
    assert any(line.startswith("layer conv: removed 2 of 4 channels") for line in lines), lines


def test_scores_that_move_beyond_the_tolerance_are_named() -> None:
    moved = differences(_ranking((0.1, 0.5, 0.6, 0.9), (0, 1)), _ranking((0.1, 0.5, 0.7, 0.9), (0, 1)))
    assert moved == ["group conv: 1 of 4 scores moved beyond 0.001 of the largest (channel 2: 0.6 -> 0.7)"]


def test_a_decision_survives_the_golden_file_round_trip() -> None:
    decision = _ranking((0.1, 0.5, 0.50001, 0.9), (0, 1))
    again = Decision.from_json(decision.to_json())
    assert again.layers == decision.layers
    assert differences(decision, again) == []
    assert again.fingerprint() == decision.fingerprint()


def test_the_command_checks_and_names_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    entries = golden.load_golden()
    path = tmp_path / "golden.json"
    monkeypatch.setattr(golden, "GOLDEN_PATH", path)
    golden.update(entries)
    assert golden.load_golden() == entries, "the file round-trips"
    assert cli.main(["golden", "--methods", "magnitude"]) == 0
    assert capsys.readouterr().out.startswith("all 3 cases decide what their golden entries say")
    changed = dict(entries["test_resnet/magnitude/0.5"], macs=1)
    golden.update({"test_resnet/magnitude/0.5": changed})
    assert cli.main(["golden", "--methods", "magnitude"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("test_resnet/magnitude/0.5: macs: 1 -> ")
    assert err[-1].startswith("prunebench golden: error: 1 of 3 cases decide differently")
    assert cli.main(["golden", "--methods", "magnitude", "--update"]) == 0
    assert golden.load_golden() == entries


def test_a_golden_file_that_is_not_one_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "golden.json"
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not a golden-decision file"):
        golden.load_golden(path)
