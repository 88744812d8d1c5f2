"""The accuracy gate: a paired, noise-aware verdict on the top-1 a pruned model lost.

Dense and pruned models are scored on the same held-out images, so the drop is a paired difference:
with ``d_i = dense_ok_i - pruned_ok_i`` the drop is ``mean(d)`` and its standard error ``std(d) / sqrt(n)``.
A case fails only when the drop exceeds the method's tolerance by more than that noise allows at a
one-sided confidence of :data:`CONFIDENCE` (one-sided z-test on the paired difference). With several
training seeds the mean drop is judged and the spread between seeds joins the noise. The larger the held-out
set, the smaller the noise, so the same rule tightens by itself on ImageNet-sized data.
"""

from __future__ import annotations

import base64
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

CONFIDENCE = 0.99


def one_sided_z(confidence: float = CONFIDENCE) -> float:
    """The standard normal quantile of ``confidence``: 2.33 for 99 %."""
    return statistics.NormalDist().inv_cdf(confidence)


@dataclass(frozen=True)
class PairedDrop:
    """Top-1 lost by a pruned model against its dense parent on the same ``n`` images, in points.

    ``dense_only`` images are right before pruning and wrong after; ``pruned_only`` the reverse. Only these
    discordant images carry information about the drop (McNemar).
    """

    n: int
    dense_correct: int
    pruned_correct: int
    dense_only: int
    pruned_only: int

    @classmethod
    def from_correct(cls, dense_ok: torch.Tensor, pruned_ok: torch.Tensor) -> PairedDrop:
        """Build from per-image correctness (boolean vectors over the same images, in the same order)."""
        if dense_ok.shape != pruned_ok.shape or dense_ok.dim() != 1 or len(dense_ok) < 2:
            raise ValueError(
                f"paired scores need two equal 1-D vectors of >= 2 images, got {tuple(dense_ok.shape)} "
                f"and {tuple(pruned_ok.shape)}"
            )
        dense_ok, pruned_ok = dense_ok.bool(), pruned_ok.bool()
        return cls(
            n=len(dense_ok),
            dense_correct=int(dense_ok.sum()),
            pruned_correct=int(pruned_ok.sum()),
            dense_only=int((dense_ok & ~pruned_ok).sum()),
            pruned_only=int((pruned_ok & ~dense_ok).sum()),
        )

    @property
    def dense_top1(self) -> float:
        return 100.0 * self.dense_correct / self.n

    @property
    def pruned_top1(self) -> float:
        return 100.0 * self.pruned_correct / self.n

    @property
    def drop(self) -> float:
        """Dense minus pruned top-1 in points (negative when the pruned model does better)."""
        return 100.0 * (self.dense_only - self.pruned_only) / self.n

    @property
    def se(self) -> float:
        """Standard error of :attr:`drop` in points: the sample std of ``d_i`` over ``sqrt(n)``."""
        discordant = (self.dense_only + self.pruned_only) / self.n
        mean = (self.dense_only - self.pruned_only) / self.n
        variance = (discordant - mean**2) * self.n / (self.n - 1)
        return 100.0 * math.sqrt(max(variance, 0.0) / self.n)

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Exact two-sided interval for the drop, in points, given the discordant count (McNemar-style).

        Of the ``m`` discordant images, ``dense_only`` is Binomial(m, p); the Clopper-Pearson interval
        for ``p`` maps to the drop as ``m / n * (2p - 1)``.
        """
        from scipy.stats import binomtest  # scipy.stats takes most of a second to import

        m = self.dense_only + self.pruned_only
        if m == 0:
            return (0.0, 0.0)
        p = binomtest(self.dense_only, m).proportion_ci(confidence_level=confidence, method="exact")
        return tuple(100.0 * m / self.n * (2 * q - 1) for q in (p.low, p.high))

    @property
    def mcnemar_p(self) -> float:
        """One-sided exact McNemar p-value that pruning lost accuracy at all (1.0 without discordance)."""
        from scipy.stats import binomtest

        m = self.dense_only + self.pruned_only
        return float(binomtest(self.dense_only, m, alternative="greater").pvalue) if m else 1.0


@dataclass(frozen=True)
class Verdict:
    """The gate's decision over one or more training seeds of one case.

    ``noise`` is the standard error of the mean drop: ``sqrt((mean(se^2) + seed_var) / k)`` over ``k``
    seeds, which is the paired standard error itself for one seed. The case passes when
    ``mean_drop - z * noise <= tolerance``, with ``z`` the one-sided normal quantile of ``confidence``.
    """

    drops: tuple[float, ...]
    ses: tuple[float, ...]
    tolerance: float
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        if not self.drops or len(self.drops) != len(self.ses):
            raise ValueError("a verdict needs one drop and one standard error per seed")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")

    @property
    def mean_drop(self) -> float:
        return statistics.fmean(self.drops)

    @property
    def seed_std(self) -> float:
        """Sample std of the per-seed drops (0 for one seed)."""
        return statistics.stdev(self.drops) if len(self.drops) > 1 else 0.0

    @property
    def noise(self) -> float:
        k = len(self.drops)
        return math.sqrt((statistics.fmean(s * s for s in self.ses) + self.seed_std**2) / k)

    @property
    def z(self) -> float:
        return one_sided_z(self.confidence)

    @property
    def bound(self) -> float:
        """The one-sided lower confidence bound of the drop: what is compared with the tolerance."""
        return self.mean_drop - self.z * self.noise

    @property
    def passed(self) -> bool:
        return self.bound <= self.tolerance

    @property
    def rule(self) -> str:
        """The rule in one sentence, with this case's numbers, so a reader can check it by hand."""
        seeds = f"mean over {len(self.drops)} seeds, " if len(self.drops) > 1 else ""
        return (
            f"fail if top-1 drop - {self.z:.2f} x noise > tolerance (one-sided {self.confidence:.0%}): "
            f"{seeds}{self.mean_drop:.2f} - {self.z:.2f} x {self.noise:.2f} = {self.bound:.2f} "
            f"{'<=' if self.passed else '>'} {self.tolerance:g} points"
        )


