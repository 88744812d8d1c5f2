"""PruneBench: prune timm models with registered methods and measure what is left.

>>> import pruners
>>> pruners.list_methods("*l1*")
['l1', 'l1_global']
>>> pruners.list_models("*vit*")
['vit_tiny_patch16_224', 'mobilevit_xxs']
>>> pruned, record = pruners.prune(model, "l1", 0.3, example_inputs)
>>> pruned, record = pruners.prune_to_speedup(model, "l1", 2.0, example_inputs)  # 2x fewer MACs

Names load on first use (``import pruners`` imports neither torch nor pytest), and the registry fills
itself on first read: the built-in methods, then those of installed ``prunebench.methods`` entry points.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "HeadNotFoundError": "adapters",
    "AccuracyDropError": "case",
    "CaseResult": "result",
    "SeedResult": "result",
    "check_accuracy": "case",
    "run_case": "case",
    "layer_sensitivity": "sensitivity",
    "Sensitivity": "sensitivity",
    "CaseSpec": "spec",
    "Weights": "spec",
    "CaseRecord": "record",
    "DataDirError": "data",
    "create_workload": "workloads",
    "list_workloads": "workloads",
    "register_workload": "workloads",
    "Workload": "data",
    "digits": "data",
    "image_folder": "folder",
    "CONFIDENCE": "gate",
    "PairedDrop": "gate",
    "Verdict": "gate",
    "judge": "gate",
    "TimingOptions": "measure",
    "resolve_device": "measure",
    "MODELS": "models",
    "ModelEntry": "models",
    "get_model": "models",
    "list_models": "models",
    "register_model": "models",
    "NotApplicableError": "pruning",
    "NothingPrunedError": "pruning",
    "PruneRecord": "pruning",
    "TargetUnreachableError": "pruning",
    "UnderPrunedError": "pruning",
    "load_pruned_state_dict": "pruning",
    "prune": "pruning",
    "prune_to_speedup": "search",
    "MethodData": "registry",
    "MethodSpec": "registry",
    "check_ratio": "registry",
    "get_method": "registry",
    "list_methods": "registry",
    "register_method": "registry",
    "make_permanent": "unstructured",
    "Baseline": "zoo",
    "CorruptCacheError": "zoo",
    "WeightsUnavailableError": "zoo",
    "load_baseline": "zoo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import the module behind ``name`` (a public name, or a submodule such as ``pruners.files``)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
