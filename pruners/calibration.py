"""The calibration record and what it measures: the runs of each case (``bench/calibration.json``), the
tolerance that covers them, the criterion levels, and each criterion's lead over ``random``."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .gate import (
    PairedDrop,
    Verdict,
    band,
    decode_correct,
    judge,
    one_sided_z,
    paired_difference,
    required_tolerance,
)
from .levels import CaseTolerance, CriterionLevel
from .matrix import Case
from .models import model_img_size
from .recipes import case_recipes
from .registry import get_method

# Relative to where it runs: this repository calibrates from its root, into bench/.
DEFAULT_PATH = Path("bench") / "calibration.json"


def default_path(family: str = "digits") -> Path:
    """Where a calibration on a workload of ``family`` is kept: :data:`DEFAULT_PATH` for the digits,
    ``bench/calibration-FAMILY.json`` beside it for any other."""
    return DEFAULT_PATH if family == "digits" else DEFAULT_PATH.with_name(f"calibration-{family}.json")


MIN_SEEDS = 5


MARGIN_POINTS = 0.5


MARGIN_STDS = 3.0


MIN_TOLERANCE = 0.5


# No recovery tolerance on the default workload may be wider than this, in top-1 points.
MAX_TOLERANCE = 5.0


# A case tolerance of the verdict tier (a workload other than the digits) needs this many training seeds;
# it should be at most this wide (points), and a method's calibrated mean drop must be.
VERDICT_SEEDS = 6
MAX_VERDICT_TOLERANCE = 2.0
# A case's own tolerance is rounded up to this step (a method's registered one to half a point).
VERDICT_STEP = 0.1
# The largest regression a single verdict-tier run may miss, per model: a drop this far past the case's
# calibrated mean drop fails it (points).
REGRESSION_BOUNDS: dict[str, float] = {"resnet18": 1.5, "mobilenetv3_small_100": 2.5}


# What a run's recovery drop is measured from; runs against another reference are stale.
REFERENCE = "dense control"


@dataclass(frozen=True)
class Run:
    """One calibrated run: its seed and thread count, the recovery gate's paired drop (control ->
    recovered), the criterion band's (dense -> recalibrated), and the per-image correctness behind them."""

    seed: int
    threads: int
    paired: PairedDrop
    criterion: PairedDrop
    correct: dict[str, torch.Tensor]


def _covering(required: Sequence[float]) -> float:
    spread = statistics.stdev(required) if len(required) > 1 else 0.0
    return max(max(required) + MARGIN_POINTS, statistics.fmean(required) + MARGIN_STDS * spread)


def _rounded_up(need: float, step: float = 0.5) -> float:
    return max(MIN_TOLERANCE, round(math.ceil(round(need / step, 6)) * step, 3))


@dataclass(frozen=True)
class CaseCalibration:
    """The calibrated runs of one case."""

    case: Case
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> set[int]:
        return {r.seed for r in self.runs}

    @property
    def first_runs(self) -> dict[int, Run]:
        """Per seed, in seed order, its first calibrated run: a paired comparison counts each training
        seed once, however many thread counts ran it again."""
        first = {r.seed: r for r in reversed(self.runs)}
        return {seed: first[seed] for seed in sorted(first)}

    @property
    def drops(self) -> list[float]:
        return [r.paired.drop for r in self.runs]

    @property
    def required(self) -> list[float]:
        """Per run, the smallest tolerance under which its single-seed recovery gate passes."""
        return [required_tolerance(r.paired) for r in self.runs]

    @property
    def covering_tolerance(self) -> float:
        """What this case asks of its method's tolerance (see the module docstring)."""
        return _covering(self.required)

    @property
    def mean_se(self) -> float:
        return statistics.fmean(r.paired.se for r in self.runs)

    @property
    def criterion_level(self) -> float:
        """The mean paired drop from dense to recalibrated one-shot top-1 over the runs."""
        return statistics.fmean(r.criterion.drop for r in self.runs)

    @property
    def criterion_tolerance(self) -> float:
        """The criterion band's half-width: every run's distance from the level, less ``z * se``, covered
        with the same margins as the recovery gate, rounded up to half a point."""
        z, level = one_sided_z(), self.criterion_level
        return _rounded_up(_covering([abs(r.criterion.drop - level) - z * r.criterion.se for r in self.runs]))

    @property
    def criterion_se(self) -> float:
        return statistics.fmean(r.criterion.se for r in self.runs)

    @property
    def criterion_detects(self) -> float:
        """The smallest shift of the recalibrated top-1 a single run detects at 99 %: band + z x SE."""
        return self.criterion_tolerance + one_sided_z() * self.criterion_se

    @property
    def case_tolerance(self) -> float:
        """The tolerance this case alone needs, rounded up to :data:`VERDICT_STEP` (the verdict tier's)."""
        return _rounded_up(self.covering_tolerance, VERDICT_STEP)

    @property
    def mean_drop(self) -> float:
        return statistics.fmean(self.drops)

    @property
    def detects(self) -> float:
        """The smallest recovered drop a single run with this case's mean SE fails under its own
        tolerance: tolerance + z x SE."""
        return self.case_tolerance + one_sided_z() * self.mean_se

    @property
    def regression_detected(self) -> float:
        """How far past its calibrated mean drop a single run must fall to fail: :attr:`detects` less
        the mean drop. The bound the verdict tier promises (:data:`REGRESSION_BOUNDS`) is on this: a case
        whose method loses 1.5 points by design cannot detect a drop of 1.5."""
        return self.detects - self.mean_drop

    def level(self, family: str = "digits") -> CriterionLevel:
        """This case's :class:`~pruners.levels.CriterionLevel` for the gate."""
        keys = run_keys(self.case.model, family)
        return CriterionLevel(
            level=round(self.criterion_level, 3),
            tolerance=self.criterion_tolerance,
            runs=len(self.runs),
            baseline_recipe=keys["baseline_recipe"],
            recovery_recipe=keys["recovery_recipe"],
            img_size=keys["img_size"],
        )


