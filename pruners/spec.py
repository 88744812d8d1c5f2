"""What one case is, frozen and checked before any work: :class:`CaseSpec`, run by :func:`pruners.run_case`.

The pytest plugin, ``prunebench prune|profile|calibrate`` and the asv suite each build a spec and hand it to
the same function, so their figures agree; a bad field is a ``ValueError`` naming it, raised when the spec is
made, before a baseline trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data import Workload, digits
from .matrix import Case
from .measure import TimingOptions
from .models import check_model_name
from .pruning import case_refusal
from .recipes import baseline_recipe, recovery_budget, recovery_recipe
from .registry import get_method
from .runtimes import check_runtimes
from .search import check_reachable, check_target
from .train import Recipe


@dataclass(frozen=True)
class Weights:
    """Where a case's dense model comes from and runs: a baseline trained here (the default), timm's
    ``pretrained`` weights or a local ``checkpoint``, on ``device``."""

    pretrained: bool = False
    checkpoint: Path | None = None
    device: str = "cpu"

    def describe(self) -> str:
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        return "timm pretrained" if self.pretrained else "trained here"


@dataclass(frozen=True)
class Timing:
    """How a case is timed: ``rounds`` alternated rounds on a ``batch_size`` batch of held-out images
    (``rounds=None`` skips timing, for parallel runs), in the memory format and autocast of ``options``;
    also at input ``size`` px when given, and in each of ``runtimes`` (:data:`pruners.runtimes.RUNTIMES`)."""

    batch_size: int = 64
    rounds: int | None = 20
    options: TimingOptions = field(default_factory=TimingOptions)
    size: int | None = None
    runtimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {self.batch_size}")
        if self.rounds is not None and self.rounds < 2:
            raise ValueError(f"`latency_rounds` must be >= 2, got {self.rounds}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"`latency_size` must be a positive pixel count, got {self.size}")
        object.__setattr__(self, "runtimes", tuple(check_runtimes(list(self.runtimes))))


@dataclass(frozen=True)
class Recipes:
    """The dense ``baseline`` recipe and the ``recovery`` fine-tune (defaults: the model's recipe on the
    workload, :func:`pruners.recipes.baseline_recipe`, and :func:`pruners.recipes.recovery_recipe` of it);
    ``recovery_epochs`` and ``recovery_lr`` override the recovery's epochs and peak lr. ``scratch`` also
    trains each pruned architecture from random initialisation with the baseline recipe
    (:mod:`pruners.scratch`)."""

    baseline: Recipe | None = None
    recovery: Recipe | None = None
    recovery_epochs: int | None = None
    recovery_lr: float | None = None
    scratch: bool = False

    def __post_init__(self) -> None:
        if self.recovery_epochs is not None and self.recovery_epochs < 1:
            raise ValueError(
                f"`recovery_epochs`: recovery needs at least 1 epoch, got {self.recovery_epochs}"
            )
        if self.recovery_lr is not None and not self.recovery_lr > 0:
            raise ValueError(f"`recovery_lr` must be > 0, got {self.recovery_lr}")


def check_cost(
    model: str, method: str, ratio: float | None, speedup: float | None
) -> tuple[float | None, float | None]:
    """``(ratio, None)`` or ``(None, MACs target)`` for ``method`` on ``model``, checked before any data is
    read: not both, a MACs target above 1 for a structured method, a ratio the method takes (default: its
    own) that leaves some layer a channel (:func:`pruners.pruning.case_refusal`); else a ``ValueError``."""
    if speedup is not None:
        if ratio is not None:
            raise ValueError("`ratio` and `speedup` both set the cost: pass one")
        return None, check_target(method, speedup)
    spec = get_method(method)
    ratio = spec.check_ratio(spec.default_ratio if ratio is None else ratio)
    refusal = case_refusal(model, method, ratio)
    if refusal:
        raise ValueError(refusal)
    return ratio, None


def one_runtime(timing: Timing) -> str:
    """The one runtime of ``timing.runtimes`` a latency target is measured in, else eager; more than one is
    refused."""
    if len(timing.runtimes) > 1:
        raise ValueError(
            "`runtimes`: a latency target or study is measured in one runtime, got "
            + ",".join(timing.runtimes)
        )
    return timing.runtimes[0] if timing.runtimes else "eager"


@dataclass(frozen=True)
class CaseSpec:
    """One case: ``method`` on ``model`` at a pruning ``ratio`` (default: the method's own) or at a MACs
    target ``speedup`` (structured methods; each seed searches its own ratio), once per training seed of
    ``seeds``, on ``workload`` (default: the embedded digits), with the given ``recipes``, dense ``weights``
    and ``timing``. A MACs target no channel method can reach on the architecture is refused here
    (:func:`pruners.search.check_reachable`), before any training. ``latency_speedup`` instead sets a
    measured latency target: dense ÷ pruned latency in the one runtime of ``timing.runtimes`` (default
    eager), at ``timing.size`` px when given (:mod:`pruners.latency_target`)."""

    model: str
    method: str
    ratio: float | None = None
    speedup: float | None = None
    workload: Workload | None = field(default=None, compare=False, repr=False)
    seeds: Sequence[int] = (0,)
    recipes: Recipes = Recipes()
    weights: Weights = Weights()
    timing: Timing = Timing()
    latency_speedup: float | None = None

    def __post_init__(self) -> None:
        if self.latency_speedup is not None:
            check_model_name(self.model)
            if self.ratio is not None or self.speedup is not None:
                raise ValueError("`latency_speedup` sets the cost: pass no `ratio` or `speedup` with it")
            target = check_target(self.method, self.latency_speedup, "latency target")
            object.__setattr__(self, "latency_speedup", target)
            one_runtime(self.timing)
            ratio, speedup = None, None
        else:
            ratio, speedup = check_cost(check_model_name(self.model), self.method, self.ratio, self.speedup)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "speedup", speedup)
        seeds = tuple(dict.fromkeys(self.seeds))
        if not seeds:
            raise ValueError("`seeds`: a case needs at least one seed")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "workload", self.workload or digits())
        if speedup is not None:
            check_reachable(self.model, self.method, speedup, self.data, self.data.test_batch(1))

    @property
    def latency_runtime(self) -> str:
        """The runtime a latency target (or a channel-multiple study) is measured in (:func:`one_runtime`)."""
        return one_runtime(self.timing)

    @property
    def data(self) -> Workload:
        """The workload, filled in by ``__post_init__``."""
        assert self.workload is not None
        return self.workload

    @property
    def baseline_recipe(self) -> Recipe:
        return self.recipes.baseline or baseline_recipe(self.model, self.data)

    @property
    def recovery_recipe(self) -> Recipe:
        recovery = self.recipes.recovery or recovery_recipe(
            self.baseline_recipe, **recovery_budget(self.model, self.data)
        )
        if self.recipes.recovery_epochs is not None:
            recovery = dataclasses.replace(recovery, epochs=self.recipes.recovery_epochs)
        if self.recipes.recovery_lr is not None:
            recovery = dataclasses.replace(recovery, lr=self.recipes.recovery_lr)
        return recovery

    def case(self, ratio_found: float | None = None) -> Case:
        """The bench case: its latency or MACs target, else its ratio (``ratio_found`` where a search set
        it)."""
        if self.latency_speedup is not None:
            return Case(self.model, self.method, None, None, self.latency_speedup)
        if self.speedup is not None:
            return Case(self.model, self.method, None, self.speedup)
        return Case(self.model, self.method, self.ratio if ratio_found is None else ratio_found)
