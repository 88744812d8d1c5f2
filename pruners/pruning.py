"""The one entry point that prunes a model with a registered method and reports what changed."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from functools import cache

import timm
import torch
import torch_pruning as tp
from torch import nn

from .adapters import (
    attention_head_count,
    channel_rounding,
    features,
    missing_features,
    prunable_layers,
)
from .decisions import Decision, collected, recording
from .measure import count_macs_params
from .registry import CalibBatches, MethodData, MethodSpec, SparseTrain, get_method
from .structured import ROUND_TO


class NothingPrunedError(RuntimeError):
    """A method ran but removed nothing: the case would measure the dense model and call it pruned."""


class UnderPrunedError(NothingPrunedError):
    """A structured method removed far fewer channels than it was asked to: the row would misstate it."""


class NotApplicableError(ValueError):
    """The method needs something the model does not have (attention heads, BatchNorm layers)."""


class TargetUnreachableError(NotApplicableError):
    """No ratio of the method lands within :data:`SPEEDUP_TOLERANCE` of a MACs target on this model."""


# A structured method must remove at least this fraction of the channel ratio it was asked for. Global
# rankings legitimately miss the ratio layer by layer (they count dependency groups, not layers).
MIN_ACHIEVED_FRACTION = 0.4


@dataclass(frozen=True)
class PruneRecord:
    """What one call to :func:`prune` did.

    ``channel_ratio`` is the fraction of output channels removed from prunable layers (0 for mask methods);
    ``sparsity`` is the fraction of the dense prunable weights that are gone or zero; ``head_ratio`` the
    fraction of attention heads removed. ``unit`` says which of them ``ratio`` asked for. ``decision``
    is what it kept and removed, layer by layer (:class:`pruners.decisions.Decision`).
    """

    method: str
    kind: str
    ratio: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channel_ratio: float
    sparsity: float
    head_ratio: float = 0.0
    unit: str = "channels"
    target_speedup: float | None = None
    probes: int = 1
    channel_multiple: int = ROUND_TO
    decision: Decision = dataclasses.field(default_factory=Decision, compare=False, repr=False)

    @property
    def achieved_ratio(self) -> float:
        """What the method removed, in the unit its ``ratio`` asks for."""
        return {"channels": self.channel_ratio, "heads": self.head_ratio, "weights": self.sparsity}[self.unit]

    @property
    def macs_speedup(self) -> float:
        """Dense MACs / pruned MACs (1.0 for unstructured masks, which a dense kernel still computes)."""
        return self.macs_before / self.macs_after


def _channels(layers: list[nn.Module]) -> int:
    return sum(m.weight.shape[0] for m in layers)


def _nonzero(layers: list[nn.Module]) -> int:
    return sum(int(torch.count_nonzero(m.weight)) for m in layers)


def prune(
    model: nn.Module,
    method: str,
    ratio: float,
    example_inputs: torch.Tensor,
    calib: CalibBatches | None = None,
    *,
    sparse_train: SparseTrain | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, PruneRecord]:
    """Prune ``model`` with the registered ``method`` at ``ratio``; return the pruned model and its record.

    ``example_inputs`` is a batch used to trace the graph and count MACs. ``calib`` is a sequence of
    ``(images, labels)`` batches for methods that need calibration data or gradients; ``sparse_train``
    runs the regularised epochs of sparse-training methods (``needs=("train",)``). A method is handed only
    what its ``needs`` declare. The model is copied first unless ``inplace``. Unstructured methods leave
    their masks attached so a fine-tune keeps the zeros; :func:`pruners.make_permanent` removes them.

    Raises ``NotApplicableError`` when the model lacks what the method requires, ``NothingPrunedError``
    when the method removed nothing, and ``UnderPrunedError`` when a structured method removed less than
    ``MIN_ACHIEVED_FRACTION`` of the channel (or head) ratio asked for.
    """
    spec = get_method(method)
    ratio = spec.check_ratio(ratio)
    data = method_data_for(spec, model, calib, sparse_train)
    return prune_once(model if inplace else copy.deepcopy(model), spec, ratio, example_inputs, data)


def method_data_for(
    spec: MethodSpec, model: nn.Module, calib: CalibBatches | None, sparse_train: SparseTrain | None
) -> MethodData:
    """What ``spec`` declared it needs, and nothing else; a ``ValueError`` when it is missing, a
    :class:`NotApplicableError` when ``model`` lacks a feature the method requires."""
    wants_calib = "calib" in spec.needs or "grad" in spec.needs
    if wants_calib and calib is None:
        raise ValueError(
            f"method {spec.name!r} needs calibration batches ({', '.join(spec.needs)}): pass calib="
        )
    if "train" in spec.needs and sparse_train is None:
        raise ValueError(f"method {spec.name!r} needs sparse-training epochs: pass sparse_train=")
    reason = missing_features(spec.requires, features(model))
    if reason:
        raise NotApplicableError(f"method {spec.name!r} does not apply to this model: {reason}")
    return MethodData(calib if wants_calib else None, sparse_train if "train" in spec.needs else None)


def prune_once(
    model: nn.Module,
    spec: MethodSpec,
    ratio: float,
    example_inputs: torch.Tensor,
    data: MethodData,
    check: bool = True,
) -> tuple[nn.Module, PruneRecord]:
    """Prune ``model`` in place and record it; ``check`` raises when it pruned nothing or too little."""
    was_training = model.training
    model.eval()
    layers = prunable_layers(model)
    channels, weights = _channels(layers), sum(m.weight.numel() for m in layers)
    heads = attention_head_count(model)
    macs, params = count_macs_params(model, example_inputs)
    explain = check and spec.unit == "channels"
    why = (channel_refusal(model, ratio) or stuck_layers(model, ratio)) if explain else None

    with recording() as log:
        spec.fn(model, ratio, example_inputs, data)

    model.eval()
    macs_after, params_after = count_macs_params(model, example_inputs)
    layers = prunable_layers(model)
    record = PruneRecord(
        method=spec.name,
        kind=spec.kind,
        ratio=ratio,
        macs_before=macs,
        macs_after=macs_after,
        params_before=params,
        params_after=params_after,
        channel_ratio=1.0 - _channels(layers) / channels,
        sparsity=1.0 - _nonzero(layers) / weights,
        head_ratio=1.0 - attention_head_count(model) / heads if heads else 0.0,
        unit=spec.unit,
        decision=collected(log, model),
    )
    if check:
        check_record(record, why)
    model.train(was_training)
    return model, record


def channel_refusal(model: nn.Module, ratio: float) -> str | None:
    """Why no layer of ``model`` can lose channels at ``ratio``, or ``None`` when one can.

    A layer of C channels keeps ``int(C * (1 - ratio))`` rounded down to the channel multiple, and
    Torch-Pruning skips a layer that would keep none, so above ``1 - multiple / C`` a layer cannot shrink.
    """
    multiple, widths = _widths(model)
    if not widths or any(int(c * (1 - ratio)) >= multiple for c in widths):
        return None
    return (
        f"ratio {ratio:g} leaves every layer fewer than the {multiple} channels counts are rounded to, even "
        f"the widest ({widths[-1]}), and Torch-Pruning never empties a layer; ratios up to "
        f"{1 - multiple / widths[-1]:.3f} shrink the widest layers, up to {1 - multiple / widths[0]:.3f} all"
    )


def _widths(model: nn.Module) -> tuple[int, list[int]]:
    """The multiple channel counts are rounded to, and the output width of each prunable layer, sorted."""
    layers = prunable_layers(model)
    widths = sorted(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers)
    return channel_rounding(model, ROUND_TO) or 1, widths


def stuck_layers(model: nn.Module, ratio: float) -> str | None:
    """How many layers of ``model`` cannot shrink at ``ratio`` (see :func:`channel_refusal`), or ``None``."""
    multiple, widths = _widths(model)
    stuck = [c for c in widths if int(c * (1 - ratio)) < multiple]
    if not stuck:
        return None
    return (
        f"{len(stuck)} of {len(widths)} layers (those of up to {max(stuck)} channels) cannot shrink at ratio "
        f"{ratio:g}: they would keep fewer than the {multiple} channels counts are rounded to"
    )


@cache
def case_refusal(model_name: str, method: str, ratio: float) -> str | None:
    """Why ``method`` cannot prune the timm model ``model_name`` at ``ratio`` (a ratio it does not take, or
    one that leaves no layer a channel), checked on the meta device before any work; else ``None``."""
    spec = get_method(method)
    refusal = spec.ratio_refusal(ratio)
    if refusal or spec.unit != "channels":
        return refusal
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    reason = channel_refusal(model, ratio)
    return reason and f"method {method!r} cannot prune {model_name}: {reason}"


def check_record(record: PruneRecord, why: str | None = None) -> None:
    """Raise :class:`NothingPrunedError` / :class:`UnderPrunedError` for a record that misstates its row;
    ``why`` (:func:`channel_refusal`, :func:`stuck_layers`) says what the dense model allowed."""
    method, ratio, macs, macs_after = record.method, record.ratio, record.macs_before, record.macs_after
    if record.sparsity <= 0.0 or (record.kind == "structured" and macs_after >= macs):
        raise NothingPrunedError(
            f"method {method!r} at ratio {ratio:g} pruned nothing: "
            + (why or f"MACs {macs} -> {macs_after}, weight sparsity {record.sparsity:.3f}")
        )
    if record.kind == "structured" and record.achieved_ratio < MIN_ACHIEVED_FRACTION * ratio:
        raise UnderPrunedError(
            f"method {method!r} was asked to remove {ratio} of the {record.unit} and removed "
            f"{record.achieved_ratio:.3f} (MACs {macs} -> {macs_after})" + (f"; {why}" if why else "")
        )


def _read_only(module: nn.Module, name: str) -> bool:
    attr = getattr(type(module), name, None)
    return isinstance(attr, property) and attr.fset is None


def load_pruned_state_dict(model: nn.Module, state: dict) -> nn.Module:
    """Load ``state`` from ``tp.state_dict(pruned)`` into a freshly created ``model`` of the same
    architecture, so it takes the pruned shapes: Torch-Pruning's ``tp.load_state_dict``, except that
    attributes which are read-only properties of their module's class (timm's ``ConvNormAct.in_channels``,
    which reads its inner ``conv``) are not set; the layer that owns the value restores it.
    """
    attributions = {
        name: {key: value for key, value in attrs.items() if not _read_only(module, key)}
        for name, module in model.named_modules()
        if (attrs := state["attributions"].get(name)) is not None
    }
    return tp.load_state_dict(model, {**state, "attributions": attributions})
