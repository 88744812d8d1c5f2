"""The criterion band's calibrated levels: per case, the paired drop from dense to BatchNorm-recalibrated
one-shot top-1 that the calibration measured, and the band around it a run must stay in.

``prunebench calibrate`` writes them to ``pruners/gate_levels.json`` (shipped with the package), keyed
by workload family and case id, with the recipes and input size they were measured under; a case whose
recipes or input size changed since has no level until it is calibrated again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import write_atomic

LEVELS_PATH = Path(__file__).with_name("gate_levels.json")


@dataclass(frozen=True)
class CriterionLevel:
    """One case's calibrated criterion level: mean paired drop to the recalibrated one-shot model (points),
    the band's half-width ``tolerance``, and what it was measured from."""

    level: float
    tolerance: float
    runs: int
    baseline_recipe: str
    recovery_recipe: str
    img_size: int


def _key(family: str, case_id: str) -> str:
    return f"{family}/{case_id}"


def _load(path: Path, kind: type, what: str) -> dict:
    """The entries of a per-case file at ``path`` as ``kind`` by ``family/case id`` (none when it does not
    exist); a ``ValueError`` naming ``what`` it should have been."""
    if not path.exists():
        return {}
    try:
        return {key: kind(**value) for key, value in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a {what} file ({type(err).__name__}: {err})") from None


def _measured_under(
    entry: CriterionLevel | CaseTolerance, baseline: str, recovery: str, img_size: int
) -> bool:
    """Whether ``entry`` was calibrated under these recipe keys at ``img_size`` px."""
    return (entry.baseline_recipe, entry.recovery_recipe, entry.img_size) == (baseline, recovery, img_size)


def _write(entries: dict[tuple[str, str], object], path: Path, known: dict, family: str) -> None:
    """Replace every ``family`` entry of the file at ``path`` (holding ``known``) with the
    ``(family, case id)`` entries given, keeping the other families'."""
    kept = {key: value for key, value in known.items() if not key.startswith(_key(family, ""))}
    merged = {**kept, **{_key(*key): value for key, value in entries.items()}}
    if not merged and not path.exists():
        return
    text = json.dumps({k: asdict(v) for k, v in sorted(merged.items())}, indent=1) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def load_levels(path: Path = LEVELS_PATH) -> dict[str, CriterionLevel]:
    """Every calibrated level at ``path`` by ``family/case id`` (none when the file does not exist)."""
    return _load(path, CriterionLevel, "criterion-level")


def criterion_level(
    family: str,
    case_id: str,
    baseline_recipe: str,
    recovery_recipe: str,
    img_size: int,
    path: Path = LEVELS_PATH,
) -> tuple[CriterionLevel | None, str]:
    """``(level, "")`` for a case calibrated under these recipe keys at ``img_size`` px, else
    ``(None, why not)``."""
    level = load_levels(path).get(_key(family, case_id))
    if level is None:
        return None, f"no calibrated level for {case_id} on {family}"
    if not _measured_under(level, baseline_recipe, recovery_recipe, img_size):
        return None, f"the level of {case_id} on {family} was calibrated under other recipes or input size"
    return level, ""


def write_levels(
    levels: dict[tuple[str, str], CriterionLevel], family: str, path: Path = LEVELS_PATH
) -> None:
    """Replace ``family``'s levels with the ``(family, case id)`` ones given (a case no longer calibrated
    under today's recipes loses its level), keeping the other families'."""
    _write(levels, path, load_levels(path), family)


# Per-case recovery tolerances calibrated on a workload other than the digits (the verdict tier's), where
# one tolerance per method cannot fit both a model's small paired SE and another's larger one.
TOLERANCES_PATH = Path(__file__).with_name("gate_tolerances.json")


@dataclass(frozen=True)
class CaseTolerance:
    """One case's calibrated recovery tolerance on one workload family (points), over ``runs`` runs under
    the recipes named at ``img_size`` px."""

    tolerance: float
    runs: int
    baseline_recipe: str
    recovery_recipe: str
    img_size: int


def load_tolerances(path: Path = TOLERANCES_PATH) -> dict[str, CaseTolerance]:
    """Every calibrated case tolerance at ``path`` by ``family/case id`` (none when it does not exist)."""
    return _load(path, CaseTolerance, "tolerance")


def case_tolerance(
    family: str,
    case_id: str,
    baseline_recipe: str,
    recovery_recipe: str,
    img_size: int,
    registered: float,
    path: Path = TOLERANCES_PATH,
) -> tuple[float, str]:
    """``(tolerance, where it comes from)``: the case's calibrated tolerance on ``family`` under these
    recipe keys at ``img_size`` px, else the method's ``registered`` one (calibrated on the digits)."""
    if family == "digits":
        return registered, "the method's registered tolerance (calibrated on the digits)"
    found = load_tolerances(path).get(_key(family, case_id))
    if found is not None and _measured_under(found, baseline_recipe, recovery_recipe, img_size):
        return found.tolerance, f"calibrated for this case on {family} ({found.runs} runs)"
    why = "no calibrated tolerance" if found is None else "calibrated under other recipes or input size"
    return registered, f"the method's registered tolerance (digits); {why} for {case_id} on {family}"


def write_tolerances(
    tolerances: dict[tuple[str, str], CaseTolerance], family: str, path: Path = TOLERANCES_PATH
) -> None:
    """Replace ``family``'s tolerances with the ``(family, case id)`` ones given, keeping the other
    families'."""
    _write(tolerances, path, load_tolerances(path), family)
