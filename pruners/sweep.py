"""Prunability sweep: which timm architectures a method can prune, checked stage by stage.

``prunebench sweep 'resnet*' 'vit_*' --method l1 --ratio 0.3 --jobs 2`` creates each architecture untrained
at its own input size (timm's ``resolve_data_config``), prunes it and checks, in order, the
:data:`STAGES`: it is created, runs forward, prunes, lost MACs (structured methods), runs forward after
pruning, survives ``torch.save`` of the whole model and Torch-Pruning's state-dict route, and exports to
ONNX (torch's dynamo exporter, or its TorchScript exporter where that fails; the row says which). Every
architecture runs in its own process under a time limit, so one crash or hang costs that row only. The
result is a CSV and a Markdown table (architecture, last stage reached, failure reason, MACs and params
before / after, seconds) with a tally by family. Each failure also names whose code raised it
(Torch-Pruning, timm, torch, torch.onnx or the sweep's own checks), by its innermost Python frame outside
torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import timm
import torch
import torch_pruning as tp
from torch import nn

from . import pruning, unstructured
from .runtimes import onnx_bytes

STAGES = ("create", "forward", "prune", "macs_dropped", "forward_pruned", "save_load", "state_dict", "onnx")
NUM_CLASSES = 10
# A row's stdout carries one ``STAGE_MARK``-prefixed line per stage passed and a last ``RESULT_MARK`` line,
# so the parent knows how far a child that crashed or hung got.
STAGE_MARK, RESULT_MARK = "prunebench-sweep-stage ", "prunebench-sweep-result "


@dataclass
class SweepRow:
    """One architecture's outcome: ``reached`` is the last stage passed ("" when creation failed)."""

    arch: str
    family: str
    reached: str = ""
    failed_stage: str = ""
    reason: str = ""
    raised_in: str = ""
    macs_before: int | None = None
    macs_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None
    seconds: float = 0.0
    onnx_exporter: str = ""

    @property
    def ok(self) -> bool:
        return self.reached == STAGES[-1]


class StageFailed(Exception):
    """A stage ran but its check did not hold."""


def family(arch: str) -> str:
    """The timm module that defines ``arch`` (``resnet``, ``vision_transformer``, ...): its family."""
    return timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]


def parameter_count(arch: str) -> int:
    """Parameters of ``arch`` built on the meta device (no memory, no weights); ``sys.maxsize`` when it
    cannot be built there, so it sorts last."""
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False)
    except Exception:
        return sys.maxsize
    return sum(p.numel() for p in model.parameters())


def select_architectures(patterns: Sequence[str], per_family: int | None = None) -> list[str]:
    """timm architectures matching any of ``patterns``, in timm's sorted order.

    With ``per_family``, at most that many of each family: its smallest by parameter count, leaving out
    timm's own ``test_*`` fixtures, so a sweep over every family stays cheap and covers real architectures.
    """
    names = sorted({name for pattern in patterns for name in timm.list_models(pattern)})
    if not names:
        raise ValueError(f"no timm architecture matches {', '.join(map(repr, patterns))}")
    if per_family is None:
        return names
    families: dict[str, list[str]] = {}
    for name in names:
        if not name.startswith("test_"):
            families.setdefault(family(name), []).append(name)
    chosen = {
        name for members in families.values() for name in sorted(members, key=parameter_count)[:per_family]
    }
    return [name for name in names if name in chosen]


def _stages(arch: str, method: str, ratio: float, row: SweepRow) -> Iterator[str]:
    """Run the :data:`STAGES` on ``arch`` one by one, yielding each stage's name once it passed."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES).eval()
    inputs = torch.randn(2, *timm.data.resolve_data_config({}, model=model)["input_size"])
    yield "create"
    with torch.no_grad():
        _expect(model(inputs).shape == (2, NUM_CLASSES), "forward does not give one logit per class")
    yield "forward"
    calib = [(inputs, torch.randint(0, NUM_CLASSES, (2,)))]
    try:
        pruned, record = pruning.prune(model, method, ratio, inputs, calib=calib)
    except pruning.NothingPrunedError as err:
        yield "prune"
        raise StageFailed(str(err)) from err
    row.macs_before, row.macs_after = record.macs_before, record.macs_after
    row.params_before, row.params_after = record.params_before, record.params_after
    yield "prune"
    yield "macs_dropped"
    pruned = unstructured.make_permanent(pruned).eval()
    with torch.no_grad():
        out = pruned(inputs)
    _expect(out.shape == (2, NUM_CLASSES), "the pruned forward does not give one logit per class")
    yield "forward_pruned"
    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    _expect_same(torch.load(buffer, weights_only=False), inputs, out, "torch.save / torch.load")
    yield "save_load"
    fresh = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES).eval()
    pruning.load_pruned_state_dict(fresh, tp.state_dict(pruned))
    _expect_same(fresh, inputs, out, "tp.state_dict / pruners.load_pruned_state_dict")
    yield "state_dict"
    row.onnx_exporter = export_onnx(pruned, inputs)
    yield "onnx"


def export_onnx(model: nn.Module, inputs: torch.Tensor) -> str:
    """Export ``model`` to ONNX in memory (:func:`pruners.runtimes.onnx_bytes`) and name the exporter that
    worked: torch's dynamo exporter, else its TorchScript one."""
    return onnx_bytes(model, inputs)[1]


