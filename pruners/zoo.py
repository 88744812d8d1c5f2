"""Dense baselines: timm models trained once on a workload with one recipe, cached on disk.

The cache key is model, workload, recipe and seed. Files are written atomically under a file lock, so
parallel pytest-xdist workers train a baseline once and never read a half-written file.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import timm
import torch
from filelock import FileLock
from torch import nn

from .adapters import model_kwargs
from .data import Workload
from .measure import top1
from .models import check_model_name, get_model
from .train import Recipe, train

CACHE_ENV = "PRUNEBENCH_CACHE"
_FORMAT = 1

class CorruptCacheError(RuntimeError):
    """A cached baseline could not be read back, or does not hold what its name promises."""


def cache_dir() -> Path:
    """Where baselines live: ``$PRUNEBENCH_CACHE``, else ``~/.cache/prunebench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prunebench")


def baseline_recipe(model_name: str) -> Recipe:
    """The recipe that trains ``model_name``'s dense baseline (:mod:`pruners.models`)."""
    return get_model(model_name).recipe


def create_model(model_name: str, workload: Workload) -> nn.Module:
    """A freshly initialised ``model_name`` shaped for ``workload`` (classes, image size)."""
    return timm.create_model(
        check_model_name(model_name),
        pretrained=False,
        num_classes=workload.num_classes,
        **model_kwargs(model_name, workload.img_size),
    )


@dataclass
class Baseline:
    """A trained dense model and its held-out top-1 (percent)."""

    model_name: str
    model: nn.Module
    top1: float
    recipe: Recipe
    seed: int
    path: Path
    train_seconds: float


def _meta(model_name: str, workload: Workload, recipe: Recipe, seed: int) -> dict:
    return {
        "format": _FORMAT,
        "model": model_name,
        "workload": workload.name,
        "recipe": recipe.settings(),
        "seed": seed,
    }


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, then rename it over ``path``.

    A crash or interrupt leaves ``path`` as it was, never half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` ``payload`` to ``path`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(payload, f))


def _load(path: Path, model: nn.Module, meta: dict) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CorruptCacheError(f"{path}: {type(err).__name__}: {err}") from err
    if not isinstance(payload, dict) or {k: payload.get(k) for k in meta} != meta:
        raise CorruptCacheError(f"{path}: metadata does not match {meta}")
    if not all(isinstance(payload.get(k), float) for k in ("top1", "train_seconds")):
        raise CorruptCacheError(f"{path}: top-1 or training time missing")
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise CorruptCacheError(f"{path}: state dict does not fit {meta['model']}: {err}") from err
    return payload


def load_baseline(
    model_name: str,
    workload: Workload,
    *,
    seed: int = 0,
    recipe: Recipe | None = None,
    root: Path | None = None,
) -> Baseline:
    """The dense ``model_name`` trained on ``workload``: from the cache, else trained now and cached.

    A cache file that cannot be read back is reported with a warning and rebuilt.
    """
    recipe = recipe or baseline_recipe(check_model_name(model_name))
    meta = _meta(model_name, workload, recipe, seed)
    path = (root or cache_dir()) / f"{model_name}__{workload.name}__{recipe.key}__seed{seed}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            model = create_model(model_name, workload)
            try:
                payload = _load(path, model, meta)
                return Baseline(
                    model_name, model.eval(), payload["top1"], recipe, seed, path, payload["train_seconds"]
                )
            except CorruptCacheError as err:
                warnings.warn(f"corrupt baseline cache, retraining: {err}", stacklevel=2)
        torch.manual_seed(seed)
        model = create_model(model_name, workload)
        start = time.perf_counter()
        train(model, workload, recipe, seed=seed, desc=f"baseline {model_name}")
        seconds = time.perf_counter() - start
        accuracy = top1(model, workload.loader("test", batch_size=256))
        save_atomic(
            {**meta, "top1": accuracy, "train_seconds": seconds, "state_dict": model.state_dict()}, path
        )
    return Baseline(model_name, model, accuracy, recipe, seed, path, seconds)
