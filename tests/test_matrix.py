"""Case selection and the bench's command-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pruners
from pruners.matrix import (
    DEFAULT_MODELS,
    TIERS,
    Case,
    build_cases,
    cases_from_env,
    choose_tier,
    left_out,
    not_applicable,
    parse_seeds,
    parse_shard,
    shard,
    split_csv,
)
from pruners.models import default_target

from .conftest import bench_where_run_raises

ROOT = Path(__file__).resolve().parents[1]


def test_tiers() -> None:
    full = build_cases(tier="full")
    assert sorted((c.model, c.method) for c in full) == sorted(
        (m, name) for m in DEFAULT_MODELS for name in pruners.list_methods() if not not_applicable(m, name)
    )
    for c in full:
        spec = pruners.get_method(c.method)
        target = default_target(c.model)
        equal_cost = (None, target) if spec.kind == "structured" else (spec.default_ratio, None)
        assert (c.ratio, c.speedup) == equal_cost, "structured methods at equal cost, masks at their ratio"
    default, quick = build_cases(), build_cases(tier="quick")
    assert set(default) <= set(full) and len(quick) == 4
    assert set(quick) <= set(default), (
        "the smoke tier judges only cases the default tier's calibration covers"
    )
    assert {c.method for c in default if c.model == DEFAULT_MODELS[0]} == {
        name for name in pruners.list_methods() if not not_applicable(DEFAULT_MODELS[0], name)
    }
    assert {c.model for c in default} == set(TIERS["default"]) < set(DEFAULT_MODELS) == set(TIERS["full"])
    assert build_cases(methods=["l1"]) == [c for c in full if c.method == "l1"]
    assert choose_tier(False, False, False) == "default" and choose_tier(False, True, False) == "full"
    for flags in [(True, True, False), (True, False, True), (False, True, True)]:
        with pytest.raises(ValueError, match="choose one of `quick`, `full`, or `models` / `methods`"):
            choose_tier(*flags)
    with pytest.raises(ValueError, match="unknown tier 'huge'"):
        build_cases(tier="huge")


def test_pairs_a_method_cannot_prune_are_left_out_with_a_reason() -> None:
    assert not_applicable("resnet18", "vit_heads") == "no attention layers to prune"
    assert not_applicable("vit_tiny_patch16_224", "bn_scale") == "no batchnorm layers to prune"
    assert not_applicable("vit_tiny_patch16_224", "vit_heads") is None
    cases = build_cases(methods=["vit_heads", "bn_scale"])
    assert {(c.model, c.method) for c in cases} == {
        ("vit_tiny_patch16_224", "vit_heads"),
        ("resnet18", "bn_scale"),
        ("mobilenetv3_small_100", "bn_scale"),
    }
    assert set(left_out(methods=["vit_heads", "bn_scale"])) == {
        ("resnet18", "vit_heads", "no attention layers to prune"),
        ("mobilenetv3_small_100", "vit_heads", "no attention layers to prune"),
        ("vit_tiny_patch16_224", "bn_scale", "no batchnorm layers to prune"),
    }
    with pytest.raises(
        ValueError, match=r"no case applies: no attention layers to prune \(vit_heads on resnet18\)"
    ):
        build_cases(["resnet18"], ["vit_heads"])


def test_explicit_selection_and_wildcards() -> None:
    cases = build_cases(["resnet18"], ["l?", "random"], ["0.2", "0.4"])
    assert [c.id for c in cases] == [
        "resnet18-l1-0.2",
        "resnet18-l1-0.4",
        "resnet18-l2-0.2",
        "resnet18-l2-0.4",
        "resnet18-random-0.2",
        "resnet18-random-0.4",
    ]
    assert split_csv(" a, b,,c ") == ["a", "b", "c"] and split_csv(None) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["resnet1800"]}, "unknown timm model"),
        (
            {"methods": ["nope"]},
            "no pruning method matches 'nope'; available: bn_scale, fpgm, global_magnitude, group_norm,",
        ),
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


@pytest.mark.parametrize("count", [1, 2, 3, 4, 20])
def test_shards_partition_the_matrix(count: int) -> None:
    cases = build_cases()
    shards = [shard(cases, i, count) for i in range(1, count + 1)]
    assert sorted(c for part in shards for c in part) == sorted(cases)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard(build_cases(), i, count) for i in range(1, count + 1)]


def test_shard_is_parsed_strictly() -> None:
    assert parse_shard(None) == (1, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard must be I/N"):
            parse_shard(bad)


def test_asv_selection_from_the_environment_matches_the_options() -> None:
    env = {"PRUNEBENCH_MODELS": "resnet18", "PRUNEBENCH_METHODS": "l1,random", "PRUNEBENCH_SHARD": "2/2"}
    cases, mine = cases_from_env(env)
    assert cases == build_cases(["resnet18"], ["l1", "random"])
    assert mine == shard(cases, 2, 2) == [cases[1]]
    assert cases_from_env({}) == (build_cases(), build_cases())
    assert cases_from_env({"PRUNEBENCH_TIER": "full"})[0] == build_cases(tier="full")
    with pytest.raises(ValueError, match="unknown timm model"):
        cases_from_env({"PRUNEBENCH_MODELS": "resnet1800"})


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--shard", "3/2"], "shard must be I/N with 1 <= I <= N"),
        (["--full", "--methods", "l1"], "choose one of --quick, --full, or --models / --methods"),
        (["--methods", "nope"], "no pruning method matches 'nope'; available:"),
        (["--seeds", "0,zero"], "seeds must be comma-separated non-negative integers"),
        (
            ["--models", "resnet18", "--methods", "vit_heads"],
            "no case applies: no attention layers to prune (vit_heads on resnet18)",
        ),
        (["--speedup", "1"], "a MACs target must be > 1"),
        (["--speedups", "2,2"], "MACs targets must be distinct"),
    ],
)
def test_bench_reports_usage_errors(bench: pytest.Pytester, option: list[str], message: str) -> None:
    result = bench.runpytest("--collect-only", "-q", *option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert message in result.stderr.str()


def test_bench_collects_the_quick_matrix(bench: pytest.Pytester) -> None:
    result = bench.runpytest("--collect-only", "-q", "--quick")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    ids = {c.id for c in build_cases(tier="quick")}
    assert {line.split("[")[-1].rstrip("]") for line in result.outlines if "::" in line} == ids


def test_bench_names_the_pairs_it_leaves_out(bench: pytest.Pytester) -> None:
    result = bench.runpytest("--collect-only", "--methods", "vit_heads")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out + result.stderr.str()
    assert "prunebench: 1 cases, 2 pairs not applicable, seeds [0]" in out
    assert "left out resnet18-vit_heads (not applicable: no attention layers to prune)" in out
    assert "test_prune[vit_tiny_patch16_224-vit_heads-2x]" in out


def test_bench_collects_every_structured_method_at_each_macs_target(bench: pytest.Pytester) -> None:
    result = bench.runpytest(
        "--collect-only", "--models", "resnet18", "--methods", "l1,magnitude", "--speedups", "1.5,3"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    for case in ("resnet18-l1-1.5x", "resnet18-l1-3x", "resnet18-magnitude-0.5"):
        assert f"test_prune[{case}]" in result.stdout.str()


@pytest.mark.slow
def test_under_loadgroup_the_workers_start_on_different_models_then_share_the_rest(
    pytester: pytest.Pytester,
) -> None:
    """Under ``-n 2 --dist loadgroup`` each worker's first case is a different model's (so from an empty
    cache they train different baselines at once), and a model's other cases go to both workers."""
    bench = bench_where_run_raises(pytester, "pruners.TargetUnreachableError('stand-in')")
    argv = ["--models", "resnet18,mobilenetv3_small_100", "--methods", "l1,random,l2", "--ratios", "0.3"]
    result = bench.runpytest_subprocess(*argv, "-n", "2", "--dist", "loadgroup", "-v")
    ran = re.findall(r"\[(gw\d)\] .*SKIPPED .*test_prune\[(\w+)-\w+-0\.3\]", result.stdout.str())
    assert len(ran) == 6, result.stdout.str()
    first = {worker: next(model for w, model in ran if w == worker) for worker, _ in ran}
    assert len(first) == 2 and len(set(first.values())) == 2, ran
    workers = {model: {worker for worker, m in ran if m == model} for _, model in ran}
    assert any(len(w) == 2 for w in workers.values()), workers


def test_models_first_moves_each_models_first_case_to_the_front_and_keeps_the_rest_in_order() -> None:
    from pruners.matrix_plugin import models_first

    names = [("aa", "l1"), ("aa", "l2"), ("bb", "l1"), ("aa", "l3"), ("bb", "l2")]
    a1, a2, b1, a3, b2 = (Case(model, method, 0.3, None) for model, method in names)
    assert models_first([a1, a2, b1, a3, b2]) == [a1, b1, a2, a3, b2]
    assert models_first([a1, a2]) == [a1, a2]
