"""What a pruning method decided: which output channels (or heads) each layer kept, or which weights its
mask zeroed, and the importance scores the channels were ranked by.

A decision is exact and cheap to compare, where accuracy is neither: two runs of the same method on the same
weights must decide the same, so a changed decision on an unchanged baseline is a changed method. The
pruning step (:func:`pruners.structured.apply`) reports every group it prunes to :func:`recording`, and
:func:`pruners.prune` attaches the result to its :class:`pruners.PruneRecord`. :func:`differences` compares
two decisions, tolerating only channels whose scores sit within a stated tie band of the cut.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

# Scores may differ by this fraction of their group's largest |score| (float paths differ between CPUs and
# thread counts); a channel whose score lies within TIE_RTOL of the cut may change sides.
SCORE_RTOL = 1e-3
TIE_RTOL = 1e-3
MASK = "weight_mask"


@dataclass(frozen=True)
class LayerDecision:
    """One layer's decision. Structured: the output channels ``removed`` of its dense ``width`` (the rest
    are kept). Mask: how many of its ``width`` weights were ``zeroed`` and ``mask``, a digest of which."""

    width: int
    removed: tuple[int, ...] = ()
    zeroed: int = 0
    mask: str = ""

    def describe(self) -> str:
        if self.mask:
            return f"{self.zeroed} of {self.width} weights zeroed"
        return f"removed {len(self.removed)} of {self.width} channels"


@dataclass(frozen=True)
class GroupRanking:
    """One dependency group as Torch-Pruning ranked it: the ``scores`` of its root layer's channels, the
    root indices ``removed``, and the ``layers`` whose output channels followed them."""

    scores: tuple[float, ...]
    removed: tuple[int, ...]
    layers: tuple[str, ...]

    def tie_band(self) -> set[int] | None:
        """The channels within :data:`TIE_RTOL` of the cut between removed and kept scores, or ``None``
        when the removed channels are not simply the lowest scores (heads, grouped channels): their
        decisions then compare exactly."""
        removed = set(self.removed)
        low = [s for i, s in enumerate(self.scores) if i in removed]
        high = [s for i, s in enumerate(self.scores) if i not in removed]
        if not low or not high or max(low) > min(high):
            return None
        width = TIE_RTOL * max(abs(s) for s in self.scores)
        return {i for i, s in enumerate(self.scores) if max(low) - width <= s <= min(high) + width}


@dataclass(frozen=True)
class Decision:
    """Everything one pruning call decided, by layer name, and the rankings behind it, by root layer."""

    layers: Mapping[str, LayerDecision] = field(default_factory=dict)
    groups: Mapping[str, GroupRanking] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A digest of the decisions (not the scores, which float paths move): equal for equal decisions."""
        return digest({name: [d.width, list(d.removed), d.zeroed, d.mask] for name, d in self.layers.items()})

    def to_json(self) -> dict:
        """Plain JSON: a layer's removed channels, or its mask's count and digest; a group's scores as
        :func:`encode_scores`, its removed root channels and its layers."""
        return {
            "layers": {name: _layer_json(d) for name, d in self.layers.items()},
            "groups": {
                name: {**encode_scores(g.scores), "removed": list(g.removed), "layers": list(g.layers)}
                for name, g in self.groups.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Decision:
        layers = {
            name: LayerDecision(
                d["width"], tuple(d.get("removed", ())), d.get("zeroed", 0), d.get("mask", "")
            )
            for name, d in data["layers"].items()
        }
        groups = {
            name: GroupRanking(decode_scores(g), tuple(g["removed"]), tuple(g["layers"]))
            for name, g in data["groups"].items()
        }
        return cls(layers, groups)


def _layer_json(d: LayerDecision) -> dict:
    if d.mask:
        return {"width": d.width, "zeroed": d.zeroed, "mask": d.mask}
    return {"width": d.width, "removed": list(d.removed)}


def encode_scores(scores: Sequence[float]) -> dict:
    """``scores`` as their largest magnitude ``scale`` and, divided by it, float16 in base64: within
    2.5e-4 of ``scale`` each, well inside :data:`SCORE_RTOL`, at a fifth of the text."""
    scale = max((abs(s) for s in scores), default=0.0) or 1.0
    half = torch.tensor([s / scale for s in scores], dtype=torch.float16)
    return {"scale": float(f"{scale:.6g}"), "scores": base64.b64encode(half.numpy().tobytes()).decode()}


def decode_scores(data: Mapping) -> tuple[float, ...]:
    """The scores :func:`encode_scores` wrote."""
    half = torch.frombuffer(bytearray(base64.b64decode(data["scores"])), dtype=torch.float16)
    return tuple((half.float() * data["scale"]).tolist())


def digest(data: object) -> str:
    """The first 16 hex digits of the SHA-256 of ``data`` as canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> str:
    """A digest of every parameter and buffer of ``model``, bit for bit: equal weights, equal digest."""
    sha = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


class _Log:
    """The groups one pruning call pruned, in the order Torch-Pruning pruned them."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerDecision] = {}
        self.groups: dict[str, GroupRanking] = {}
        self.scores: dict[str, tuple[float, ...]] = {}


_active: ContextVar[_Log | None] = ContextVar("decisions", default=None)


@contextlib.contextmanager
def recording() -> Iterator[_Log]:
    """Collect what every :func:`watch`-ed pruner inside this block decides."""
    log = _Log()
    token = _active.set(log)
    try:
        yield log
    finally:
        _active.reset(token)


def watch(pruner: object, model: nn.Module) -> Callable[[object], None] | None:
    """Wrap ``pruner`` (a Torch-Pruning ``BasePruner``) so the active :func:`recording` sees the scores it
    ranks by; return a function that logs a group before it is pruned, or ``None`` outside a recording."""
    log = _active.get()
    if log is None:
        return None
    names = {module: name for name, module in model.named_modules()}
    rank = pruner.estimate_importance

    def name(target: object) -> str:
        """A layer's name in ``model``; a root that is no module (an unwrapped parameter) by its type."""
        return names.get(target) or f"<{type(target).__name__}>"

    def scored(group: object) -> torch.Tensor | None:
        scores = rank(group)
        if scores is not None:
            log.scores[name(group[0].dep.target.module)] = tuple(scores.detach().flatten().tolist())
        return scores

    pruner.estimate_importance = scored

    def note(group: object) -> None:
        root_dep, root_idxs = group[0]
        root = name(root_dep.target.module)
        followers = []
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, nn.Conv2d | nn.Linear) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
                log.layers[name(module)] = LayerDecision(width, tuple(sorted(map(int, idxs))))
                followers.append(name(module))
        if root in log.scores:
            log.groups[root] = GroupRanking(
                log.scores[root], tuple(sorted(map(int, root_idxs))), tuple(followers)
            )

    return note


def mask_decision(model: nn.Module) -> dict[str, LayerDecision]:
    """The decisions of a mask method: per masked layer, how many weights its mask zeroes and a digest."""
    found = {}
    for name, module in model.named_modules():
        mask = getattr(module, MASK, None)
        if mask is not None:
            bits = (mask != 0).flatten().to(torch.uint8).numpy().tobytes()
            found[name] = LayerDecision(
                mask.numel(), zeroed=int((mask == 0).sum()), mask=hashlib.sha256(bits).hexdigest()[:16]
            )
    return found


def collected(log: _Log, model: nn.Module) -> Decision:
    """The :class:`Decision` a recording collected, with the masks ``model`` now carries."""
    return Decision({**log.layers, **mask_decision(model)}, dict(log.groups))


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= SCORE_RTOL * scale


def differences(golden: Decision, now: Decision) -> list[str]:
    """What ``now`` decided differently from ``golden``, a line per layer or group; empty when they agree.

    Scores must agree within :data:`SCORE_RTOL` of their group's largest; a channel may change sides only
    inside its group's tie band (:meth:`GroupRanking.tie_band`), and every other decision must be equal.
    """
    lines: list[str] = []
    tolerated: set[str] = set()
    for root, ranking in golden.groups.items():
        other = now.groups.get(root)
        if other is None:
            lines.append(f"group {root}: was ranked and pruned, now is not")
            continue
        if len(other.scores) != len(ranking.scores):
            lines.append(f"group {root}: {len(ranking.scores)} scores, now {len(other.scores)}")
            continue
        scale = max(abs(s) for s in ranking.scores) or 1.0
        pairs = enumerate(zip(ranking.scores, other.scores, strict=True))
        moved = [i for i, (a, b) in pairs if not _close(a, b, scale)]
        if moved:
            worst = max(moved, key=lambda i: abs(ranking.scores[i] - other.scores[i]))
            lines.append(
                f"group {root}: {len(moved)} of {len(ranking.scores)} scores moved beyond {SCORE_RTOL:g} of "
                f"the largest (channel {worst}: {ranking.scores[worst]:g} -> {other.scores[worst]:g})"
            )
        flipped = set(ranking.removed) ^ set(other.removed)
        band = ranking.tie_band()
        if flipped and (band is None or not flipped <= band):
            outside = sorted(flipped - (band or set()))
            lines.append(
                f"group {root}: {len(flipped)} channels changed sides, {len(outside)} outside the tie band "
                f"(e.g. {outside[:6]})"
            )
        elif flipped:
            tolerated.update(ranking.layers)
    for root in now.groups.keys() - golden.groups.keys():
        lines.append(f"group {root}: newly ranked and pruned")
    for name, layer in golden.layers.items():
        other = now.layers.get(name)
        if other is None:
            lines.append(f"layer {name}: {layer.describe()}, now left whole")
        elif other != layer and name not in tolerated:
            changed = set(layer.removed) ^ set(other.removed)
            extra = "; the mask zeroes other weights" if layer.mask else f"; {len(changed)} channels differ"
            lines.append(f"layer {name}: {layer.describe()}, now {other.describe()}{extra}")
    for name in now.layers.keys() - golden.layers.keys():
        lines.append(f"layer {name}: left whole before, now {now.layers[name].describe()}")
    return lines
