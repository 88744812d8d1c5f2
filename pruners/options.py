"""The one table of PruneBench's options: the pytest plugin and every ``prunebench`` command that runs cases
(``prune``, ``profile``, ``calibrate``) build their options from :data:`OPTIONS`, with one default each and
one validation (:func:`check`).

The library names what was wrong by its parameter in backticks (`` `img_size` ``);
:func:`as_flags` turns those names into the flags of a front end. This module imports no torch or pytest,
so the plugin adds its options without loading either.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Front = Literal["bench", "prune", "profile", "calibrate", "sweep", "sensitivity", "multiples"]
RUNS: frozenset[Front] = frozenset({"bench", "prune", "profile"})
EVERY: frozenset[Front] = RUNS | {"calibrate"}
CASE: frozenset[Front] = frozenset({"prune", "profile"})
# The options of the runs that score a model but train none: data, weights, device.
SCORED: frozenset[Front] = RUNS | {"sensitivity", "multiples"}
# The options of the runs that time a model at a size and in a runtime.
TIMED: frozenset[Front] = RUNS | {"multiples"}
SWEEP: frozenset[Front] = frozenset({"sweep"})
MATRIX: frozenset[Front] = frozenset({"bench", "calibrate"})


@dataclass(frozen=True)
class Option:
    """One option: its parameter ``name`` (``--img-size`` is ``img_size``), its value ``type`` (``bool``
    for a flag), its one ``default``, the ``fronts`` that take it and the ``section`` it is listed under."""

    name: str
    help: str
    type: type = str
    default: object = None
    fronts: frozenset[Front] = RUNS
    section: str = "data, weights and timing"
    aliases: tuple[str, ...] = ()
    required: bool = False
    repeated: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases)

    def kwargs(self) -> dict[str, object]:
        """The keyword arguments of ``argparse.add_argument`` and ``pytest.Parser.addoption`` alike."""
        help_text = self.help.replace("%", "%%")
        if self.type is bool:
            return {"action": "store_true", "dest": self.name, "help": help_text}
        if self.repeated:
            return {
                "action": "append",
                "dest": self.name,
                "type": self.type,
                "help": help_text + "; repeatable",
            }
        if self.default is not None:
            help_text += f" (default: {self.default})"
        kwargs = {"dest": self.name, "type": self.type, "default": self.default, "help": help_text}
        return {**kwargs, "required": True} if self.required else kwargs


OPTIONS: tuple[Option, ...] = (
    Option(
        "model", "timm model name", fronts=CASE | {"sensitivity", "multiples"}, section="cases", required=True
    ),
    Option(
        "method",
        "registered pruning method (prunebench list)",
        fronts=CASE | {"sensitivity", "multiples"},
        section="cases",
        required=True,
    ),
    Option(
        "models",
        "comma-separated timm models, or wildcards over the registered models such as '*' "
        "(default: the tier's)",
        fronts=MATRIX,
        section="cases",
    ),
    Option(
        "methods",
        "comma-separated method names or wildcards (default: the tier's)",
        fronts=MATRIX,
        section="cases",
    ),
    Option(
        "ratio",
        "pruning ratio in (0, 1) (default: the method's own)",
        float,
        fronts=CASE | SWEEP,
        section="cases",
    ),
    Option(
        "ratios",
        "comma-separated pruning ratios in (0, 1) (default: each method's own; sensitivity: 0.25,0.5,0.75)",
        fronts=frozenset({"bench", "sensitivity"}),
        section="cases",
    ),
    Option(
        "speedup",
        "MACs target instead of a ratio: prune until dense / pruned MACs lands within 2% of it",
        float,
        fronts=CASE | {"multiples"},
        section="cases",
    ),
    Option(
        "speedups",
        "MACs targets, e.g. 2 or 1.5,2,3: each structured method is pruned until dense / pruned MACs lands "
        "within 2% of each (equal cost); mask methods keep their ratios",
        fronts=MATRIX,
        section="cases",
        aliases=("--speedup",),
    ),
    Option(
        "latency_speedup",
        "measured latency target instead of a ratio: prune until dense / pruned latency in --runtime "
        "(default eager), at --latency-size if given, lands within 5% of it, re-measured",
        float,
        fronts=CASE,
        section="cases",
    ),
    Option(
        "latency_speedups",
        "measured latency targets, e.g. 2 or 1.5,2: each structured method is pruned until dense / pruned "
        "latency in --runtime (default eager), at --latency-size if given, lands within 5% of each; mask "
        "methods are left out",
        fronts=frozenset({"bench"}),
        section="cases",
        aliases=("--latency-speedup",),
    ),
    Option(
        "quick",
        "smoke tier: 4 of the default tier's cases, on resnet18 and mobilenetv3",
        bool,
        fronts=frozenset({"bench"}),
        section="cases",
    ),
    Option(
        "full",
        "whole matrix: every method on every default model",
        bool,
        fronts=frozenset({"bench"}),
        section="cases",
    ),
    Option(
        "tier",
        "the bench tier to calibrate without --models / --methods (default: the dataset's: verdict on "
        "Fashion-MNIST, default elsewhere)",
        fronts=frozenset({"calibrate"}),
        section="cases",
    ),
    Option(
        "seeds",
        "comma-separated training seeds; a case runs once per seed and is judged on the mean drop "
        "(sensitivity: the first seed's baseline)",
        default="0",
        fronts=EVERY | {"sensitivity", "multiples"},
        section="cases",
        aliases=("--seed",),
    ),
    Option(
        "shard",
        "I/N: run only shard I of N (round-robin over the selected cases), to split across machines",
        fronts=frozenset({"bench"}),
        section="cases",
    ),
    Option("batch_size", "images per forward for MACs and latency", int, 64, fronts=SCORED),
    Option("threads", "torch threads (default: all cores; 1 per xdist worker)", int, fronts=EVERY | SCORED),
    Option("latency_rounds", "timed rounds per model and case", int, 20, fronts=TIMED),
    Option(
        "data_dir",
        "your labelled images: an ImageFolder with train/ and val/, or a val-only folder of classes "
        "(half held out, half for training and recovery); read at each model's own timm data config",
        fronts=SCORED,
    ),
    Option(
        "dataset",
        "a dataset named the timm way: torch/fashion_mnist (offline from Debian's dataset-fashion-mnist), "
        "torch/mnist, torch/kmnist, torch/cifar10, torch/cifar100; --data-dir is then its torchvision root",
        fronts=EVERY | SCORED,
    ),
    Option("dataset_download", "let torchvision download --dataset (network needed)", bool, fronts=SCORED),
    Option(
        "img_size",
        "input size for --data-dir (default: the model's own) or --dataset (default: the model's size on it, "
        "`prunebench list models`, else 32)",
        int,
        fronts=SCORED,
    ),
    Option("train_images", "cap the training images of --dataset / --data-dir", int, fronts=SCORED),
    Option("test_images", "cap the held-out images of --dataset / --data-dir", int, fronts=SCORED),
    Option("hflip", "horizontal flip probability when training", float, 0.5),
    Option("crop_scale", "smallest random-resized-crop area when training (timm's: 0.08)", float),
    Option(
        "skip_bad_images",
        "leave out the unreadable images of --data-dir (counted in extra_info) instead of stopping",
        bool,
        fronts=SCORED,
    ),
    Option("recovery_epochs", "recovery fine-tune epochs (default: each recipe's)", int),
    Option("recovery_lr", "recovery fine-tune peak lr (default: the baseline recipe's)", float),
    Option(
        "scratch",
        "also train each pruned architecture from random initialisation with the baseline recipe and seed, "
        "and pair it with the recovered model (costs a baseline's training per case and seed)",
        bool,
        fronts=frozenset({"bench", "prune"}),
    ),
    Option("pretrained", "timm's pretrained weights as the dense model (no training)", bool, fronts=SCORED),
    Option("checkpoint", "a local checkpoint of the one model, loaded the timm way", fronts=SCORED),
    Option("device", "cpu, cuda, cuda:N or auto", default="cpu", fronts=SCORED),
    Option("channels_last", "time latency in channels_last memory format", bool),
    Option("amp", "time latency under autocast (fp16 CUDA, bf16 CPU)", bool),
    Option(
        "profile_dir",
        "after each case's timed rounds, torch.profiler its dense and pruned model into DIR/CASE "
        "(profile.md, Chrome traces)",
        fronts=frozenset({"bench"}),
    ),
    Option(
        "runtimes",
        "also time dense and pruned in these runtimes: eager, compile (torch.compile, inductor), "
        "onnxruntime (ONNX Runtime's CPU provider on the exported model); comma-separated",
        fronts=TIMED,
        aliases=("--runtime",),
    ),
    Option(
        "latency_size",
        "also time dense and pruned at this input size, or 'model' for its pretrained size",
        fronts=TIMED,
    ),
    Option(
        "per_family",
        "at most this many architectures of each timm family",
        int,
        fronts=SWEEP,
        section="sweep",
    ),
    Option("jobs", "architectures checked at once", int, 1, fronts=SWEEP, section="sweep"),
    Option("timeout", "seconds per architecture", float, 300.0, fronts=SWEEP, section="sweep"),
    Option(
        "update",
        "an earlier sweep.csv: write its rows with those of the architectures checked now replaced",
        Path,
        fronts=SWEEP,
        section="sweep",
    ),
    Option(
        "imports",
        "import this module first (e.g. one that registers your own method)",
        fronts=SWEEP,
        section="sweep",
        aliases=("--import",),
        repeated=True,
    ),
    Option(
        "distill",
        "distillation weight of the recovery, to compare recipes",
        float,
        0.5,
        fronts=frozenset({"calibrate"}),
        section="calibration",
    ),
    Option(
        "rerun",
        "run again the runs already recorded, replacing them (after a change that moves the figures)",
        bool,
        fronts=frozenset({"calibrate"}),
        section="calibration",
    ),
    Option(
        "render",
        "only re-render CALIBRATION.md from the JSON (after a tolerance edit)",
        bool,
        fronts=frozenset({"calibrate"}),
        section="calibration",
    ),
)

BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}


def options_for(front: Front) -> list[Option]:
    """The options ``front`` takes, in table order."""
    return [option for option in OPTIONS if front in option.fronts]


def add_arguments(parser: argparse.ArgumentParser, front: Front) -> None:
    """Add ``front``'s options to an argparse ``parser``, a group per section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options_for(front):
        group = groups.setdefault(option.section, parser.add_argument_group(option.section))
        group.add_argument(*option.flags, **option.kwargs())


