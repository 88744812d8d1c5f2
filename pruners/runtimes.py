"""The runtimes a pruned model is timed in: PyTorch eager, ``torch.compile`` (inductor) and ONNX Runtime's
CPU provider on the exported model. Pruning pays off only where the runtime's per-op overhead does not
swallow the MACs it removed, so the bench times dense and pruned in each, in alternation, in one process.

A runtime turns a model and an input batch into a no-argument forward; its set-up (the compile, the export
and session) is timed apart from the rounds.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .measure import alternated, device_of, synchronize

Forward = Callable[[], object]


def onnx_bytes(model: nn.Module, inputs: torch.Tensor) -> tuple[bytes, str]:
    """``model`` exported to ONNX, in memory, with torch's dynamo exporter or, where that fails, its
    TorchScript exporter, and the name of the one that worked; when both fail, the dynamo exporter's error
    is raised."""
    try:
        program = torch.onnx.export(model, (inputs,), dynamo=True, verbose=False)
        return program.model_proto.SerializeToString(), "dynamo"
    except Exception as dynamo_error:
        buffer = io.BytesIO()
        try:
            torch.onnx.export(model, (inputs,), buffer, dynamo=False)
        except Exception:
            raise dynamo_error from None
        return buffer.getvalue(), "torchscript"


def _eager(model: nn.Module, inputs: torch.Tensor) -> Forward:
    return lambda: model(inputs)


def _compile(model: nn.Module, inputs: torch.Tensor) -> Forward:
    compiled = torch.compile(model, backend="inductor", dynamic=False)
    compiled(inputs)
    return lambda: compiled(inputs)


def _onnxruntime(model: nn.Module, inputs: torch.Tensor) -> Forward:
    import onnxruntime

    if inputs.device.type != "cpu":
        raise ValueError("the onnxruntime runtime times ONNX Runtime's CPU provider: run with --device cpu")
    data, _ = onnx_bytes(model, inputs)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    return lambda: session.run(None, feed)


RUNTIMES: dict[str, Callable[[nn.Module, torch.Tensor], Forward]] = {
    "eager": _eager,
    "compile": _compile,
    "onnxruntime": _onnxruntime,
}


def is_n_of_m(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether ``weight`` (2-D) keeps at most ``n`` non-zeros in every ``m`` consecutive weights along its
    input dimension: the pattern of :func:`pruners.unstructured.mask_n_of_m` (2:4 by default)."""
    if weight.dim() != 2 or weight.shape[1] % m:
        return False
    return bool((weight.reshape(len(weight), -1, m) != 0).sum(dim=2).le(n).all())


def semi_structured(model: nn.Module) -> tuple[int, dict[str, str]]:
    """Swap, in place, the weight of every ``nn.Linear`` that is 2:4 sparse for PyTorch's semi-structured
    sparse tensor (``torch.sparse.to_sparse_semi_structured``: the kernels of the sparse tensor cores; CUDA,
    fp16 or bf16, masks made permanent first). Returns how many layers were swapped and, for each ``Linear``
    left dense, why.

    Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks".
    """
    from torch.sparse import to_sparse_semi_structured

    swapped, left = 0, {}
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        if not is_n_of_m(layer.weight):
            left[name] = "not 2:4 sparse"
            continue
        try:
            sparse = to_sparse_semi_structured(layer.weight.detach())
        except (RuntimeError, ValueError) as err:
            left[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:120]}"
            continue
        layer.weight = nn.Parameter(sparse, requires_grad=False)
        swapped += 1
    return swapped, left


def check_runtimes(names: Sequence[str]) -> list[str]:
    """``names`` if each is a runtime of :data:`RUNTIMES` and none repeats, else a ``ValueError``."""
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime {unknown[0]!r}; choose from {', '.join(RUNTIMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"runtimes must be distinct, got {','.join(names)}")
    return list(names)


@dataclass(frozen=True)
class RuntimeLatency:
    """Dense and pruned latency in one runtime (milliseconds, medians of alternated rounds) and the seconds
    each took to set up (compile, or export and session)."""

    runtime: str
    dense_ms: float
    pruned_ms: float
    dense_setup_s: float
    pruned_setup_s: float
    rounds: int
    threads: int

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.pruned_ms

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "speedup": self.speedup}


def set_up(runtime: str, model: nn.Module, inputs: torch.Tensor) -> tuple[Forward, float]:
    """``model`` set up in ``runtime`` for ``inputs`` (compiled, or exported and loaded in a session) and run
    once: its forward and the seconds that took."""
    start = time.perf_counter()
    with torch.inference_mode():
        forward = RUNTIMES[runtime](model, inputs)
        forward()
    synchronize(inputs.device)
    return forward, time.perf_counter() - start


def compare_runtime(
    runtime: str, dense: nn.Module, pruned: nn.Module, inputs: torch.Tensor, rounds: int = 20, warmup: int = 3
) -> RuntimeLatency:
    """Set ``dense`` and ``pruned`` up in ``runtime`` and time them on ``inputs`` in alternation."""
    inputs = inputs.to(device_of(dense))
    dense_fn, dense_setup = set_up(runtime, dense.eval(), inputs)
    pruned_fn, pruned_setup = set_up(runtime, pruned.eval(), inputs)
    with torch.inference_mode():
        dense_ms, pruned_ms = alternated([dense_fn, pruned_fn], rounds, warmup, inputs.device)
    return RuntimeLatency(
        runtime=runtime,
        dense_ms=statistics.median(dense_ms),
        pruned_ms=statistics.median(pruned_ms),
        dense_setup_s=dense_setup,
        pruned_setup_s=pruned_setup,
        rounds=rounds,
        threads=torch.get_num_threads(),
    )


def compare_runtimes(
    runtimes: Sequence[str], dense: nn.Module, pruned: nn.Module, inputs: torch.Tensor, rounds: int = 20
) -> tuple[dict[str, RuntimeLatency], dict[str, str]]:
    """:func:`compare_runtime` in each of ``runtimes``; a runtime that cannot take the model (no export, no
    compile) is left out with why, in the second dict, and the others still run."""
    timed, errors = {}, {}
    for runtime in runtimes:
        try:
            timed[runtime] = compare_runtime(runtime, dense, pruned, inputs, rounds)
        except Exception as err:
            errors[runtime] = (
                f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err) else ''}"
            )
    return timed, errors
