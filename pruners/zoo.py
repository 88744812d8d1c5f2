"""Dense baselines: timm models trained once on a workload with one recipe, cached on disk, or taken from
timm's pretrained weights or a local checkpoint.

The cache key is model, workload (which carries a hash of its data), recipe and seed. Files are written
atomically under a file lock, so parallel pytest-xdist workers train a baseline once and never read a
half-written file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from filelock import FileLock
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import HfHubHTTPError
from torch import nn

from .adapters import model_kwargs
from .data import Workload
from .files import cache_dir, write_atomic
from .measure import top1
from .models import check_model_name
from .recipes import baseline_recipe
from .train import Recipe, train

_FORMAT = 1
# A baseline records its held-out top-1 after each of this many last epochs, to show whether it plateaued.
EPOCH_HISTORY = 3


class CorruptCacheError(RuntimeError):
    """A cached baseline could not be read back, or does not hold what its name promises."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained or checkpoint weights that cannot be had; the message is one line that says what to do."""


def pretrained_source(model_name: str) -> str:
    """Where timm fetches ``model_name``'s pretrained weights from (Hugging Face Hub id, URL or file)."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg and cfg.hf_hub_id:
        return f"the Hugging Face Hub ({cfg.hf_hub_id}, cached in {HF_HUB_CACHE})"
    source = cfg and (cfg.url or cfg.file)
    if not source:
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {model_name}; pass `checkpoint` PATH"
        )
    return source


@contextlib.contextmanager
def _quiet_hub() -> object:
    """Silence the Hugging Face client's retry messages: a failure is reported once, by us."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def create_model(
    model_name: str, workload: Workload, *, pretrained: bool = False, checkpoint: Path | None = None
) -> nn.Module:
    """``model_name`` shaped for ``workload`` (classes, image size): freshly initialised, with timm's
    ``pretrained`` weights, or loaded from a local ``checkpoint`` with ``timm.models.load_checkpoint``.

    Raises :class:`WeightsUnavailableError` (one line: which model, where it looked, what to pass) when the
    weights cannot be had; never falls back to random weights.
    """
    name = check_model_name(model_name)
    kwargs = {"num_classes": workload.num_classes, **model_kwargs(name, workload.img_size, workload.native)}
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"checkpoint {path} for {name} not found: pass an existing file")
        model = timm.create_model(name, pretrained=False, **kwargs)
        try:
            timm.models.load_checkpoint(model, str(path))
        except Exception as err:
            raise WeightsUnavailableError(
                f"checkpoint {path} does not fit {name} with {workload.num_classes} classes at "
                f"{workload.img_size} px: {_first_line(err)[:200]}"
            ) from err
        return model
    if pretrained:
        source = pretrained_source(name)
        try:
            with _quiet_hub():
                model = timm.create_model(name, pretrained=True, **kwargs)
        except (OSError, HfHubHTTPError) as err:
            raise WeightsUnavailableError(
                f"pretrained weights for {name} could not be had from {source} ({type(err).__name__}); "
                "download them once with network access, or pass `checkpoint` PATH"
            ) from err
        classes = timm.models.get_pretrained_cfg_value(name, "num_classes")
        if classes != workload.num_classes:
            raise WeightsUnavailableError(
                f"pretrained {name} predicts {classes} classes but {workload.name} has "
                f"{workload.num_classes}: score it on images of its own classes, or leave out `pretrained` "
                "to train a baseline"
            )
        return model
    return timm.create_model(name, pretrained=False, **kwargs)


@dataclass
class Baseline:
    """A dense model and its held-out top-1 (percent). ``path`` is its cache file or checkpoint (``None``
    for timm's pretrained weights); ``train_seconds`` is 0 when it was not trained here. ``epoch_top1`` is
    its held-out top-1 after each of its last :data:`EPOCH_HISTORY` epochs (empty when it was not trained
    here, or was cached before the history was kept). ``source`` names pretrained or checkpoint weights."""

    model_name: str
    model: nn.Module
    top1: float
    recipe: Recipe
    seed: int
    path: Path | None
    train_seconds: float
    epoch_top1: tuple[float, ...] = ()
    source: str = ""

    @property
    def key(self) -> str:
        """What the dense weights are, for the dense control's cache key: ``source`` when set (pretrained
        or a checkpoint), else the key of the recipe that trained them."""
        return self.source or self.recipe.key


