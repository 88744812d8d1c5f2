"""Methods ranked at equal cost, with the ones that cannot be told apart grouped: the answer to "which
method should I use at this cost", said only as far as the held-out images and the seeds carry it.

Each method's recovered (or recalibrated) model is paired, image by image and seed by seed, against the
best method's and against ``random``'s at the same cost. Methods are sorted by their mean top-1 over the
seeds (on shared images and seeds, the order of their paired leads); a *tie group* starts at the best
method not yet grouped and takes the methods after it that it does not beat significantly, up to the first
it does. Significance is two-sided at ``confidence`` with a Bonferroni correction over the comparisons in
the table, so a group boundary is a difference this run can stand behind, and a single group says the run
cannot rank the methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import torch

from .gate import Verdict, paired_difference

# Two-sided family-wise confidence of a tie-group boundary and of "beats random".
RANKING_CONFIDENCE = 0.95


class Ranked(Protocol):
    """What a method brings to a ranking: its name, its per-seed per-image correctness by model
    (``"recovered"``, ``"recalibrated"``, ...) and its mean top-1 over the seeds in one of them. A bench
    run's :class:`~pruners.report.ReportRow` is one; so is a calibrated case."""

    method: str
    correct: Mapping[int, Mapping[str, torch.Tensor]]

    def top1(self, which: str) -> float: ...


@dataclass(frozen=True)
class Standing:
    """One method's place at one cost: its ``top1`` (mean over seeds) in the ``which`` model, its paired
    difference from the best method (``vs_best``, zero or negative) and from the reference (``vs_random``),
    and its 1-based tie ``group``."""

    method: str
    top1: float
    vs_best: Verdict | None
    vs_random: Verdict | None
    group: int


def critical_z(comparisons: int, confidence: float = RANKING_CONFIDENCE) -> float:
    """The two-sided normal quantile for ``confidence`` shared by ``comparisons`` tests (Bonferroni)."""
    alpha = (1 - confidence) / max(1, comparisons)
    return NormalDist().inv_cdf(1 - alpha / 2)


def significant(verdict: Verdict | None, z: float) -> bool:
    """Whether the paired difference is away from zero by more than ``z`` standard errors."""
    return verdict is not None and abs(verdict.mean_drop) > z * verdict.noise


def pair(
    first: Ranked, second: Ranked, which: str = "recovered", second_which: str | None = None
) -> Verdict | None:
    """``first``'s ``which`` model (``"dense"``, ``"recalibrated"`` or ``"recovered"``) minus ``second``'s
    ``second_which`` model (default: the same) in top-1 points, paired on the same held-out images over the
    seeds both ran; ``None`` without shared saved vectors. ``pair(row, row, "dense", "recalibrated")``
    pairs two models of one case."""
    second_which = second_which or which
    seeds = [
        s
        for s in sorted(first.correct.keys() & second.correct.keys())
        if which in first.correct[s] and second_which in second.correct[s]
    ]
    if not seeds or any(len(first.correct[s][which]) != len(second.correct[s][second_which]) for s in seeds):
        return None
    return paired_difference(
        [first.correct[s][which] for s in seeds], [second.correct[s][second_which] for s in seeds]
    )


def rank(
    rows: Sequence[Ranked],
    reference: str | None = "random",
    which: str = "recovered",
    confidence: float = RANKING_CONFIDENCE,
) -> list[Standing]:
    """The methods of ``rows`` (one model at one cost) in rank order with their tie groups; ``reference``
    is the method every other is paired against (``None``: none)."""
    ref = next((r for r in rows if r.method == reference), None)
    ordered = sorted(rows, key=lambda r: (-r.top1(which), r.method))
    if not ordered:
        return []
    z = critical_z(len(ordered) - 1, confidence)
    groups, leader, group = [], ordered[0], 1
    for r in ordered:
        if r is not leader and significant(pair(leader, r, which), z):
            leader, group = r, group + 1
        groups.append(group)
    best = ordered[0]
    return [
        Standing(
            r.method,
            r.top1(which),
            pair(r, best, which) if r is not best else None,
            pair(r, ref, which) if ref is not None and r is not ref else None,
            g,
        )
        for r, g in zip(ordered, groups, strict=True)
    ]


def signed(verdict: Verdict | None) -> str:
    """A paired difference as ``+0.74 ± 0.19`` (``-`` for none)."""
    return "-" if verdict is None else f"{verdict.mean_drop:+.2f} ± {verdict.noise:.2f}"


def _against(judged: Sequence[Standing], reference: str, z: float) -> str:
    """How a group's methods compare with ``reference``, in words."""
    ahead = sum(significant(s.vs_random, z) and s.vs_random.mean_drop > 0 for s in judged)
    behind = sum(significant(s.vs_random, z) and s.vs_random.mean_drop < 0 for s in judged)
    many = len(judged) > 1
    if ahead == len(judged):
        return f"{'each beats' if many else 'beats'} {reference}"
    if behind == len(judged):
        return f"{'each loses' if many else 'loses'} to {reference}"
    if not ahead and not behind:
        return f"not told apart from {reference}"
    return f"{ahead} of {len(judged)} beat {reference}, {behind} lose to it"


def tie_lines(standings: Sequence[Standing], reference: str | None = "random") -> list[str]:
    """One line per tie group: its methods, and how each compares with ``reference`` (with the same
    corrected significance), e.g. ``1. l2, fpgm, l1: tied; each beats random (+0.80 ± 0.20, ...)``."""
    if not standings:
        return []
    z = critical_z(len(standings) - 1)
    lines = []
    for group in sorted({s.group for s in standings}):
        members = [s for s in standings if s.group == group]
        names = ", ".join(f"`{s.method}`" for s in members)
        head = f"{group}. {names}: " + ("tied" if len(members) > 1 else "alone")
        judged = [s for s in members if s.vs_random is not None]
        if reference is None or not judged:
            lines.append(head)
            continue
        verdict = _against(judged, reference, z)
        figures = ", ".join(f"`{s.method}` {signed(s.vs_random)}" for s in judged)
        lines.append(f"{head}; {verdict} ({figures})")
    return lines
