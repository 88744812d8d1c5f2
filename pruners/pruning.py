"""The one entry point that prunes a model with a registered method and reports what changed."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from .adapters import attention_head_count, features, missing_features, prunable_layers
from .measure import count_macs_params
from .registry import CalibBatches, MethodData, SparseTrain, check_ratio, get_method


class NothingPrunedError(RuntimeError):
    """A method ran but removed nothing: the case would measure the dense model and call it pruned."""


class UnderPrunedError(NothingPrunedError):
    """A structured method removed far fewer channels than it was asked to: the row would misstate it."""


class NotApplicableError(ValueError):
    """The method needs something the model does not have (attention heads, BatchNorm layers)."""


# A structured method must remove at least this fraction of the channel ratio it was asked for. Global
# rankings legitimately miss the ratio layer by layer (they count dependency groups, not layers).
MIN_ACHIEVED_FRACTION = 0.4


@dataclass(frozen=True)
class PruneRecord:
    """What one call to :func:`prune` did.

    ``channel_ratio`` is the fraction of output channels removed from prunable layers (0 for mask methods);
    ``sparsity`` is the fraction of the dense prunable weights that are gone or zero; ``head_ratio`` the
    fraction of attention heads removed. ``unit`` says which of them ``ratio`` asked for.
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
    ratio = check_ratio(ratio)
    wants_calib = "calib" in spec.needs or "grad" in spec.needs
    if wants_calib and calib is None:
        raise ValueError(
            f"method {method!r} needs calibration batches ({', '.join(spec.needs)}): pass calib="
        )
    if "train" in spec.needs and sparse_train is None:
        raise ValueError(f"method {method!r} needs sparse-training epochs: pass sparse_train=")
    reason = missing_features(spec.requires, features(model))
    if reason:
        raise NotApplicableError(f"method {method!r} does not apply to this model: {reason}")
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    layers = prunable_layers(model)
    channels, weights = _channels(layers), sum(m.weight.numel() for m in layers)
    heads = attention_head_count(model)
    macs, params = count_macs_params(model, example_inputs)

    data = MethodData(calib if wants_calib else None, sparse_train if "train" in spec.needs else None)
    spec.fn(model, ratio, example_inputs, data)

    model.eval()
    macs_after, params_after = count_macs_params(model, example_inputs)
    layers = prunable_layers(model)
    record = PruneRecord(
        method=method,
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
    )
    if record.sparsity <= 0.0 or (spec.kind == "structured" and macs_after >= macs):
        raise NothingPrunedError(
            f"method {method!r} at ratio {ratio} pruned nothing: MACs {macs} -> {macs_after}, "
            f"weight sparsity {record.sparsity:.3f}"
        )
    if spec.kind == "structured" and record.achieved_ratio < MIN_ACHIEVED_FRACTION * ratio:
        raise UnderPrunedError(
            f"method {method!r} was asked to remove {ratio} of the {spec.unit} and removed "
            f"{record.achieved_ratio:.3f} (MACs {macs} -> {macs_after})"
        )
    model.train(was_training)
    return model, record


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
