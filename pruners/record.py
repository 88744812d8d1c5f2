"""The one record of a case, :class:`CaseRecord`: what ``extra_info`` holds in a pytest-benchmark run file,
and what every reader (the report, the terminal tables, ``prunebench prune``, gpu-check, asv) reads, through
:meth:`CaseRecord.from_extra_info`.

The record is versioned (:data:`SCHEMA`). A run file of an older schema still loads (its renamed figures
are mapped to today's names); a newer one is refused in one line that names both versions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .matrix import Case

SCHEMA = 2

# Figures renamed by each schema, from the schema before it: schema 1 called the one-shot top-1
# ``pruned_top1_before_recovery`` and the recovered one ``pruned_top1``.
RENAMED: Mapping[int, Mapping[str, str]] = {
    2: {
        "pruned_top1_before_recovery": "one_shot_top1",
        "pruned_top1_recalibrated": "recalibrated_top1",
        "pruned_top1": "recovered_top1",
    },
}

# Only present for a single-seed case.
SINGLE_SEED = ("top1_drop_se", "top1_drop_ci95", "mcnemar_p")


class RecordSchemaError(ValueError):
    """A run record this version of PruneBench cannot read."""


@dataclass(frozen=True)
class CaseRecord:
    """A case's figures over its seeds (``per_seed`` holds each seed's, with the per-image correctness of
    its dense, control, recalibrated and recovered models); the first ten fields are what any record holds,
    the rest a record of an older schema may lack. Top-1 figures are percentages on the held-out
    images; ``top1_drop`` is the recovery gate's drop from the dense control; ``latency`` holds every
    ``latency_*`` figure (workload size, ``latency_at_size_*``, and per runtime)."""

    model: str
    method: str
    ratio: float
    dense_top1: float
    one_shot_top1: float
    recovered_top1: float
    macs_dense: int
    macs_pruned: int
    params_dense: int
    params_pruned: int
    kind: str = "structured"
    seeds: list[int] = field(default_factory=lambda: [0])
    family: str = "digits"
    dense_control_top1: float | None = None
    gate_reference: str = ""
    control_gain: float | None = None
    control_gain_noise: float | None = None
    baseline_converged: bool | None = None
    baseline_epoch_top1: list[float] = field(default_factory=list)
    recalibrated_top1: float | None = None
    recalibration: str = ""
    top1_drop: float | None = None
    top1_drop_min: float | None = None
    top1_drop_max: float | None = None
    top1_drop_seed_std: float | None = None
    top1_drop_noise: float = 0.0
    top1_drop_bound: float | None = None
    tolerance: float | None = None
    tolerance_source: str = ""
    gate: str = ""
    recovery_passed: bool | None = None
    criterion_drop: float | None = None
    criterion_level: float | None = None
    criterion_tolerance: float | None = None
    criterion_gate: str = ""
    criterion_passed: bool | None = None
    passed: bool = False
    macs_speedup: float | None = None
    channel_ratio: float | None = None
    sparsity: float | None = None
    head_ratio: float | None = None
    target_speedup: float | None = None
    target_latency: float | None = None
    target_latency_search: dict[str, object] = field(default_factory=dict)
    channel_multiple: int | None = None
    search_probes: int | None = None
    sparse_train_epochs: int | None = None
    recovery_epochs: int | None = None
    baseline_recipe: str = ""
    recovery_recipe: str = ""
    batch_size: int | None = None
    threads: int | None = None
    per_seed: list[dict] = field(default_factory=list)
    baseline_fingerprint: str = ""
    decision_fingerprint: str = ""
    top1_drop_se: float | None = None
    top1_drop_ci95: list[float] | None = None
    mcnemar_p: float | None = None
    data: str = ""
    unreadable_images: int = 0
    weights: str = ""
    device: str = ""
    scratch_top1: float | None = None
    scratch_gap: float | None = None
    scratch_gap_noise: float | None = None
    scratch_verdict: str = ""
    per_class: dict[str, object] = field(default_factory=dict)
    forgotten: dict[str, object] = field(default_factory=dict)
    latency: dict[str, object] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_extra_info(self) -> dict[str, object]:
        """The flat dict pytest-benchmark keeps in ``extra_info`` (and :meth:`from_extra_info` reads)."""
        info = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "latency"}
        for name in SINGLE_SEED:
            if info[name] is None:
                del info[name]
        return {**info, **self.latency}

    @classmethod
    def from_extra_info(cls, info: Mapping[str, object]) -> CaseRecord:
        """The record in ``info``, of this schema or an older one; :class:`RecordSchemaError` names what is
        missing, or a schema newer than :data:`SCHEMA`."""
        version = info.get("schema", 1)
        if not isinstance(version, int) or not 1 <= version <= SCHEMA:
            raise RecordSchemaError(
                f"a run record of schema {version!r}; this prunebench reads schemas 1 to {SCHEMA}: "
                "upgrade prunebench to read it"
            )
        data = upgrade(info, version)
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if _required(f)]
        missing = [name for name in required if name not in data]
        if missing:
            raise RecordSchemaError(
                f"a run record of schema {version} without {', '.join(missing)}: not a prunebench case record"
            )
        values = {k: v for k, v in data.items() if k in known and k not in ("latency", "schema")}
        latency = {k: v for k, v in data.items() if k.startswith("latency_")}
        return cls(**values, latency=latency, schema=SCHEMA)

    @property
    def case_id(self) -> str:
        """The case's id (``resnet18-l1-3x``): its latency or MACs target, else its ratio."""
        ratio = None if self.target_speedup is not None or self.target_latency is not None else self.ratio
        return Case(self.model, self.method, ratio, self.target_speedup, self.target_latency).id


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def upgrade(info: Mapping[str, object], version: int) -> dict[str, object]:
    """``info`` of schema ``version`` with the names of :data:`SCHEMA`, its seeds' figures included."""
    data = dict(info)
    for step in range(version + 1, SCHEMA + 1):
        names = RENAMED.get(step, {})
        data = {names.get(k, k): v for k, v in data.items()}
        data["per_seed"] = [
            {names.get(k, k): v for k, v in seed.items()} for seed in data.get("per_seed", [])
        ]
    return data
