"""The scratch control: the pruned architecture trained from random initialisation with the baseline's recipe
and seed, scored on the same held-out images as the pruned and recovered model.

Liu et al., ICLR 2019, "Rethinking the Value of Network Pruning": when the scratch model matches the
recovered one, the criterion's value was the architecture it chose, not the weights it kept. Opt-in
(``--scratch``, ``Recipes(scratch=True)``): it costs one baseline's training per case and seed.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from .data import Workload
from .gate import Verdict
from .train import Recipe, train

# Parameters no module's reset_parameters covers (position embeddings, class tokens, layer scales) are
# drawn like timm draws its transformers' embeddings.
LOOSE_STD = 0.02


def reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every weight drawn afresh (seeded): each module's ``reset_parameters`` (and
    BatchNorm's running statistics), and the parameters no module resets from a truncated normal."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    covered: set[int] = set()
    for module in fresh.modules():
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            covered |= {id(p) for p in module.parameters(recurse=False)}
    with torch.no_grad():
        for p in fresh.parameters():
            if id(p) not in covered:
                nn.init.trunc_normal_(p, std=LOOSE_STD)
    return fresh


def train_scratch(
    pruned: nn.Module, workload: Workload, recipe: Recipe, seed: int, desc: str
) -> tuple[nn.Module, float]:
    """The architecture of ``pruned`` trained from :func:`reinitialized` weights with ``recipe`` (the
    baseline's) and ``seed``; the model and the seconds it took."""
    start = time.perf_counter()
    model = reinitialized(pruned, seed)
    train(model, workload, recipe, seed=seed, desc=f"scratch {desc}")
    return model.eval(), time.perf_counter() - start


def scratch_text(verdict: Verdict) -> str:
    """Whether the pruned weights beat the architecture alone: the recovered model's paired lead over the
    scratch model beyond the noise, the reverse, or neither."""
    lead, z = verdict.mean_drop, verdict.z * verdict.noise
    if lead > z:
        return "the pruned weights beat the architecture alone"
    if lead < -z:
        return "the architecture alone beats the pruned weights"
    return "the architecture alone matches the pruned weights (within the noise)"
