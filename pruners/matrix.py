"""The bench matrix: which model x method x ratio cases to run, from user options."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from .adapters import missing_features, model_features
from .models import default_target, select_models
from .pruning import case_refusal
from .registry import check_ratio, get_method, list_methods
from .search import check_speedup

DEFAULT_MODELS = ("resnet18", "mobilenetv3_small_100", "vit_tiny_patch16_224")

# Tiers without --models / --methods: model -> method patterns. "full" is every method on every default
# model it applies to (what the nightly job runs); "default" is every method on one CNN and l1 on a
# depthwise CNN: what calibration covers, and what keeps a plain `pytest bench/` under 10 minutes on 2
# cores (a ViT's baseline and dense control alone take longer to train here than the whole tier to run).
# "quick" is CI's smoke run: a few of the default tier's cases, so each is judged with a calibrated gate.
TIERS: dict[str, dict[str, tuple[str, ...]]] = {
    "quick": {
        "resnet18": ("random", "l1", "global_magnitude"),
        "mobilenetv3_small_100": ("l1",),
    },
    "default": {
        "resnet18": ("*",),
        "mobilenetv3_small_100": ("l1",),
    },
    "full": dict.fromkeys(DEFAULT_MODELS, ("*",)),
    # The tier whose calibrated gates and ranking give verdicts (docs/fashion-mnist.md): every method on
    # resnet18 at its target and l1 against random on the depthwise CNN, on a workload without a ceiling.
    "verdict": {
        "resnet18": ("*",),
        "mobilenetv3_small_100": ("l1", "random"),
    },
}

# The tier a plain run picks on a workload family (``default`` on any other).
FAMILY_TIERS: dict[str, str] = {"fashion_mnist": "verdict"}


def default_tier(family: str = "digits") -> str:
    """The tier a run on a workload of ``family`` gets without ``--quick``, ``--full`` or a selection."""
    return FAMILY_TIERS.get(family, "default")


class Case(NamedTuple):
    """One bench case: ``method`` on ``model`` at a ``ratio``, or (structured methods) at the ratio that
    removes ``speedup`` times the MACs, or that makes the measured latency ``latency`` times faster, in
    which cases ``ratio`` is ``None``."""

    model: str
    method: str
    ratio: float | None
    speedup: float | None = None
    latency: float | None = None

    @property
    def cost(self) -> str:
        """``2x`` for a MACs target, ``2x-latency`` for a latency target, else the ratio (``0.3``)."""
        if self.latency is not None:
            return f"{self.latency:g}x-latency"
        return f"{self.speedup:g}x" if self.speedup is not None else f"{self.ratio:g}"

    @property
    def id(self) -> str:
        return f"{self.model}-{self.method}-{self.cost}"


def split_csv(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` -> ``[]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_seeds(text: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``ValueError`` for anything but distinct non-negative integers."""
    parts = split_csv(text)
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"seeds must be comma-separated non-negative integers, got {text!r}")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {text!r}")
    return seeds


def select_methods(patterns: Iterable[str]) -> list[str]:
    """Registered method names matching any of ``patterns`` (names or wildcards), in registry order."""
    names: list[str] = []
    for pattern in patterns:
        matched = list_methods(pattern)
        if not matched:
            raise ValueError(f"no pruning method matches {pattern!r}; available: {', '.join(list_methods())}")
        names += [name for name in matched if name not in names]
    return names


def choose_tier(quick: bool, full: bool, selected: bool, family: str = "digits") -> str:
    """The tier that ``--quick`` / ``--full`` ask for, else the ``family``'s (:func:`default_tier`); with
    each other or a selection, a ``ValueError``."""
    if quick + full + selected > 1:
        raise ValueError("choose one of `quick`, `full`, or `models` / `methods`")
    return "quick" if quick else "full" if full else default_tier(family)


def not_applicable(model: str, method: str) -> str | None:
    """Why ``method`` cannot prune ``model`` (e.g. no attention heads for ``vit_heads``), else ``None``."""
    return missing_features(get_method(method).requires, model_features(model))


