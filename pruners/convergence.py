"""The convergence check: whether a dense baseline had plateaued, from its per-epoch held-out top-1 and
from the dense control's gain over it, said in one line per model that was still learning."""

from __future__ import annotations

from collections.abc import Sequence

from .record import CaseRecord

# A baseline has plateaued when its last epoch gained at most this many held-out top-1 points.
PLATEAU_POINTS = 1.0


def plateaued(epoch_top1: Sequence[float]) -> bool | None:
    """Whether a baseline's last epoch gained at most :data:`PLATEAU_POINTS` of held-out top-1 over the
    one before; ``None`` when fewer than two epochs were recorded."""
    if len(epoch_top1) < 2:
        return None
    return epoch_top1[-1] - epoch_top1[-2] <= PLATEAU_POINTS


def convergence_lines(records: Sequence[CaseRecord]) -> list[str]:
    """One line per model whose baseline the dense control beat by more than the noise allows: it was
    still learning, and the drops are judged against the control."""
    lines, seen = [], set()
    for r in records:
        if r.baseline_converged or r.model in seen:
            continue
        seen.add(r.model)
        lines.append(
            f"prunebench: the {r.model} baseline was still learning (seeds {r.seeds}): the dense "
            f"control, fine-tuned with the recovery recipe, scores {r.dense_control_top1:.2f}% against "
            f"its {r.dense_top1:.2f}% (+{r.control_gain:.2f} ± {r.control_gain_noise:.2f} points). "
            "Drops are judged against the control; for a baseline worth pruning, train it longer (a recipe "
            "with more epochs), or pass --pretrained or --checkpoint"
        )
    return lines


def plateau_text(epoch_top1: Sequence[float]) -> str:
    """``yes (99.2, 99.4, 99.4)``: whether the baseline's last epochs plateaued, with their top-1."""
    flat = plateaued(epoch_top1)
    if flat is None:
        return "not recorded"
    return f"{'yes' if flat else 'no'} ({', '.join(f'{a:.1f}' for a in epoch_top1)})"
