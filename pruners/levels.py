"""The criterion band's calibrated levels: per case, the paired drop from dense to BatchNorm-recalibrated
one-shot top-1 that the calibration measured, and the band around it a run must stay in.

``prunebench calibrate`` writes them to ``pruners/gate_levels.json`` (shipped with the package), keyed
by workload family and case id, with the recipes they were measured under; a case whose recipes changed since
has no level until it is calibrated again.
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


def _key(family: str, case_id: str) -> str:
    return f"{family}/{case_id}"


def load_levels(path: Path = LEVELS_PATH) -> dict[str, CriterionLevel]:
    """Every calibrated level at ``path`` by ``family/case id`` (none when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        return {key: CriterionLevel(**value) for key, value in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a criterion-level file ({type(err).__name__}: {err})") from None


def criterion_level(
    family: str, case_id: str, baseline_recipe: str, recovery_recipe: str, path: Path = LEVELS_PATH
) -> tuple[CriterionLevel | None, str]:
    """``(level, "")`` for a case calibrated under these recipe keys, else ``(None, why not)``."""
    level = load_levels(path).get(_key(family, case_id))
    if level is None:
        return None, f"no calibrated level for {case_id} on {family}"
    if (level.baseline_recipe, level.recovery_recipe) != (baseline_recipe, recovery_recipe):
        return None, f"the level of {case_id} on {family} was calibrated under other recipes"
    return level, ""


def write_levels(levels: dict[tuple[str, str], CriterionLevel], path: Path = LEVELS_PATH) -> None:
    """Replace the levels of the ``(family, case id)`` pairs given, keeping the others."""
    merged = {**load_levels(path), **{_key(*key): value for key, value in levels.items()}}
    text = json.dumps({k: asdict(v) for k, v in sorted(merged.items())}, indent=1) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