def _pairs(models: list[str], methods: list[str], tier: str) -> list[tuple[str, str]]:
    if models or methods:
        names = select_methods(methods) if methods else list_methods()
        return [(model, name) for model in select_models(models) or DEFAULT_MODELS for name in names]
    if tier in TIERS:
        return [(model, name) for model, patterns in TIERS[tier].items() for name in select_methods(patterns)]
    raise ValueError(f"unknown tier {tier!r}; choose from {', '.join(TIERS)}")


def left_out(
    models: Iterable[str] = (),
    methods: Iterable[str] = (),
    tier: str = "default",
    ratios: Iterable[float | str] = (),
    speedups: Iterable[float] = (),
    family: str = "digits",
    latencies: Iterable[float] = (),
) -> list[tuple[str, str, str]]:
    """``(model, method, reason)`` for each selected pair that :func:`build_cases` leaves out because the
    method does not apply to the model, or ``(model, method-ratio, reason)`` for a ratio the method does not
    take (``nm_2_4`` takes 0.5 only)."""
    return _matrix(models, methods, ratios, tier, speedups, family, latencies)[1]


def parse_speedups(text: str | None, name: str = "speedups") -> list[float]:
    """``"1.5,2,3"`` -> ``[1.5, 2.0, 3.0]``: distinct MACs targets above 1 (latency targets, for
    ``name="latency_speedups"``); ``None`` -> ``[]``."""
    what, ratio = ("MACs target", "dense / pruned MACs")
    if name == "latency_speedups":
        what, ratio = ("latency target", "dense / pruned latency")
    try:
        targets = [check_speedup(part, what, ratio) for part in split_csv(text)]
    except ValueError as err:
        raise ValueError(f"`{name}` {text!r}: {err}") from None
    if len(set(targets)) != len(targets):
        raise ValueError(f"{what}s must be distinct, got {text!r}")
    return targets


def build_cases(
    models: Iterable[str] = (),
    methods: Iterable[str] = (),
    ratios: Iterable[float | str] = (),
    tier: str = "default",
    speedups: Iterable[float] = (),
    family: str = "digits",
    latencies: Iterable[float] = (),
) -> list[Case]:
    """The bench's cases: model x method pairs at equal cost. Every structured method runs at each MACs
    target of ``speedups`` (default: the model's own on a workload of ``family``,
    :func:`pruners.models.default_target`, unless ``ratios`` or ``latencies`` are given) and at each
    measured latency target of ``latencies`` (mask methods, whose dense kernels run at the dense cost, are
    then left out), and mask methods,
    which have no MACs target, at ``ratios`` (default: their own): they are compared among themselves.
    Given ``ratios`` and no ``speedups``, every method runs at each of those ratios.

    Given ``models`` and/or ``methods``, every selected model (default :data:`DEFAULT_MODELS`) meets every
    selected method (default: all registered); given neither, the :data:`TIERS` entry ``tier`` decides.
    Pairs where the method does not apply to the model, and ratios a method does not take, are left out
    (:func:`left_out` says why). Raises ``ValueError`` naming any unknown model, method, tier or bad ratio,
    or when nothing is left.
    """
    cases, refused = _matrix(models, methods, ratios, tier, speedups, family, latencies)
    if refused and not cases:
        where: dict[str, list[str]] = {}
        for model, method, why in refused:
            where.setdefault(why, []).append(f"{method} on {model}")
        raise ValueError(
            "no case applies: " + "; ".join(f"{why} ({', '.join(w)})" for why, w in where.items())
        )
    return cases


