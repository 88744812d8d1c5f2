"""The gates a case is judged by, as one small protocol listed in one place (:data:`GATES`): the case's
record, :func:`pruners.check_accuracy` and ``prunebench prune`` iterate over it. A new gate is one class
here (or in its own file, added to :data:`GATES`) plus the record fields it writes.

- :class:`RecoveryGate` (fails the case): the recovered drop from the dense control, against the method's
  tolerance beyond the noise.
- :class:`CriterionBand` (reported): the BatchNorm-recalibrated one-shot drop against its calibrated level.
- :class:`ConvergenceCheck` (reported): whether the dense control beat the baseline beyond noise.
- :class:`ScratchControl` (reported, with ``--scratch``): whether the pruned weights beat the pruned
  architecture trained from scratch beyond noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .scratch import scratch_text
from .tables import markdown_table

if TYPE_CHECKING:
    from .record import CaseRecord
    from .result import CaseResult


class Gate(Protocol):
    """A gate: its ``name``, whether a failure fails the case (``fails_case``), the record fields it
    writes for a result, whether a record passes it, and the line that says so."""

    name: str
    fails_case: bool

    def fields(self, result: CaseResult) -> dict[str, object]: ...

    def passed(self, record: CaseRecord) -> bool | None: ...

    def line(self, record: CaseRecord) -> str: ...


class RecoveryGate:
    """The recovered model against the dense control: mean drop over seeds minus z x noise <= tolerance."""

    name = "recovery"
    fails_case = True

    def fields(self, result: CaseResult) -> dict[str, object]:
        verdict = result.verdict
        drops = [s.paired.drop for s in result.seeds]
        return {
            "top1_drop": round(verdict.mean_drop, 2),
            "top1_drop_min": round(min(drops), 2),
            "top1_drop_max": round(max(drops), 2),
            "top1_drop_seed_std": round(verdict.seed_std, 3),
            "top1_drop_noise": round(verdict.noise, 3),
            "top1_drop_bound": round(verdict.bound, 2),
            "tolerance": result.tolerance,
            "tolerance_source": result.tolerance_source,
            "gate": verdict.rule,
            "recovery_passed": verdict.passed,
            "passed": verdict.passed,
        }

    def passed(self, record: CaseRecord) -> bool | None:
        return record.recovery_passed

    def line(self, record: CaseRecord) -> str:
        return (
            f"recovery  drop from the control {record.top1_drop:+.2f}, tolerance {record.tolerance:g}: "
            f"{'pass' if record.recovery_passed else 'FAIL'}"
        )

    def failure(self, record: CaseRecord) -> str:
        return (
            f"{record.case_id}: recovery gate failed: control top-1 {record.dense_control_top1:.2f}% -> "
            f"recovered {record.recovered_top1:.2f}%, a drop of {record.top1_drop:.2f} points with noise "
            f"{record.top1_drop_noise:.2f} (SE), past the tolerance of {record.tolerance:g} points "
            f"({record.tolerance_source or 'registered'}): {record.gate}"
        )


class CriterionBand:
    """The recalibrated one-shot drop from the dense baseline against its calibrated level and band;
    reported, not gated (README, "Limits"); ``not judged`` without a calibrated level."""

    name = "criterion"
    fails_case = False

    def fields(self, result: CaseResult) -> dict[str, object]:
        level, verdict = result.level, result.criterion_verdict
        return {
            "criterion_drop": round(statistics.fmean(s.criterion.drop for s in result.seeds), 2),
            "criterion_level": level.level if level else None,
            "criterion_tolerance": level.tolerance if level else None,
            "criterion_gate": verdict.rule if verdict else f"not judged: {result.level_missing}",
            "criterion_passed": verdict.passed if verdict else None,
        }

    def passed(self, record: CaseRecord) -> bool | None:
        return record.criterion_passed

    def line(self, record: CaseRecord) -> str:
        return f"criterion {record.criterion_gate}"


class ConvergenceCheck:
    """The dense control's gain over its baseline: beyond the noise, the baseline was still learning."""

    name = "convergence"
    fails_case = False

    def fields(self, result: CaseResult) -> dict[str, object]:
        conv = result.convergence
        return {
            "control_gain": round(-conv.mean_drop, 2),
            "control_gain_noise": round(conv.noise, 3),
            "baseline_converged": result.baseline_converged,
        }

    def passed(self, record: CaseRecord) -> bool | None:
        return record.baseline_converged

    def line(self, record: CaseRecord) -> str:
        state = "plateaued" if record.baseline_converged else "still learning"
        return (
            f"baseline  {state}: the control gains {record.control_gain:+.2f} ± "
            f"{record.control_gain_noise:.2f} points over it"
        )


class ScratchControl:
    """With ``--scratch``: the recovered model against the pruned architecture trained from random
    initialisation (:mod:`pruners.scratch`); reported, never failing a case."""

    name = "scratch"
    fails_case = False

    def fields(self, result: CaseResult) -> dict[str, object]:
        if not result.scratch:
            return {}
        verdict = result.scratch_verdict
        if verdict is None:
            return {"scratch_verdict": "not applicable: a mask method keeps the dense architecture"}
        scratch = [s.scratch.pruned_top1 for s in result.seeds if s.scratch is not None]
        return {
            "scratch_top1": round(statistics.fmean(scratch), 2),
            "scratch_gap": round(verdict.mean_drop, 2),
            "scratch_gap_noise": round(verdict.noise, 3),
            "scratch_verdict": scratch_text(verdict),
        }

    def passed(self, record: CaseRecord) -> bool | None:
        return None

    def line(self, record: CaseRecord) -> str:
        if record.scratch_top1 is None:
            return f"scratch   {record.scratch_verdict}" if record.scratch_verdict else ""
        return (
            f"scratch   recovered {record.recovered_top1:.2f}% vs from scratch {record.scratch_top1:.2f}% "
            f"({record.scratch_gap:+.2f} ± {record.scratch_gap_noise:.2f}): {record.scratch_verdict}"
        )


GATES: tuple[Gate, ...] = (RecoveryGate(), CriterionBand(), ConvergenceCheck(), ScratchControl())


RECOVERY_TABLE_HEADER = (
    "case",
    "seeds",
    "control",
    "recovered",
    "drop ± noise",
    "drop - z x noise",
    "tolerance",
    "recovery gate",
)


def recovery_table(records: Sequence[CaseRecord]) -> str:
    """Each judged case's recovery gate as a Markdown row, by case id: the dense control's and the recovered
    top-1, the drop and its noise, the bound the gate held against the tolerance (its own figure, not one
    recomputed from the rounded drop and noise; ``-`` in a record written before it was kept) and the
    verdict; empty when no record was judged. Printed at the end of a bench run, under xdist too, where
    pytest-benchmark's ``extra_info`` is not written."""
    rows = [
        (
            r.case_id,
            ",".join(str(seed) for seed in r.seeds),
            "-" if r.dense_control_top1 is None else f"{r.dense_control_top1:.2f}",
            f"{r.recovered_top1:.2f}",
            f"{r.top1_drop:.2f} ± {r.top1_drop_noise:.2f}",
            "-" if r.top1_drop_bound is None else f"{r.top1_drop_bound:.2f}",
            f"{r.tolerance:g}",
            "pass" if r.recovery_passed else "FAIL",
        )
        for r in sorted(records, key=lambda r: (r.model, r.case_id))
        if r.top1_drop is not None and r.tolerance is not None
    ]
    return markdown_table(RECOVERY_TABLE_HEADER, rows) if rows else ""
