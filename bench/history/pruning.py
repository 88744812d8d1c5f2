"""asv benchmarks for every model x method case of the bench matrix, one parameter pair per case.

The cases come from :func:`pruners.matrix.cases_from_env` (``PRUNEBENCH_MODELS``, ``PRUNEBENCH_METHODS``,
``PRUNEBENCH_SHARD``, and ``PRUNEBENCH_SPEEDUPS`` for one MACs target), so methods and models added to the
library join the suite without an edit here. ``setup_cache`` runs each case of this shard once through
:func:`pruners.run_case`, with dense baselines from the same cache as ``pytest bench/``; every benchmark below
reads what it saved. Parameter pairs that are not a case of this run (another shard's, or no case at all)
are skipped.
"""

import copy

import torch

import pruners
from pruners.case import CALIB_BATCH_SIZE, method_data
from pruners.matrix import cases_from_env
from pruners.recipes import case_recipes
from pruners.runtimes import RUNTIMES, set_up
from pruners.spec import Timing

THREADS = 1
BATCH_SIZE = 64

torch.set_num_threads(THREADS)
CASES, SHARD_CASES = cases_from_env()
MODELS = list(dict.fromkeys(c.model for c in CASES))
METHODS = list(dict.fromkeys(c.method for c in CASES))
if len({(c.model, c.method) for c in CASES}) < len(CASES):
    raise ValueError("asv tracks one cost per model and method: give PRUNEBENCH_SPEEDUPS one MACs target")
# Outside eager each model timed costs a compile or an export (minutes over a tier), so the runtime
# benchmarks time each model's dense baseline once and, pruned, only these methods of the run's.
DEPLOY_RUNTIMES = [name for name in RUNTIMES if name != "eager"]
RUNTIME_METHODS = [m for m in ("l1", "random") if m in METHODS] or METHODS[:1]


class _Case:
    params = (MODELS, METHODS)
    param_names = ("model", "method")

    def setup_cache(self) -> dict[tuple[str, str], dict]:
        workload = pruners.digits()
        saved = {}
        for case in SHARD_CASES:
            spec = pruners.CaseSpec(
                case.model,
                case.method,
                case.ratio,
                case.speedup,
                workload=workload,
                timing=Timing(batch_size=BATCH_SIZE, rounds=None),
            )
            result = pruners.run_case(spec)
            torch.save(result.dense, f"{case.id}-dense.pt")
            torch.save(result.pruned, f"{case.id}-pruned.pt")
            saved[case.model, case.method] = {"case": case, "record": result.case_record()}
        return saved

    setup_cache.timeout = 4 * 3600

    def setup(self, saved: dict, model: str, method: str) -> None:
        if (model, method) not in saved:
            raise NotImplementedError(f"{model} / {method} is not a case of this run or shard")
        self.case = saved[model, method]["case"]
        self.record = saved[model, method]["record"]
        self.workload = pruners.digits()
        self.inputs = self.workload.test_batch(BATCH_SIZE)


class Latency(_Case):
    """Forward time of one batch of held-out images, dense and pruned (the same batch for both)."""

    number = 1
    repeat = (5, 20, 10.0)
    warmup_time = 0.5

    def setup(self, saved: dict, model: str, method: str) -> None:
        super().setup(saved, model, method)
        self.dense = torch.load(f"{self.case.id}-dense.pt", weights_only=False)
        self.pruned = torch.load(f"{self.case.id}-pruned.pt", weights_only=False)

    @torch.inference_mode()
    def time_dense(self, saved: dict, model: str, method: str) -> None:
        self.dense(self.inputs)

    @torch.inference_mode()
    def time_pruned(self, saved: dict, model: str, method: str) -> None:
        self.pruned(self.inputs)


def _deployed(case_id: str, which: str, runtime: str, inputs: torch.Tensor):
    """The saved ``which`` model of ``case_id`` set up in ``runtime`` (compiled, or exported and loaded);
    ``NotImplementedError`` (asv: skipped) with why when the runtime cannot take it."""
    module = torch.load(f"{case_id}-{which}.pt", weights_only=False).eval()
    try:
        return set_up(runtime, module, inputs)[0]
    except Exception as err:
        why = f"{case_id} ({which}) does not run in {runtime}: {type(err).__name__}: {err}"
        raise NotImplementedError(why) from err