def _matrix(
    models: Iterable[str],
    methods: Iterable[str],
    ratios: Iterable[float | str],
    tier: str,
    speedups: Iterable[float],
    family: str = "digits",
    latencies: Iterable[float] = (),
) -> tuple[list[Case], list[tuple[str, str, str]]]:
    """The cases of :func:`build_cases` and what it left out, with why."""
    models, methods = list(models), list(methods)
    ratios = [check_ratio(r) for r in ratios]
    speedups = [check_speedup(s) for s in speedups]
    latencies = [check_speedup(s, "latency target", "dense / pruned latency") for s in latencies]
    refused = []
    pairs = []
    for model, method in _pairs(models, methods, tier):
        reason = not_applicable(model, method)
        if not reason and latencies and get_method(method).kind != "structured":
            reason = "a mask method keeps dense kernels, which run at the dense latency: no latency target"
        if reason:
            refused.append((model, method, reason))
        else:
            pairs.append((model, method))

    def costs(model: str, method: str) -> list[tuple[float | None, float | None, float | None]]:
        if get_method(method).kind != "structured":
            return [(ratio, None, None) for ratio in ratios or [get_method(method).default_ratio]]
        timed = [(None, None, target) for target in latencies]
        if speedups or not (ratios or latencies):
            return [(None, target, None) for target in speedups or [default_target(model, family)]] + timed
        return [(ratio, None, None) for ratio in ratios] + timed

    cases = []
    for case in (Case(model, method, *cost) for model, method in pairs for cost in costs(model, method)):
        reason = case.ratio is not None and case_refusal(case.model, case.method, case.ratio)
        if reason:
            refused.append((case.model, f"{case.method}-{case.cost}", reason))
        else:
            cases.append(case)
    return cases, refused


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: shard 2 of 3, counted from 1; ``None`` or ``""`` -> ``(1, 1)``."""
    if not text:
        return 1, 1
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 1 <= int(index) <= int(count):
        raise ValueError(f"shard must be I/N with 1 <= I <= N, got {text!r}")
    return int(index), int(count)


def shard(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """Shard ``index`` of ``count`` (from 1): every ``count``-th case, starting at ``index - 1``.

    Deterministic and round-robin, so each shard gets a share of every model's cases; the shards are
    disjoint and together hold every case.
    """
    return list(cases[index - 1 :: count])


def select_cases(
    models: Iterable[str] = (),
    methods: Iterable[str] = (),
    ratios: Iterable[float | str] = (),
    tier: str = "default",
    shard_spec: str | None = None,
    speedups: Iterable[float] = (),
    family: str = "digits",
    latencies: Iterable[float] = (),
) -> tuple[list[Case], list[Case]]:
    """The selected matrix (:func:`build_cases`) and the part of it shard ``shard_spec`` (``I/N``) runs."""
    cases = build_cases(models, methods, ratios, tier, speedups, family, latencies)
    return cases, shard(cases, *parse_shard(shard_spec))


MODELS_ENV, METHODS_ENV, TIER_ENV = "PRUNEBENCH_MODELS", "PRUNEBENCH_METHODS", "PRUNEBENCH_TIER"
SHARD_ENV, SPEEDUPS_ENV = "PRUNEBENCH_SHARD", "PRUNEBENCH_SPEEDUPS"


def cases_from_env(environ: Mapping[str, str] = os.environ) -> tuple[list[Case], list[Case]]:
    """The matrix and this shard's part of it, chosen like the bench options but from the environment.

    ``PRUNEBENCH_MODELS`` and ``PRUNEBENCH_METHODS`` (comma-separated, wildcards allowed),
    ``PRUNEBENCH_TIER`` (``quick``, ``default`` or ``full``), ``PRUNEBENCH_SHARD`` (``I/N``) and
    ``PRUNEBENCH_SPEEDUPS`` (MACs targets) play the parts of ``--models``, ``--methods``, ``--quick`` /
    ``--full``, ``--shard`` and ``--speedups`` for the asv suite, which takes no command-line options of
    its own.
    """
    return select_cases(
        split_csv(environ.get(MODELS_ENV)),
        split_csv(environ.get(METHODS_ENV)),
        tier=environ.get(TIER_ENV) or "default",
        shard_spec=environ.get(SHARD_ENV),
        speedups=parse_speedups(environ.get(SPEEDUPS_ENV)),
    )
