"""The golden test's power: under each change a pruning library is likely to suffer (a criterion swapped for
random ranking, two channels' scores exchanged, the classifier head no longer protected, another
Torch-Pruning pruner or ranking scope), every golden case it touches must fail. The slow set runs it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch_pruning as tp

from pruners import adapters, golden, sparse_training, structured, unstructured
from pruners.registry import get_method

from .conftest import random_importance

Mutation = Callable[[pytest.MonkeyPatch], None]
CONTROLS = ("random", "random_unstructured")
RATIO_CASES = [c for c in golden.golden_cases() if c.speedup is None]


def rescored_masks(monkeypatch: pytest.MonkeyPatch, rescore: Callable[[dict], dict]) -> None:
    """Every mask is drawn from ``rescore(scores)`` instead of the criterion's scores."""
    lowest, n_of_m = unstructured.mask_lowest, unstructured.mask_n_of_m
    monkeypatch.setattr(unstructured, "mask_lowest", lambda s, *a, **k: lowest(rescore(s), *a, **k))
    monkeypatch.setattr(unstructured, "mask_n_of_m", lambda s, *a, **k: n_of_m(rescore(s), *a, **k))


def random_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mask criterion's scores replaced by random ones before the mask is drawn."""
    rescored_masks(monkeypatch, lambda scores: {m: torch.rand_like(s) for m, s in scores.items()})


def any_random(monkeypatch: pytest.MonkeyPatch) -> None:
    random_importance(monkeypatch)
    random_masks(monkeypatch)


def _exchange(scores: torch.Tensor) -> torch.Tensor:
    """The lowest and the highest score trade places."""
    flat = scores.clone().flatten()
    low, high = int(flat.argmin()), int(flat.argmax())
    flat[low], flat[high] = flat[high].clone(), flat[low].clone()
    return flat.view_as(scores)


def _exchange_heads(scores: torch.Tensor, heads: int) -> torch.Tensor:
    """The scores of the weakest and the strongest head (blocks of the root's head-major channels) trade
    places."""
    blocks = scores.clone().view(heads, -1)
    low, high = int(blocks.sum(1).argmin()), int(blocks.sum(1).argmax())
    blocks[[low, high]] = blocks[[high, low]]
    return blocks.view_as(scores)


def exchanged_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the first group a pruner ranks (every time it ranks it) the lowest and the highest score trade
    places, and in the first layer a mask ranks; a head pruner's first attention group has its weakest and
    strongest heads' scores exchanged."""
    rank = tp.pruner.BasePruner.estimate_importance

    def first_exchanged(self, group):
        scores = rank(self, group)
        root = group[0].dep.target.module
        attention, qkv = self._is_atten_group(group)
        if scores is None or (self.prune_num_heads and not attention):
            return scores
        if getattr(self, "_exchanged", root) is not root:
            return scores
        self._exchanged = root
        return _exchange_heads(scores, self.num_heads[qkv[0]]) if self.prune_num_heads else _exchange(scores)

    def first_layer(scores: dict) -> dict:
        first = next(iter(scores))
        return {m: _exchange(s) if m is first else s for m, s in scores.items()}

    monkeypatch.setattr(tp.pruner.BasePruner, "estimate_importance", first_exchanged)
    rescored_masks(monkeypatch, first_layer)


def head_unprotected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter rule that leaves the classifier head whole is switched off."""
    monkeypatch.setattr(adapters, "classifier_layers", lambda model: [])
    monkeypatch.setattr(structured, "classifier_layers", lambda model: [])


def unrounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter rule that rounds remaining channel counts to multiples of 8 is switched off."""
    monkeypatch.setattr(structured, "channel_rounding", lambda model, multiple: None)


def no_head_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter rule that tells Torch-Pruning each attention layer's head count is switched off."""
    monkeypatch.setattr(structured, "attention_heads", lambda model: {})


def other_pruner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch-Pruning's pruner ranks across all layers where it ranked per layer, or per layer where it
    ranked globally."""
    build = structured.channel_pruner

    def changed(model, importance, ratio, example_inputs, **options):
        options["global_ranking"] = not options.get("global_ranking", False)
        options.pop("isomorphic", None)
        return build(model, importance, ratio, example_inputs, **options)

    monkeypatch.setattr(structured, "channel_pruner", changed)
    monkeypatch.setattr(sparse_training, "channel_pruner", changed)


def _channels(case: golden.GoldenCase) -> bool:
    return get_method(case.method).kind == "structured" and get_method(case.method).unit == "channels"


# Measured and left out (docs/golden.md): a classifier of 10 classes cannot shrink at multiples of 8, so
# unprotecting it changes no structured decision; swapping a sparse-training method's pruner for the plain
# BasePruner (no regulariser) changes none of the golden's 8 sparse-training steps' decisions.
ROWS: list[tuple[str, Mutation, Callable[[golden.GoldenCase], bool]]] = [
    ("criterion swapped for random", any_random, lambda c: c.method not in CONTROLS),
    ("two scores exchanged", exchanged_scores, lambda c: True),
    ("classifier head unprotected", head_unprotected, lambda c: get_method(c.method).kind == "unstructured"),
    ("channel rounding switched off", unrounded, _channels),
    ("attention head map switched off", no_head_map, lambda c: c.model == "test_vit" and _channels(c)),
    ("ranking scope flipped", other_pruner, _channels),
]
PARAMS = [
    pytest.param(mutation, case, id=f"{name}-{case.id}")
    for name, mutation, applies in ROWS
    for case in RATIO_CASES
    if applies(case)
]


@pytest.mark.slow
@pytest.mark.parametrize(("mutation", "case"), PARAMS)
def test_the_golden_check_fails_under_the_change(
    mutation: Mutation, case: golden.GoldenCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutation(monkeypatch)
    try:
        lines = golden.check(case)
    except Exception as err:  # a change that breaks the pruned model fails the golden test too
        lines = [f"{type(err).__name__}: {err}"]
    assert lines, f"{case.id} still decides what its golden entry says under: {mutation.__doc__}"