def recipe_keys(model: str, family: str = "digits") -> dict[str, str]:
    """The keys of the recipes a case of ``model`` runs with today on a workload of ``family``; a run
    under other recipes is stale."""
    dense, recovery = case_recipes(model, family)
    return {"baseline_recipe": dense.key, "recovery_recipe": recovery.key}


def run_keys(model: str, family: str = "digits") -> dict:
    """What a calibration run of ``model`` on ``family`` must have been measured under to count today: the
    :func:`recipe_keys` and the input size (:func:`pruners.models.model_img_size`)."""
    return recipe_keys(model, family) | {"img_size": model_img_size(model, family)}


def entry_key(entry: dict) -> tuple:
    speedup = entry.get("speedup") or 0.0
    ratio = entry["ratio"] if entry["ratio"] is not None else 0.0
    return (
        entry.get("family", "digits"),
        entry["model"],
        entry["method"],
        ratio,
        speedup,
        *(entry[k] for k in ("seed", "threads", "machine")),
    )


def is_recorded(entries: Iterable[dict], case: Case, seed: int, family: str, where: dict) -> bool:
    """Whether ``entries`` hold the run of ``case`` at ``seed`` on ``family`` measured ``where`` (its
    ``threads``, ``machine`` and recipe keys) from the dense control: a resumed calibration skips it."""
    return any(
        entry_case(e) == case
        and e["seed"] == seed
        and e.get("family", "digits") == family
        and e.get("reference") == REFERENCE
        and all(e.get(k) == v for k, v in where.items())
        for e in entries
    )


def entry_case(entry: dict) -> Case:
    """The bench case a calibration run belongs to (a ratio case, or a MACs-target case)."""
    return Case(entry["model"], entry["method"], entry["ratio"], entry.get("speedup"))


def load(path: Path = DEFAULT_PATH) -> list[dict]:
    """The calibration runs stored at ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from err


def _run(entry: dict) -> Run:
    paired = PairedDrop(**{f.name: entry[f.name] for f in fields(PairedDrop)})
    correct = {name: decode_correct(packed) for name, packed in entry["correct"].items()}
    criterion = PairedDrop.from_correct(correct["dense"], correct["recalibrated"])
    return Run(entry["seed"], entry["threads"], paired, criterion, correct)


def calibrations(
    entries: Iterable[dict], cases: Sequence[Case], family: str = "digits"
) -> dict[Case, CaseCalibration]:
    """Group the current runs in ``entries`` (today's recipes and input size, :func:`run_keys`, measured
    from the dense control) by case, for each of ``cases``."""
    grouped: dict[Case, list[Run]] = {case: [] for case in cases}
    current = {case.model: run_keys(case.model, family) for case in cases}
    for e in entries:
        case = entry_case(e)
        if case not in grouped or e.get("family", "digits") != family or e.get("reference") != REFERENCE:
            continue
        if all(e.get(k) == v for k, v in current[case.model].items()):
            grouped[case].append(_run(e))
    return {case: CaseCalibration(case, tuple(runs)) for case, runs in grouped.items()}


def suggested_tolerance(cals: Iterable[CaseCalibration]) -> float:
    """The recovery tolerance one method needs over its calibrated cases, rounded up to half a point."""
    cals = [c for c in cals if c.runs]
    if not cals:
        raise ValueError("no calibrated runs to suggest a tolerance from")
    return _rounded_up(max(c.covering_tolerance for c in cals))


def rival(case: Case) -> Case:
    """The chance baseline of ``case``: ``random`` channels for a structured method, ``random_unstructured``
    weights for a mask method, at the same model and cost."""
    kind = get_method(case.method).kind
    return case._replace(method="random" if kind == "structured" else "random_unstructured")


def lead_over_random(
    cals: dict[Case, CaseCalibration], case: Case, which: str = "recalibrated"
) -> Verdict | None:
    """``case``'s top-1 lead over its :func:`rival` at the same model and cost (``mean_drop``, positive
    when it keeps more), paired image by image over the seeds both calibrated, each seed once (its
    :attr:`CaseCalibration.first_runs`); ``None`` with nothing to pair."""
    chance = cals.get(rival(case))
    if chance is None or rival(case) == case or case not in cals:
        return None
    ours, theirs = cals[case].first_runs, chance.first_runs
    pairs = [(ours[s].correct[which], theirs[s].correct[which]) for s in ours if s in theirs]
    return paired_difference([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None


def drop_bound(case: Case) -> float | None:
    """The largest calibrated mean drop the verdict tier allows ``case``: :data:`MAX_VERDICT_TOLERANCE`,
    except for a chance rival (``random`` channels or weights, its own :func:`rival`), whose drop by design
    is the floor the methods are ranked against, not a method's promise (``None``)."""
    return None if rival(case) == case else MAX_VERDICT_TOLERANCE


