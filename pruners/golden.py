"""Golden pruning decisions on pinned reference models: a method's behaviour, checked exactly.

Accuracy cannot tell "the ranking changed" from "this training seed was unlucky"; a decision can. Three
small timm models (a residual CNN, a depthwise / squeeze-excite CNN and a ViT) are trained once on the
embedded digits and shipped as checkpoints in ``pruners/reference/``. For every registered method on every
reference model it applies to, at its default ratio and (structured methods) at the model's fixed MACs
target, ``golden.json`` beside them holds the decision (:class:`pruners.decisions.Decision`: kept channels
per layer, or the mask, and the scores behind them), the MACs and params left, and the BatchNorm-recalibrated
top-1 on the digits' held-out images. :func:`check` recomputes an entry and lists what changed.

``prunebench golden --update`` rewrites the file (so a deliberate change is a reviewed diff);
``prunebench golden --rebuild-models`` trains the reference models again, on purpose.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from .adapters import features, missing_features
from .case import CALIB_BATCH_SIZE, calibration_batches
from .data import Workload, digits
from .decisions import Decision, differences
from .files import write_atomic
from .measure import correct
from .models import UnmeasuredModelWarning
from .pruning import TargetUnreachableError, prune
from .registry import Regularizer, get_method, list_methods
from .search import prune_to_speedup
from .train import Recipe, recalibrate_batchnorm
from .zoo import create_model, load_baseline

REFERENCE_DIR = Path(__file__).with_name("reference")
GOLDEN_PATH = REFERENCE_DIR / "golden.json"
# The reference models and the recipes that trained them (seed 0) on the embedded digits.
REFERENCE_MODELS: Mapping[str, Recipe] = {
    "test_resnet": Recipe(epochs=8, lr=3e-3, warmup_epochs=1),
    "test_efficientnet": Recipe(epochs=15, lr=5e-3, warmup_epochs=1),
    "test_vit": Recipe(epochs=30, lr=1e-3, warmup_epochs=2),
}
# The fixed MACs target of each reference model's structured entries.
GOLDEN_TARGET = 2.0
# The recalibrated top-1 may differ from the golden figure by this many points (float paths of another
# CPU can flip a few of the 360 images); MACs and params must be equal.
TOP1_TOLERANCE = 1.0
# Sparse-training methods get this many passes over the calibration batches (plain SGD) before pruning.
SPARSE_EPOCHS = 2
SPARSE_LR = 0.01
# BatchNorm statistics of a pruned reference model are re-estimated on this many batches of 64.
RECALIBRATION_BATCHES = 4
UPDATE_HINT = "run `prunebench golden --update` and review the diff of pruners/reference/golden.json"


class GoldenMismatchError(AssertionError):
    """Cases that decide differently from their golden entries."""


@dataclass(frozen=True)
class GoldenCase:
    """One golden entry: ``method`` on the reference ``model`` at its default ratio, or at ``speedup``."""

    model: str
    method: str
    speedup: float | None = None

    @property
    def id(self) -> str:
        cost = f"{self.speedup:g}x" if self.speedup else f"{get_method(self.method).default_ratio:g}"
        return f"{self.model}/{self.method}/{cost}"


def golden_cases(
    models: Iterable[str] = REFERENCE_MODELS, methods: Iterable[str] | None = None
) -> list[GoldenCase]:
    """Every method (or those named) on every reference model it applies to, at its default ratio and,
    for structured methods, at :data:`GOLDEN_TARGET`."""
    cases = []
    for model in models:
        found = features(_shaped(model, digits()))
        for method in list_methods() if methods is None else methods:
            spec = get_method(method)
            if missing_features(spec.requires, found):
                continue
            cases.append(GoldenCase(model, method))
            if spec.kind == "structured":
                cases.append(GoldenCase(model, method, GOLDEN_TARGET))
    return cases


def checkpoint_path(model: str) -> Path:
    """Where the reference ``model``'s pinned weights are shipped."""
    return REFERENCE_DIR / f"{model}.pth"