class RuntimeDenseLatency(_Case):
    """Forward time of the same batch through each model's dense baseline in the other runtimes people
    deploy with (``torch.compile`` with inductor, ONNX Runtime's CPU provider on the exported model): once
    per model, not per case. The compile or the export runs in ``setup``, outside the timing."""

    params = (MODELS, DEPLOY_RUNTIMES)
    param_names = ("model", "runtime")
    number = 1
    repeat = (5, 20, 10.0)
    warmup_time = 0.5

    def setup(self, saved: dict, model: str, runtime: str) -> None:
        method = next((m for name, m in saved if name == model), None)
        if method is None:
            raise NotImplementedError(f"{model} has no case in this run or shard")
        super().setup(saved, model, method)
        self.forward = _deployed(self.case.id, "dense", runtime, self.inputs)

    @torch.inference_mode()
    def time_dense(self, saved: dict, model: str, runtime: str) -> None:
        self.forward()


class RuntimePrunedLatency(_Case):
    """Forward time of the same batch through the pruned models of :data:`RUNTIME_METHODS` in those
    runtimes: a bounded subset, since each costs a compile or an export."""

    params = (MODELS, RUNTIME_METHODS, DEPLOY_RUNTIMES)
    param_names = ("model", "method", "runtime")
    number = 1
    repeat = (5, 20, 10.0)
    warmup_time = 0.5

    def setup(self, saved: dict, model: str, method: str, runtime: str) -> None:
        super().setup(saved, model, method)
        self.forward = _deployed(self.case.id, "pruned", runtime, self.inputs)

    @torch.inference_mode()
    def time_pruned(self, saved: dict, model: str, method: str, runtime: str) -> None:
        self.forward()


class Accuracy(_Case):
    """Top-1 on the held-out images after pruning and recovery, as error so that larger is worse."""

    def track_top1_error(self, saved: dict, model: str, method: str) -> float:
        return round(100.0 - self.record.recovered_top1, 2)

    track_top1_error.unit = "%"

    def track_top1_drop(self, saved: dict, model: str, method: str) -> float:
        """Dense control minus recovered top-1: what the recovery gate judges."""
        return self.record.top1_drop

    track_top1_drop.unit = "points"

    def track_recalibrated_top1_error(self, saved: dict, model: str, method: str) -> float:
        """Top-1 error straight after pruning, BatchNorm statistics re-estimated: the criterion alone."""
        return round(100.0 - self.record.recalibrated_top1, 2)

    track_recalibrated_top1_error.unit = "%"

    def track_dense_control_top1_error(self, saved: dict, model: str, method: str) -> float:
        """Top-1 error of the dense baseline fine-tuned with the same recovery recipe."""
        return round(100.0 - self.record.dense_control_top1, 2)

    track_dense_control_top1_error.unit = "%"


class Size(_Case):
    """MACs and parameters of the pruned model (unstructured masks leave both unchanged)."""

    def track_macs(self, saved: dict, model: str, method: str) -> float:
        return round(self.record.macs_pruned / 1e6, 3)

    track_macs.unit = "MMACs"

    def track_params(self, saved: dict, model: str, method: str) -> float:
        return round(self.record.params_pruned / 1e6, 3)

    track_params.unit = "Mparams"


class Memory(_Case):
    """Peak resident memory of a process that prunes the dense baseline (the pruning step alone, with the
    sparse-training epochs of the methods that have them)."""

    def setup(self, saved: dict, model: str, method: str) -> None:
        super().setup(saved, model, method)
        self.dense = torch.load(f"{self.case.id}-dense.pt", weights_only=False)
        _, recovery = case_recipes(model)
        self.data = method_data(method, self.workload, CALIB_BATCH_SIZE, recovery, self.dense)

    def peakmem_prune(self, saved: dict, model: str, method: str) -> None:
        pruners.prune(
            copy.deepcopy(self.dense),
            method,
            self.record.ratio,
            self.inputs,
            calib=self.data.calib,
            sparse_train=self.data.sparse_train,
        )