def required_tolerance(drop: PairedDrop, confidence: float = CONFIDENCE) -> float:
    """The smallest tolerance under which ``drop`` passes the single-seed gate."""
    return Verdict((drop.drop,), (drop.se,), 0.0, confidence).bound


def judge(drops: Sequence[PairedDrop], tolerance: float, confidence: float = CONFIDENCE) -> Verdict:
    """The gate's :class:`Verdict` on the paired drops of one case, one per training seed."""
    return Verdict(tuple(d.drop for d in drops), tuple(d.se for d in drops), tolerance, confidence)


def encode_correct(ok: torch.Tensor) -> dict[str, int | str]:
    """Per-image correctness as ``{"n": images, "bits": base64 of the packed bits}``: 1,250 bytes for
    10,000 images, small enough for every case's ``extra_info``."""
    bits = np.packbits(ok.bool().cpu().numpy())
    return {"n": len(ok), "bits": base64.b64encode(bits.tobytes()).decode()}


def decode_correct(packed: dict[str, int | str]) -> torch.Tensor:
    """The boolean vector :func:`encode_correct` packed; a ``ValueError`` when it does not hold ``n``."""
    try:
        n, raw = int(packed["n"]), base64.b64decode(packed["bits"], validate=True)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not packed per-image correctness: {type(err).__name__}: {err}") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"packed correctness holds {8 * len(raw)} bits, not {n} images")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


def paired_difference(
    first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], confidence: float = CONFIDENCE
) -> Verdict:
    """``first`` minus ``second`` in top-1 points, paired image by image and seed by seed: one
    correctness vector per training seed on each side, over the same held-out images. The
    :class:`Verdict`'s ``mean_drop`` is the difference (positive when ``first`` is more accurate) and
    ``noise`` its standard error, image noise and seed spread together."""
    if not first or len(first) != len(second):
        raise ValueError(
            f"pairing needs one vector per seed on both sides, got {len(first)} and {len(second)}"
        )
    pairs = [PairedDrop.from_correct(a, b) for a, b in zip(first, second, strict=True)]
    return judge(pairs, 0.0, confidence)


@dataclass(frozen=True)
class BandVerdict:
    """The criterion band, reported beside each case and never failing it: has a case's paired criterion
    drop (dense minus BatchNorm-recalibrated one-shot top-1, per seed) left the band ``level ± tolerance``
    calibrated for that case? On training seeds the calibration never saw, sound criteria left it (README,
    "The criterion band"), so it is a figure to read, and the golden decisions are the criterion's test.

    A criterion that stops ranking prunes like ``random`` and lands at random's level, which lies below
    the band of a criterion better than chance and above that of one worse than chance (``lamp`` on
    resnet18 at 2x), so both edges count, each one-sided at ``confidence``: outside when
    ``mean_drop - z * noise > level + tolerance`` (the criterion lost top-1) or
    ``mean_drop + z * noise < level - tolerance`` (it now removes other channels than calibrated).
    """

    drops: tuple[float, ...]
    ses: tuple[float, ...]
    level: float
    tolerance: float
    confidence: float = CONFIDENCE

    @property
    def paired(self) -> Verdict:
        return Verdict(self.drops, self.ses, self.level + self.tolerance, self.confidence)

    @property
    def mean_drop(self) -> float:
        return self.paired.mean_drop

    @property
    def noise(self) -> float:
        return self.paired.noise

    @property
    def fell(self) -> bool:
        """The recalibrated top-1 fell below the band: the criterion ranks worse than calibrated."""
        return self.paired.bound > self.level + self.tolerance

    @property
    def rose(self) -> bool:
        """The recalibrated top-1 rose above the band: the criterion selects other channels."""
        return self.mean_drop + self.paired.z * self.noise < self.level - self.tolerance

    @property
    def passed(self) -> bool:
        return not (self.fell or self.rose)

    @property
    def rule(self) -> str:
        """The rule in one sentence, with this case's numbers."""
        z, seeds = self.paired.z, f"mean over {len(self.drops)} seeds, " if len(self.drops) > 1 else ""
        low, high = self.level - self.tolerance, self.level + self.tolerance
        lower, upper = self.mean_drop - z * self.noise, self.mean_drop + z * self.noise
        return (
            f"band (reported, not gated): outside if recalibrated drop -/+ {z:.2f} x noise leaves "
            f"{self.level:.2f} ± {self.tolerance:g} "
            f"(one-sided {self.confidence:.0%} each way): {seeds}{self.mean_drop:.2f} ± {z:.2f} x "
            f"{self.noise:.2f} = [{lower:.2f}, {upper:.2f}]"
            f" {'overlaps' if self.passed else 'is outside'} [{low:.2f}, {high:.2f}] points"
        )


def band(drops: Sequence[PairedDrop], level: float, tolerance: float) -> BandVerdict:
    """The criterion band's :class:`BandVerdict` on the paired criterion drops of one case."""
    return BandVerdict(tuple(d.drop for d in drops), tuple(d.se for d in drops), level, tolerance)
