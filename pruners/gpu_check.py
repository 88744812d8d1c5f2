"""``prunebench gpu-check``: the GPU path proved in a few minutes on one CUDA machine, as one table.

It runs three cases of the default tier through ``pytest bench/ --device cuda`` (baselines, dense control,
recovery, the gates, synchronised latency at the workload's size and at 224 px), times the 2:4 case through
PyTorch's semi-structured sparse kernels in fp16 against the dense model, and profiles one case with
torch.profiler's CUDA time. Without CUDA it says so and runs nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from .case_timing import sized_inputs
from .files import check_writable, write_atomic
from .measure import alternated, resolve_device
from .profile import profile_pair
from .pruning import prune
from .report import row_from_info
from .runtimes import semi_structured
from .search import prune_to_speedup
from .tables import markdown_table
from .unstructured import make_permanent

BENCH_MODEL = "resnet18"
BENCH_METHODS = ("l1", "random", "taylor")
SEMI_STRUCTURED_MODEL = "vit_base_patch16_224"
PROFILE_MODEL, PROFILE_METHOD, PROFILE_SPEEDUP = "resnet18", "l1", 3.0
DEPLOY_SIZE = 224
BATCH_SIZE = 64
ROUNDS = 20
# fp16 logits of the 2:4 kernels against the same masked model on dense kernels, relative to their scale.
SEMI_STRUCTURED_RTOL = 2e-2


class CheckFailedError(Exception):
    """A GPU check ran and found the GPU path wrong (a gate failed, no 2:4 kernel, outputs that differ)."""


@dataclass(frozen=True)
class CheckRow:
    """One line of the table: what was checked, on which case, dense and pruned milliseconds, and how it
    went."""

    check: str
    case: str
    dense_ms: float
    pruned_ms: float
    detail: str
    ok: bool = True

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.pruned_ms


def missing_cuda() -> str:
    """Why the check cannot run here (empty when torch sees a CUDA GPU)."""
    if torch.cuda.is_available():
        return ""
    return f"no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() is False)"


def bench_command(json_path: Path, device: str) -> list[str]:
    """The bench run (the installed plugin's matrix, ``--prunebench --pyargs pruners.bench``) of
    :data:`BENCH_METHODS` on :data:`BENCH_MODEL` at its default-tier MACs
    target, on ``device``, also timed at :data:`DEPLOY_SIZE` px, saving its JSON to ``json_path``."""
    return [
        sys.executable, "-m", "pytest", "--prunebench", "--pyargs", "pruners.bench",
        "-p", "no:cacheprovider", "-q",
        "--device", device, "--models", BENCH_MODEL, "--methods", ",".join(BENCH_METHODS),
        "--latency-size", str(DEPLOY_SIZE), "--benchmark-json", str(json_path),
    ]  # fmt: skip


def bench_rows(run: dict) -> list[CheckRow]:
    """One row per case of a bench JSON run: latency at the deploy size, with top-1, gate and the
    workload-size latency as the detail."""
    rows = []
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        row = row_from_info(info, bench["name"])
        workload = row.workload_latency_ms
        at_workload = f"; {workload[0]:.2f} → {workload[1]:.2f} ms at the workload's size" if workload else ""
        rows.append(
            CheckRow(
                check=f"bench, {info['device']}, {row.latency_img_size} px",
                case=f"{row.model} {row.method} {row.cost}",
                dense_ms=row.latency_dense_ms,
                pruned_ms=row.latency_pruned_ms,
                detail=f"top-1 {row.dense_top1:.2f} → {row.pruned_top1:.2f}, gate "
                f"{'pass' if row.passed else 'FAIL'}, MACs {row.macs_speedup:.2f}x{at_workload}",
                ok=row.passed,
            )
        )
    return rows


def run_bench(out_dir: Path, device: str) -> list[CheckRow]:
    """Run :func:`bench_command` (its output goes to the terminal) and read its rows."""
    json_path = out_dir / "bench.json"
    json_path.unlink(missing_ok=True)
    done = subprocess.run(bench_command(json_path, device), check=False)
    if not json_path.is_file():
        raise CheckFailedError(f"pytest bench/ --device {device} saved no results (exit {done.returncode})")
    return bench_rows(json.loads(json_path.read_text()))


def semi_structured_row(
    device: torch.device, model_name: str = SEMI_STRUCTURED_MODEL, batch_size: int = BATCH_SIZE
) -> CheckRow:
    """``model_name`` (untrained: kernels, not accuracy) pruned 2:4 by ``nm_2_4``, its ``Linear`` layers on
    the semi-structured sparse kernels in fp16, timed in alternation with the dense fp16 model on 224-px
    inputs; its logits are checked against the same masked model on dense kernels."""
    torch.manual_seed(0)
    dense = timm.create_model(model_name).eval()
    masked, _ = prune(dense, "nm_2_4", 0.5, sized_inputs(2, DEPLOY_SIZE))
    dense, masked = dense.half().to(device), make_permanent(masked).half().to(device)
    inputs = sized_inputs(batch_size, DEPLOY_SIZE).half().to(device)
    with torch.inference_mode():
        expected = masked(inputs)
    swapped, left = semi_structured(masked)
    if not swapped:
        name, why = next(iter(left.items()), ("", "it has no Linear layer"))
        raise CheckFailedError(f"no Linear layer of {model_name} went on the 2:4 kernels: {name} {why}")
    with torch.inference_mode():
        error = ((masked(inputs) - expected).abs().max() / expected.abs().max()).item()
        dense_ms, sparse_ms = alternated([lambda: dense(inputs), lambda: masked(inputs)], ROUNDS, 3, device)
    return CheckRow(
        check="2:4 semi-structured kernels, fp16",
        case=f"{model_name} nm_2_4, batch {batch_size}",
        dense_ms=statistics.median(dense_ms),
        pruned_ms=statistics.median(sparse_ms),
        detail=f"{swapped} of {swapped + len(left)} Linear layers on the 2:4 kernels"
        + (f" ({len(left)} left dense, e.g. {next(iter(left))}: {next(iter(left.values()))})" if left else "")
        + f"; logits within {error:.1e} of the masked model's (relative)",
        ok=error <= SEMI_STRUCTURED_RTOL,
    )


def profiler_row(
    device: torch.device, out_dir: Path, model_name: str = PROFILE_MODEL, batch_size: int = BATCH_SIZE
) -> CheckRow:
    """``model_name`` (untrained) pruned to :data:`PROFILE_SPEEDUP` x fewer MACs and both profiled on
    ``device`` at 224 px: self time per forward (CUDA time on a GPU), traces and table under ``out_dir``."""
    torch.manual_seed(0)
    dense = timm.create_model(model_name).eval()
    pruned, record = prune_to_speedup(dense, PROFILE_METHOD, PROFILE_SPEEDUP, sized_inputs(2, DEPLOY_SIZE))
    inputs = sized_inputs(batch_size, DEPLOY_SIZE).to(device)
    title = f"{model_name} {PROFILE_METHOD} {PROFILE_SPEEDUP:g}x"
    profiled = profile_pair(dense.to(device), pruned.to(device), inputs, out_dir, record.macs_speedup, title)
    top = max(profiled.dense.values(), key=lambda op: op.self_ms)
    after = profiled.pruned[top.name].self_ms if top.name in profiled.pruned else 0.0
    unit = "self CUDA time" if device.type == "cuda" else "self CPU time"
    return CheckRow(
        check=f"torch.profiler, {unit} per forward",
        case=f"{title}, batch {batch_size}, {DEPLOY_SIZE} px",
        dense_ms=profiled.dense_ms,
        pruned_ms=profiled.pruned_ms,
        detail=f"top op {top.name} {top.self_ms:.2f} → {after:.2f} ms; {profiled.markdown}",
    )


def table(rows: Sequence[CheckRow], device_name: str) -> str:
    """Markdown: one line per check, headed by the GPU's name."""
    cells = [
        (r.check, r.case, f"{r.dense_ms:.2f}", f"{r.pruned_ms:.2f}", f"{r.speedup:.2f}",
         f"{r.detail}{'' if r.ok else ' **FAIL**'}")
        for r in rows
    ]  # fmt: skip
    header = ("check", "case", "dense ms", "pruned ms", "x", "detail")
    return f"GPU check on {device_name}, torch {torch.__version__}\n\n" + markdown_table(header, cells) + "\n"


def gpu_check(out_dir: Path, device_name: str = "cuda") -> str:
    """Run every check on ``device_name`` and write ``gpu_check.md`` under ``out_dir``; return the table, or
    raise :class:`CheckFailedError` after writing it when a check failed. Without CUDA, say why and run
    nothing."""
    why = missing_cuda()
    if why:
        return f"gpu-check skipped: {why}; nothing was run"
    check_writable(out_dir, "--out-dir", folder=True)
    device = resolve_device(device_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_bench(out_dir, str(device))
    rows.append(semi_structured_row(device))
    rows.append(profiler_row(device, out_dir / "profile"))
    text = table(rows, torch.cuda.get_device_name(device))
    write_atomic(out_dir / "gpu_check.md", lambda f: f.write(text.encode()))
    failed = [r for r in rows if not r.ok]
    if failed:
        print(text)
        cases = ", ".join(r.case for r in failed)
        raise CheckFailedError(f"{len(failed)} of {len(rows)} checks failed: {cases}")
    return text