def checkpoint_key(path: Path) -> str:
    """A short hash of a checkpoint file's path, size and modification time."""
    stat = path.stat()
    text = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return "ckpt-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _meta(model_name: str, workload: Workload, recipe: Recipe, seed: int) -> dict:
    return {
        "format": _FORMAT,
        "model": model_name,
        "workload": workload.name,
        "recipe": recipe.settings(),
        "seed": seed,
    }


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
    pretrained: bool = False,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
) -> Baseline:
    """The dense ``model_name`` trained on ``workload``: from the cache, else trained now and cached; or,
    with ``pretrained`` / ``checkpoint``, those weights (see :func:`create_model`), scored, never trained.
    The model is returned on ``device``, where it is also trained.

    A cache file that cannot be read back is a :class:`CorruptCacheError` naming it, and is left as it is.
    """
    recipe = recipe or baseline_recipe(check_model_name(model_name), workload)
    test = workload.loader("test", batch_size=256)
    if pretrained or checkpoint is not None:
        model = create_model(model_name, workload, pretrained=pretrained, checkpoint=checkpoint).to(device)
        path = Path(checkpoint) if checkpoint is not None else None
        source = checkpoint_key(path) if path is not None else "pretrained"
        return Baseline(model_name, model.eval(), top1(model, test), recipe, seed, path, 0.0, (), source)
    meta = _meta(model_name, workload, recipe, seed)
    path = (root or cache_dir()) / f"{model_name}__{workload.name}__{recipe.key}__seed{seed}.pt"

    def fit() -> tuple[nn.Module, dict]:
        torch.manual_seed(seed)
        model = create_model(model_name, workload).to(device)
        history: list[float] = []

        def score_last_epochs() -> None:
            epoch = len(history) + 1
            history.append(top1(model, test) if epoch > recipe.epochs - EPOCH_HISTORY else float("nan"))
            model.train()

        start = time.perf_counter()
        train(model, workload, recipe, seed=seed, desc=f"baseline {model_name}", on_epoch=score_last_epochs)
        seconds = time.perf_counter() - start
        epochs = [round(a, 2) for a in history[-EPOCH_HISTORY:]]
        return model, {"top1": top1(model, test), "train_seconds": seconds, "epoch_top1": epochs}

    model, payload = _cached_or_trained(path, meta, model_name, workload, device, "baseline", fit)
    return Baseline(
        model_name,
        model,
        payload["top1"],
        recipe,
        seed,
        path,
        payload["train_seconds"],
        tuple(payload.get("epoch_top1", ())),
    )


def _cached_or_trained(
    path: Path,
    meta: dict,
    model_name: str,
    workload: Workload,
    device: torch.device | str,
    what: str,
    fit: Callable[[], tuple[nn.Module, dict]],
) -> tuple[nn.Module, dict]:
    """Under ``path``'s file lock, the cached model and payload at ``path``, else ``fit()``'s model and
    payload, saved atomically with ``meta``. A file that does not read back is a :class:`CorruptCacheError`
    and stays untouched: never silently trained again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            model = create_model(model_name, workload)
            try:
                payload = _load(path, model, meta)
            except CorruptCacheError as err:
                raise CorruptCacheError(
                    f"the {what} cache {err}; nothing was changed: delete the file to train it again"
                ) from None
            return model.to(device).eval(), payload
        model, payload = fit()
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        save_atomic({**meta, **payload, "state_dict": state}, path)
    return model.eval(), payload


def load_control(
    baseline: Baseline,
    workload: Workload,
    recovery: Recipe,
    *,
    root: Path | None = None,
    device: torch.device | str = "cpu",
) -> Baseline:
    """The dense control: ``baseline`` fine-tuned with exactly the ``recovery`` recipe every pruned model
    gets, on the same recovery images and seed, distilling from a frozen copy of itself (the loss is the
    recipe's: ``(1 - distill) * CE(labels) + distill * T^2 * KL(teacher || student)``). A pruned model is
    judged against it, so extra training cannot pass for free accuracy (Wang et al., 2023, "Why is the
    State of Neural Network Pruning so Confusing?": the same fine-tune for every arm). Cached beside the
    baselines, keyed by the dense weights, the recovery recipe and the seed."""
    seed, name = baseline.seed, baseline.model_name
    meta = {**_meta(name, workload, recovery, seed), "control_of": baseline.key}
    path = (
        root or cache_dir()
    ) / f"{name}__{workload.name}__{baseline.key}__control-{recovery.key}__seed{seed}.pt"
    test = workload.loader("test", batch_size=256)

    def fit() -> tuple[nn.Module, dict]:
        model = copy.deepcopy(baseline.model).to(device)
        start = time.perf_counter()
        train(
            model,
            workload,
            recovery,
            seed=seed,
            desc=f"dense control {name}",
            teacher=baseline.model,
            split="recovery",
        )
        seconds = time.perf_counter() - start
        return model, {"top1": top1(model, test), "train_seconds": seconds}

    model, payload = _cached_or_trained(path, meta, name, workload, device, "dense-control", fit)
    return Baseline(name, model, payload["top1"], recovery, seed, path, payload["train_seconds"])


def cached_histories(model_name: str, root: Path | None = None) -> list[tuple[str, int, tuple[float, ...]]]:
    """``(workload, seed, held-out top-1 of the last epochs)`` of every baseline of ``model_name`` in the
    cache (the dense controls left out); a file that cannot be read shows as ``(name, -1, ())``."""
    found = []
    for path in sorted((root or cache_dir()).glob(f"{model_name}__*__seed*.pt")):
        if "__control-" in path.name:
            continue
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            found.append((payload["workload"], payload["seed"], tuple(payload.get("epoch_top1", ()))))
        except Exception:
            found.append((path.name, -1, ()))
    return found