@contextlib.contextmanager
def _own_recipe() -> Iterator[None]:
    """A reference model has its own recipe (:data:`REFERENCE_MODELS`): the warning that it has no bench
    entry does not apply inside this block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmeasuredModelWarning)
        yield


def _shaped(model: str, workload: Workload, checkpoint: Path | None = None) -> nn.Module:
    """The reference ``model`` for the digits, fresh or from ``checkpoint``."""
    with _own_recipe():
        return create_model(model, workload, checkpoint=checkpoint)


def reference_model(model: str, workload: Workload | None = None) -> nn.Module:
    """The pinned reference ``model``, loaded from its shipped checkpoint (never trained here)."""
    path = checkpoint_path(model)
    if not path.is_file():
        raise FileNotFoundError(
            f"reference model {path} is missing: run `prunebench golden --rebuild-models`"
        )
    return _shaped(model, workload or digits(), path).eval()


def rebuild_models(models: Iterable[str] = REFERENCE_MODELS) -> dict[str, float]:
    """Train each reference model with its recipe (seed 0) and write its checkpoint; held-out top-1."""
    workload, top1 = digits(), {}
    with tempfile.TemporaryDirectory() as cache:
        for model in models:
            with _own_recipe():
                baseline = load_baseline(model, workload, recipe=REFERENCE_MODELS[model], root=Path(cache))
            state = {k: v.detach().clone() for k, v in baseline.model.state_dict().items()}
            write_atomic(checkpoint_path(model), lambda f, state=state: torch.save(state, f))
            top1[model] = baseline.top1
    return top1


def _sparse_train(calib: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    def sparse_train(model: nn.Module, regularize: Regularizer, on_epoch) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=SPARSE_LR)
        model.train()
        for _ in range(SPARSE_EPOCHS):
            for images, labels in calib:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                regularize(model)
                optimizer.step()
            on_epoch()
        model.eval()

    return sparse_train


@cache
def _reference_data() -> tuple[Workload, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, list]:
    """The digits, their calibration batches, the example batch and the held-out batches, made once."""
    workload = digits()
    calib = calibration_batches(workload, CALIB_BATCH_SIZE)
    return workload, calib, workload.test_batch(CALIB_BATCH_SIZE), list(workload.loader("test", 256))


def decide(case: GoldenCase) -> dict:
    """Recompute ``case``'s golden entry from its reference model: decisions, MACs, params and the top-1
    with BatchNorm re-estimated on :data:`RECALIBRATION_BATCHES` batches (weights untouched)."""
    workload, calib, inputs, test = _reference_data()
    model = reference_model(case.model, workload)
    spec = get_method(case.method)
    sparse_train = _sparse_train(calib) if "train" in spec.needs else None
    torch.manual_seed(0)
    if case.speedup is None:
        pruned, record = prune(
            model, case.method, spec.default_ratio, inputs, calib, sparse_train=sparse_train
        )
    else:
        try:
            pruned, record = prune_to_speedup(
                model, case.method, case.speedup, inputs, calib, sparse_train=sparse_train
            )
        except TargetUnreachableError as err:
            return {"unreachable": str(err).split(":")[0]}
    recalibrated, _ = recalibrate_batchnorm(pruned, workload, batches=RECALIBRATION_BATCHES)
    top1 = 100.0 * correct(recalibrated, test).float().mean().item()
    return {
        "ratio": round(record.ratio, 4),
        "macs": record.macs_after,
        "params": record.params_after,
        "recalibrated_top1": round(top1, 2),
        "decision": record.decision.to_json(),
    }


def load_golden(path: Path | None = None) -> dict[str, dict]:
    """The golden entries by case id in ``path`` (default :data:`GOLDEN_PATH`; none when it is missing)."""
    path = path or GOLDEN_PATH
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not a golden-decision file ({err}); {UPDATE_HINT}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: not a golden-decision file (no mapping of case ids); {UPDATE_HINT}")
    return entries


def _dumps(value: object, indent: str = "") -> str:
    """JSON with a line per layer and group (a dict of plain values is one line), so that a changed
    decision is a readable diff."""
    if not isinstance(value, dict) or not any(isinstance(v, dict) for v in value.values()):
        return json.dumps(value)
    inner = indent + " "
    rows = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
    return "{\n" + ",\n".join(rows) + f"\n{indent}}}"


def update(entries: Mapping[str, dict], path: Path | None = None) -> None:
    """Write ``entries`` (by case id) into the golden file, keeping the others; safe across processes."""
    path = path or GOLDEN_PATH
    with FileLock(f"{path}.lock"):
        merged = {**load_golden(path), **entries}
        text = _dumps(dict(sorted(merged.items()))) + "\n"
        write_atomic(path, lambda f: f.write(text.encode()))


def compare(golden: dict, now: dict) -> list[str]:
    """What ``now`` (from :func:`decide`) differs in from the ``golden`` entry, a line each."""
    if "unreachable" in golden or "unreachable" in now:
        if ("unreachable" in golden) == ("unreachable" in now):
            return []
        said = golden.get("unreachable") or now.get("unreachable")
        return [f"the MACs target was {'un' if 'unreachable' in golden else ''}reachable before: {said}"]
    lines = differences(Decision.from_json(golden["decision"]), Decision.from_json(now["decision"]))
    for key in ("macs", "params", "ratio"):
        if golden[key] != now[key]:
            lines.append(f"{key}: {golden[key]} -> {now[key]}")
    drift = now["recalibrated_top1"] - golden["recalibrated_top1"]
    if abs(drift) > TOP1_TOLERANCE:
        lines.append(
            f"recalibrated top-1: {golden['recalibrated_top1']} -> {now['recalibrated_top1']} "
            f"({drift:+.2f} points, more than the {TOP1_TOLERANCE:g} allowed)"
        )
    return lines


def check(case: GoldenCase, entries: Mapping[str, dict] | None = None) -> list[str]:
    """Recompute ``case`` and compare it with its golden entry (from ``entries``, default the golden file):
    the differences, a line each. A case with no entry is a ``KeyError`` that says how to add it."""
    golden = (load_golden() if entries is None else entries).get(case.id)
    if golden is None:
        raise KeyError(f"no golden entry for {case.id}: {UPDATE_HINT}")
    return compare(golden, decide(case))
