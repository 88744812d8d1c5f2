"""Registry of pruning methods, modelled on timm's ``register_model`` / ``list_models``.

A method is one function ``fn(model, ratio, example_inputs, data)`` that prunes ``model`` in place;
``data`` (:class:`MethodData`) holds what the method declared in ``needs`` and nothing else. Registering it
with :func:`register_method` is all it takes to join the bench matrix and the unit tests.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import nn

Kind = Literal["structured", "unstructured"]
Need = Literal["calib", "grad", "train"]
Unit = Literal["channels", "heads", "weights"]
Feature = Literal["attention", "batchnorm"]
CalibBatches = Sequence[tuple[torch.Tensor, torch.Tensor]]
Regularizer = Callable[[nn.Module], None]


class SparseTrain(Protocol):
    """Runs the harness's sparse-training epochs on ``model``: ``regularize(model)`` after every
    ``backward()`` and before the optimizer step, ``on_epoch()`` after every epoch."""

    def __call__(self, model: nn.Module, regularize: Regularizer, on_epoch: Callable[[], None]) -> None: ...


GradientEstimate = Callable[[nn.Module, CalibBatches], None]


@dataclass(frozen=True)
class MethodData:
    """What the harness hands a method: ``calib`` batches of ``(images, labels)`` for ``"calib"`` and
    ``"grad"``, and ``sparse_train`` for ``"train"`` (its epochs come out of the recovery budget).

    A MACs-target search prunes copies of one dense model at several ratios with the same ``MethodData``;
    :meth:`fill_gradients` and :meth:`sparse_train` then do their work on the first copy only and replay
    its result on the others, so importances are estimated once, not once per probe.
    """

    calib: CalibBatches | None = None
    sparse_train: SparseTrain | None = None
    _memo: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False, compare=False)

    def fill_gradients(self, model: nn.Module, estimate: GradientEstimate) -> None:
        """Leave ``estimate(model, calib)``'s gradients in ``model``'s ``.grad``; computed once per
        ``estimate``, then copied by parameter name onto the later copies of the same dense model."""
        key = f"grad:{estimate.__module__}.{estimate.__qualname__}"
        saved = self._memo.get(key)
        if saved is None:
            estimate(model, self.calib)
            self._memo[key] = {
                name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None
            }
            return
        for name, p in model.named_parameters():
            p.grad = saved[name].clone() if name in saved else None

    def for_search(self) -> MethodData:
        """The same data for a search over ratios: its ``sparse_train`` trains the first model it is given
        and loads those trained weights into every later copy of the same dense model (the regulariser
        only shaped the weights, so the pruning step then sees what it saw the first time)."""
        if self.sparse_train is None:
            return MethodData(self.calib)
        train, memo = self.sparse_train, {}

        def replay(model: nn.Module, regularize: Regularizer, on_epoch: Callable[[], None]) -> None:
            if "sparse_train" not in memo:
                train(model, regularize, on_epoch)
                memo["sparse_train"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                model.load_state_dict(memo["sparse_train"])

        return MethodData(self.calib, replay, memo)


PruneFn = Callable[[nn.Module, float, torch.Tensor, MethodData], None]

_KINDS = ("structured", "unstructured")
_NEEDS = ("calib", "grad", "train")
_UNITS = ("channels", "heads", "weights")
_FEATURES = ("attention", "batchnorm")


@dataclass(frozen=True)
class MethodSpec:
    """A registered pruning method and what the bench needs to know about it.

    ``ratio`` is the method's own knob: the fraction of channels removed for structured methods, the
    fraction of weights zeroed for unstructured ones, or of attention heads when ``unit`` is ``"heads"``.
    ``requires`` names model features the method cannot work without (``"attention"`` heads,
    ``"batchnorm"`` layers); models without them are left out of its cases. ``tolerance`` is the largest
    allowed drop in top-1, in absolute percentage points, after the shared recovery fine-tune.
    ``default_ratio`` is the ratio the bench uses when none is given; ``ratios``, when not empty, are the
    only ratios the method takes (2:4 sparsity is 0.5 and nothing else).
    """

    name: str
    fn: PruneFn
    kind: Kind
    needs: tuple[Need, ...]
    tolerance: float
    default_ratio: float
    doc: str
    unit: Unit = "channels"
    requires: tuple[Feature, ...] = ()
    ratios: tuple[float, ...] = ()

    def check_ratio(self, ratio: float) -> float:
        """``ratio`` as a float if this method takes it, else a ``ValueError`` that names what it takes."""
        value = check_ratio(ratio)
        if self.ratios and value not in self.ratios:
            raise ValueError(self.ratio_refusal(value))
        return value

    def ratio_refusal(self, ratio: float) -> str | None:
        """Why this method does not take ``ratio``, or ``None`` when it does."""
        if not self.ratios or ratio in self.ratios:
            return None
        takes = " or ".join(f"{r:g}" for r in self.ratios)
        return f"method {self.name!r} takes ratio {takes} only, got {ratio:g}"


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    kind: Kind,
    tolerance: float,
    default_ratio: float,
    needs: Iterable[Need] = (),
    unit: Unit | None = None,
    requires: Iterable[Feature] = (),
    ratios: Iterable[float] = (),
) -> Callable[[PruneFn], PruneFn]:
    """Decorator that adds a pruning function to the registry under ``name``.

    ``ratios`` limits the method to those ratios: the matrix leaves other ratios out and
    :func:`pruners.prune` refuses them. ``unit`` defaults to ``"channels"`` for structured methods and
    ``"weights"`` for unstructured ones.
    """
    needs, requires = tuple(needs), tuple(requires)
    unit = unit or ("channels" if kind == "structured" else "weights")
    if kind not in _KINDS:
        raise ValueError(f"method {name!r}: kind must be one of {_KINDS}, got {kind!r}")
    for label, values, allowed in (("needs", needs, _NEEDS), ("requires", requires, _FEATURES)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"method {name!r}: unknown {label} {unknown}; choose from {allowed}")
    if unit not in _UNITS:
        raise ValueError(f"method {name!r}: unit must be one of {_UNITS}, got {unit!r}")
    if tolerance < 0:
        raise ValueError(f"method {name!r}: tolerance must be >= 0 points, got {tolerance}")
    check_ratio(default_ratio)
    ratios = tuple(check_ratio(r) for r in ratios)
    if ratios and default_ratio not in ratios:
        raise ValueError(f"method {name!r}: default_ratio {default_ratio} is not one of its ratios {ratios}")

    def decorator(fn: PruneFn) -> PruneFn:
        if name in _METHODS:
            raise ValueError(f"pruning method {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _METHODS[name] = MethodSpec(
            name=name,
            fn=fn,
            kind=kind,
            needs=needs,
            tolerance=float(tolerance),
            default_ratio=float(default_ratio),
            doc=doc[0] if doc else "",
            unit=unit,
            requires=requires,
            ratios=ratios,
        )
        return fn

    return decorator


def _registered() -> dict[str, MethodSpec]:
    """The registry, once the built-in families and every ``prunebench.methods`` entry point have
    registered their methods (:mod:`pruners.entry_points`); they load on first use, so that
    ``import pruners`` stays light."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import entry_points, sparse_training, structured, unstructured  # noqa: F401

        entry_points.load_methods()
    return _METHODS


_LOADED = False


def list_methods(filter: str | Iterable[str] = "*", kind: Kind | None = None) -> list[str]:
    """Sorted names of the registered methods that match the wildcard ``filter`` (fnmatch), like timm."""
    patterns = [filter] if isinstance(filter, str) else list(filter)
    return sorted(
        name
        for name, spec in _registered().items()
        if any(fnmatch.fnmatchcase(name, p) for p in patterns) and (kind is None or spec.kind == kind)
    )


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``; a ``KeyError`` lists the known names otherwise."""
    try:
        return _registered()[name]
    except KeyError:
        raise KeyError(f"unknown pruning method {name!r}; available: {', '.join(list_methods())}") from None


def check_ratio(ratio: float) -> float:
    """Return ``ratio`` as a float if it lies strictly between 0 and 1, else raise ``ValueError``."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"pruning ratio must be a number in (0, 1), got {ratio!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1), got {ratio!r}")
    return value
