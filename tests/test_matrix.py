"""Case selection and the bench's command-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pruners
from pruners.matrix import DEFAULT_MODELS, QUICK_MODELS, build_cases, parse_seeds, split_csv

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_cover_every_method_and_model() -> None:
    cases = build_cases()
    assert {c.model for c in cases} == set(DEFAULT_MODELS)
    assert {c.method for c in cases} == set(pruners.list_methods())
    assert all(c.ratio == pruners.get_method(c.method).default_ratio for c in cases)
    quick = build_cases(quick=True)
    assert {c.model for c in quick} == set(QUICK_MODELS) and len(quick) >= 6


def test_explicit_selection_and_wildcards() -> None:
    cases = build_cases(["resnet18"], ["l*", "random"], ["0.2", "0.4"])
    assert [c.id for c in cases] == [
        "resnet18-l1-0.2",
        "resnet18-l1-0.4",
        "resnet18-random-0.2",
        "resnet18-random-0.4",
    ]
    assert split_csv(" a, b,,c ") == ["a", "b", "c"] and split_csv(None) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["resnet1800"]}, "unknown timm model"),
        ({"methods": ["nope"]}, "no pruning method matches 'nope'; available: global_magnitude, l1, random"),
        ({"ratios": ["1.5"]}, "ratio must be in"),
    ],
)
def test_bad_selection_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_cases(**kwargs)


def test_seeds_are_parsed_strictly() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds("7") == [7]
    for bad in ("", "1,a", "-1", "1.5", "2,2"):
        with pytest.raises(ValueError, match="seeds must be"):
            parse_seeds(bad)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--methods", "nope"], "no pruning method matches 'nope'; available:"),
        (["--seeds", "0,zero"], "seeds must be comma-separated non-negative integers"),
    ],
)
def test_bench_reports_usage_errors(option: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--collect-only", "-q", *option],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_bench_collects_the_quick_matrix() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--collect-only", "-q", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = {c.id for c in build_cases(quick=True)}
    assert {line.split("[")[-1].rstrip("]") for line in proc.stdout.splitlines() if "::" in line} == ids
