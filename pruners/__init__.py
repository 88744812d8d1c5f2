"""PruneBench: prune timm models with registered methods and measure what is left.

>>> import pruners
>>> pruners.list_methods("*l1*")
['l1', 'l1_global']
>>> pruners.list_models("*vit*")
['vit_tiny_patch16_224', 'mobilevit_xxs']
>>> pruned, record = pruners.prune(model, "l1", 0.3, example_inputs)
>>> pruned, record = pruners.prune_to_speedup(model, "l1", 2.0, example_inputs)  # 2x fewer MACs
"""

from . import sparse_training, structured, unstructured  # noqa: F401  (register the methods)
from .adapters import HeadNotFoundError
from .case import AccuracyDropError, CaseResult, SeedResult, Weights, check_accuracy, run
from .data import DataDirError, Workload, digits, image_folder
from .gate import CONFIDENCE, PairedDrop, Verdict, judge
from .measure import TimingOptions, resolve_device
from .models import MODELS, ModelEntry, get_model, list_models
from .pruning import (
    NotApplicableError,
    NothingPrunedError,
    PruneRecord,
    TargetUnreachableError,
    UnderPrunedError,
    load_pruned_state_dict,
    prune,
    prune_to_speedup,
)
from .registry import MethodData, MethodSpec, check_ratio, get_method, list_methods, register_method
from .unstructured import make_permanent
from .zoo import Baseline, CorruptCacheError, WeightsUnavailableError, load_baseline

__all__ = [
    "CONFIDENCE",
    "MODELS",
    "AccuracyDropError",
    "Baseline",
    "CaseResult",
    "CorruptCacheError",
    "DataDirError",
    "HeadNotFoundError",
    "MethodData",
    "MethodSpec",
    "ModelEntry",
    "NotApplicableError",
    "NothingPrunedError",
    "PairedDrop",
    "PruneRecord",
    "SeedResult",
    "TargetUnreachableError",
    "TimingOptions",
    "UnderPrunedError",
    "Verdict",
    "Weights",
    "WeightsUnavailableError",
    "Workload",
    "check_accuracy",
    "check_ratio",
    "digits",
    "get_method",
    "get_model",
    "image_folder",
    "judge",
    "list_methods",
    "list_models",
    "load_baseline",
    "load_pruned_state_dict",
    "make_permanent",
    "prune",
    "prune_to_speedup",
    "register_method",
    "resolve_device",
    "run",
]