def check_architecture(arch: str, method: str, ratio: float) -> SweepRow:
    """Run every stage on ``arch`` in this process; the first failing stage ends the row. Each passed
    stage is also printed, so a parent process sees how far a crashed or hung child got."""
    row = SweepRow(arch, family(arch))
    start = time.perf_counter()
    try:
        for stage in _stages(arch, method, ratio, row):
            row.reached = stage
            print(f"{STAGE_MARK}{stage}", flush=True)
    except Exception as err:
        row.failed_stage = next_stage(row.reached)
        row.reason = _reason(err)
        row.raised_in = raised_in(err)
    row.seconds = round(time.perf_counter() - start, 2)
    return row


def next_stage(reached: str) -> str:
    """The stage after ``reached`` ("" for none passed): where a row that stopped there failed."""
    return STAGES[STAGES.index(reached) + 1] if reached else STAGES[0]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise StageFailed(message)


def _expect_same(model: nn.Module, inputs: torch.Tensor, expected: torch.Tensor, route: str) -> None:
    with torch.no_grad():
        got = model(inputs)
    _expect(torch.allclose(got, expected, atol=1e-4), f"{route} gives other outputs")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(err: BaseException) -> str:
    """One line: the exception type and the first line of its message (no terminal colours), at most 160
    characters."""
    message = _ANSI.sub("", str(err)).strip()
    text = message.splitlines()[0] if message else ""
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."


# Who owns a Python frame, by its file's path: the first match names the owner.
_OWNERS = (
    ("/torch_pruning/", "Torch-Pruning"),
    ("/timm/", "timm"),
    ("/torch/onnx/", "torch.onnx"),
    ("/torch/_export/", "torch.onnx"),
    ("/torch/", "torch"),
    ("/pruners/", "PruneBench"),
)


def _owner(path: str) -> str:
    path = path.replace(os.sep, "/")
    return next((owner for marker, owner in _OWNERS if marker in path), "")


def raised_in(err: BaseException) -> str:
    """Whose code raised ``err``: Torch-Pruning, timm (a model's forward that pruning left inconsistent),
    torch.onnx, PruneBench (one of the sweep's own checks), or torch. Frames inside torch itself are looked
    through to the code that called it (``Module.__setattr__`` called by Torch-Pruning is Torch-Pruning's),
    except for the exporter, whose failures are its own."""
    owners = [_owner(frame.filename) for frame in traceback.extract_tb(err.__traceback__)]
    if not owners:
        return ""
    if owners[-1] == "torch.onnx":
        return "torch.onnx"
    return next((owner for owner in reversed(owners) if owner not in ("torch", "")), owners[-1])


def run_isolated(
    arch: str, method: str, ratio: float, timeout: float, imports: Sequence[str] = ()
) -> SweepRow:
    """:func:`check_architecture` in a child process under ``timeout`` seconds; a crash or a hang becomes a
    row that names the stage it was in."""
    command = [sys.executable, "-m", "pruners.sweep", arch, "--method", method, "--ratio", str(ratio)]
    command += [arg for module in imports for arg in ("--import", module)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        output, problem = proc.stdout, f"process exited with code {proc.returncode}"
        tail = proc.stderr.strip().splitlines()
        if tail:
            problem += f": {tail[-1][:120]}"
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        problem = f"timed out after {timeout:g} s"
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            return SweepRow(**json.loads(line[len(RESULT_MARK) :]))
    passed = [line[len(STAGE_MARK) :] for line in output.splitlines() if line.startswith(STAGE_MARK)]
    reached = passed[-1] if passed else ""
    return SweepRow(
        arch,
        family(arch),
        reached=reached,
        failed_stage=next_stage(reached),
        reason=problem,
        seconds=round(time.perf_counter() - start, 2),
    )


def sweep(
    archs: Iterable[str],
    method: str = "l1",
    ratio: float = 0.3,
    *,
    jobs: int = 1,
    timeout: float = 300.0,
    imports: Sequence[str] = (),
    progress: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    """Check every architecture in its own process, ``jobs`` at a time; rows come back in ``archs`` order."""
    archs = list(archs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_isolated, arch, method, ratio, timeout, imports) for arch in archs]
        rows = []
        for future in futures:
            rows.append(future.result())
            if progress:
                progress(rows[-1])
    return rows


def _child(argv: Sequence[str]) -> int:
    """``python -m pruners.sweep ARCH --method M --ratio R [--import MODULE ...]``: one row, as JSON."""
    parser = argparse.ArgumentParser(prog="python -m pruners.sweep")
    parser.add_argument("arch")
    parser.add_argument("--method", required=True)
    parser.add_argument("--ratio", type=float, required=True)
    parser.add_argument("--import", dest="imports", action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for module in args.imports:
        importlib.import_module(module)
    row = check_architecture(args.arch, args.method, args.ratio)
    print(RESULT_MARK + json.dumps(dataclasses.asdict(row)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