def keeps_bounds(cal: CaseCalibration) -> bool:
    """Whether ``cal`` keeps the verdict tier's bounds: a mean drop within :func:`drop_bound`, and a single
    run detecting a regression within :data:`REGRESSION_BOUNDS` past that mean. The tolerance itself is what
    the seeds need; one past :data:`MAX_VERDICT_TOLERANCE` is held by the regression bound alone (a method
    whose drop spreads over seeds cannot be held to 2 points without false alarms)."""
    limit, bound = drop_bound(cal.case), REGRESSION_BOUNDS.get(cal.case.model)
    return (limit is None or cal.mean_drop <= limit) and (bound is None or cal.regression_detected <= bound)


def random_runs_caught(cals: dict[Case, CaseCalibration], case: Case) -> dict[tuple[int, int], bool]:
    """Per ``(seed, threads)``, whether ``case``'s criterion band excludes the calibrated run of its
    :func:`rival` at the same model and cost: what a run of ``case`` whose criterion stopped ranking would
    meet. Empty when there is no rival to compare."""
    chance, cal = cals.get(rival(case)), cals.get(case)
    if chance is None or cal is None or rival(case) == case or not cal.runs:
        return {}
    level, tolerance = cal.criterion_level, cal.criterion_tolerance
    return {(r.seed, r.threads): not band([r.criterion], level, tolerance).passed for r in chance.runs}


def levels(
    cals: dict[Case, CaseCalibration], family: str = "digits"
) -> dict[tuple[str, str], CriterionLevel]:
    """The criterion levels of every case calibrated over at least :data:`MIN_SEEDS` seeds."""
    return {(family, case.id): cal.level(family) for case, cal in cals.items() if len(cal.seeds) >= MIN_SEEDS}


def planted_drop(run: Run, points: float) -> PairedDrop:
    """``run``'s recovery pair (control -> recovered) with ``points`` more top-1 lost: that share of all
    images, taken from those the recovered model got right (the first, in image order), turned wrong. The
    gate sees only these vectors, so a planted drop is what a real regression of that size looks like."""
    recovered = run.correct["recovered"].clone()
    right = recovered.nonzero().flatten()
    recovered[right[: math.ceil(points / 100 * len(recovered))]] = False
    return PairedDrop.from_correct(run.correct["control"], recovered)


def planted_caught(cal: CaseCalibration, tolerance: float, points: float) -> int:
    """How many of ``cal``'s runs the single-seed recovery gate at ``tolerance`` fails once a drop of
    ``points`` is planted in them (:func:`planted_drop`)."""
    return sum(not judge([planted_drop(r, points)], tolerance).passed for r in cal.runs)


def tolerances(cals: dict[Case, CaseCalibration], family: str) -> dict[tuple[str, str], CaseTolerance]:
    """The per-case recovery tolerances of every case calibrated over at least :data:`VERDICT_SEEDS` seeds."""
    return {
        (family, case.id): CaseTolerance(
            tolerance=cal.case_tolerance, runs=len(cal.runs), **run_keys(case.model, family)
        )
        for case, cal in cals.items()
        if len(cal.seeds) >= VERDICT_SEEDS
    }