def add_pytest_options(parser) -> None:
    """Add the bench's options to pytest's ``parser`` (``pytest_addoption``), a group per section."""
    for option in options_for("bench"):
        parser.getgroup(f"prunebench {option.section}").addoption(*option.flags, **option.kwargs())


def split_csv(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` -> ``[]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def check(values: Mapping[str, object]) -> None:
    """The checks on option values that need no model or data, in one place: a ``ValueError`` naming the
    parameter (:func:`as_flags` names its flag)."""
    names = ("batch_size", "threads", "img_size", "train_images", "test_images", "recovery_epochs", "jobs")
    for name in (*names, "per_family"):
        value = values.get(name)
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value}")
    rounds = values.get("latency_rounds")
    if rounds is not None and rounds < 2:
        raise ValueError(f"`latency_rounds` must be >= 2, got {rounds}")
    if sum(bool(values.get(name)) for name in ("quick", "full")) + bool(
        values.get("models") or values.get("methods")
    ) > 1 and ("quick" in values or "full" in values):
        raise ValueError("choose one of `quick`, `full`, or `models` / `methods`")
    timeout = values.get("timeout")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"`timeout` must be > 0 seconds, got {timeout}")
    lr = values.get("recovery_lr")
    if lr is not None and not lr > 0:
        raise ValueError(f"`recovery_lr` must be > 0, got {lr}")
    distill = values.get("distill")
    if distill is not None and not 0 <= distill < 1:
        raise ValueError(f"`distill` must be in [0, 1), got {distill}")


_PARAMETER = re.compile(r"`([a-z_]+)`")


def as_flags(message: str, names: Iterable[str] = BY_NAME) -> str:
    """``message`` with each `` `parameter` `` of :data:`OPTIONS` written as its flag (``--img-size``)."""
    known = set(names)
    return _PARAMETER.sub(lambda m: BY_NAME[m.group(1)].flag if m.group(1) in known else m.group(0), message)
