"""The models the bench knows, as data: per model its family, its timm kwargs for the embedded workload and
the recipe that trains its dense baseline.

Adding a model is one :class:`ModelEntry` in :data:`MODELS`. Any other timm name works too: it gets
:data:`DEFAULT_RECIPE`, the family's input rule from :func:`pruners.adapters.model_kwargs` and a warning
that its recipe was never measured.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

import timm

from .data import DEFAULT_IMG_SIZE
from .train import Recipe

# Recipes measured on 2 CPU cores on the embedded digits (README, "Models"): plain CNNs converge in a few
# epochs; depthwise / squeeze-excite nets and transformers need many more at a higher or lower peak lr.
CNN = Recipe(epochs=6, lr=2e-3, warmup_epochs=1)
MOBILE = Recipe(epochs=30, lr=5e-3, warmup_epochs=2)
TRANSFORMER = Recipe(epochs=30, lr=1e-3, warmup_epochs=2)
DEFAULT_RECIPE = CNN
# Recipes on Fashion-MNIST's 60,000 training images (README, "Models"): an epoch is 938 steps, 42 digits
# epochs, so a few epochs suffice. At 32 px the MobileNet under-fits by seed (its seeds plateaued 81.7-89.7 %
# at lr 2e-3, 84.2-88.1 % at 1e-3); at 64 px and lr 1e-3 seeds 4 and 5 stayed within 1.3 points at every
# epoch (docs/fashion-mnist.md), so it runs there at 64 px (FASHION_MOBILE_SIZE), in channels-last format:
# its depthwise convolutions train 2.3x as fast in it at two threads, 1.8x at one (resnet18: 1.04x, 0.92x).
FASHION_CNN = Recipe(epochs=6, lr=2e-3)
FASHION_MOBILE = Recipe(epochs=12, lr=1e-3, warmup_epochs=1, channels_last=True)
FASHION_TRANSFORMER = Recipe(epochs=3, lr=1e-3, warmup_epochs=1)
FASHION_MOBILE_SIZE = 64
# On an image folder (--data-dir) a baseline gets a number of optimizer steps, not of epochs: at least
# FOLDER_STEPS (more where the model's digits recipe takes more), times the resolution over
# FOLDER_STEPS_RESOLUTION above it. The digits written as a folder and read through timm's augmentation
# plateau at 98 % after about 500 steps at 64 px (README, "Your own data and weights").
FOLDER_STEPS = 500
FOLDER_STEPS_RESOLUTION = 112
# The embedded digits' training split (80 % of 1,797 images) in steps of the recipes' batch of 64.
DIGITS_STEPS_PER_EPOCH = 1437 // 64
# Structured methods are compared at this MACs target on a model unless its entry says otherwise.
DEFAULT_TARGET = 2.0


@dataclass(frozen=True)
class ModelEntry:
    """One bench model: its timm ``name``, a human ``family`` label, the ``recipe`` of its dense baseline
    on the embedded digits, ``recipes`` measured on other workloads (by :attr:`pruners.Workload.family`,
    e.g. ``"fashion_mnist"``), and ``kwargs`` for ``timm.create_model`` at 32 px. ``sized`` models also get
    the workload's ``img_size`` (ViT-style models whose position embeddings depend on it). ``target`` is
    the MACs target its structured cases run at by default: one where, after BatchNorm recalibration, the
    criteria measurably differ from ``random`` (bench/CALIBRATION.md); ``targets`` replaces it on a workload
    family where that one cannot be recovered with the family's budget. ``recovery_epochs`` and
    ``recovery_lr`` set, per workload family, the recovery budget measured there (see
    :meth:`recovery_epochs_for`, :meth:`recovery_lr_for`). ``img_sizes`` sets, per workload family, the
    input size its baseline was measured to converge at (:meth:`img_size_for`)."""

    name: str
    family: str
    recipe: Recipe
    kwargs: Mapping[str, object] = field(default_factory=dict)
    sized: bool = False
    measured: bool = True
    recipes: Mapping[str, Recipe] = field(default_factory=dict)
    target: float = DEFAULT_TARGET
    recovery_epochs: Mapping[str, int] = field(default_factory=dict)
    recovery_lr: Mapping[str, float] = field(default_factory=dict)
    targets: Mapping[str, float] = field(default_factory=dict)
    img_sizes: Mapping[str, int] = field(default_factory=dict)

    def recipe_for(self, workload_family: str = "digits") -> Recipe:
        """The baseline recipe on ``workload_family``: its measured one, else the digits recipe."""
        return self.recipes.get(workload_family, self.recipe)

    def target_for(self, workload_family: str = "digits") -> float:
        """The MACs target of this model's structured cases on ``workload_family``."""
        return self.targets.get(workload_family, self.target)

    def recovery_epochs_for(self, workload_family: str = "digits") -> int | None:
        """The recovery fine-tune's epochs measured on ``workload_family``; ``None``: a third of the
        baseline's (:func:`pruners.recipes.recovery_recipe`)."""
        return self.recovery_epochs.get(workload_family)

    def img_size_for(self, workload_family: str) -> int:
        """The input size this model runs at on a dataset of ``workload_family`` unless the run names one
        (``img_size``): its measured one, else :data:`pruners.data.DEFAULT_IMG_SIZE`."""
        return self.img_sizes.get(workload_family, DEFAULT_IMG_SIZE)

    def recovery_lr_for(self, workload_family: str = "digits") -> float | None:
        """The recovery fine-tune's peak lr measured on ``workload_family``; ``None``: the baseline's."""
        return self.recovery_lr.get(workload_family)


def folder_recipe(recipe: Recipe, train_images: int, img_size: int) -> Recipe:
    """``recipe`` (a digits recipe) restated for an image folder of ``train_images`` at ``img_size`` px:
    the optimizer steps of :data:`FOLDER_STEPS` scaled by the resolution, as however many epochs of this
    folder they take, with as many warm-up steps as on the digits."""
    steps = max(FOLDER_STEPS, recipe.epochs * DIGITS_STEPS_PER_EPOCH) * max(
        1.0, img_size / FOLDER_STEPS_RESOLUTION
    )
    per_epoch = max(1, train_images // recipe.batch_size)
    epochs = max(1, round(steps / per_epoch))
    warmup = (
        max(1, round(recipe.warmup_epochs * DIGITS_STEPS_PER_EPOCH / per_epoch))
        if recipe.warmup_epochs
        else 0
    )
    return dataclasses.replace(recipe, epochs=epochs, warmup_epochs=min(warmup, epochs - 1))


# 8-px patches on 32-px images: 16 tokens keep attention cheap. Swin: 4-px patches (8x8 tokens) and 4x4
# windows, so its stages see 8, 4, 2 and 1 tokens a side.
_VIT = {"patch_size": 8}
_SWIN = {"patch_size": 4, "window_size": 4}

MODELS: tuple[ModelEntry, ...] = (
    # At 2x its criteria lead random by 2-3 recalibrated points on the digits, inside the seed spread;
    # at 3x by 16-24 (bench/CALIBRATION.md). On Fashion-MNIST a recovery at the baseline's peak lr (2e-3)
    # cost the dense control up to 0.95 points; at 5e-4 it keeps the control, and lamp needs a third
    # epoch there to come back within 2 points (docs/fashion-mnist.md).
    ModelEntry(
        "resnet18",
        "ResNet",
        CNN,
        recipes={"fashion_mnist": FASHION_CNN},
        target=3.0,
        recovery_epochs={"fashion_mnist": 3},
        recovery_lr={"fashion_mnist": 5e-4},
    ),
    ModelEntry("resnet18d", "ResNet-D", CNN),
    # On Fashion-MNIST at 32 px no recovery tried brought l1 at 2x within 2 points of a control that kept
    # its baseline's top-1, so its target there is 1.5x; at the baseline's peak lr the 8-epoch recovery
    # swung l1's drop from -1.5 to 4.2 points over three seeds, at 1e-3 it held (docs/fashion-mnist.md).
    # At 64 px the 8-epoch recovery left l1 2.60 points below seed 1's control, 16 epochs 1.50.
    ModelEntry(
        "mobilenetv3_small_100",
        "MobileNetV3",
        MOBILE,
        recipes={"fashion_mnist": FASHION_MOBILE},
        recovery_epochs={"fashion_mnist": 16},
        recovery_lr={"fashion_mnist": 1e-3},
        targets={"fashion_mnist": 1.5},
        img_sizes={"fashion_mnist": FASHION_MOBILE_SIZE},
    ),
    ModelEntry("efficientnet_b0", "EfficientNet", MOBILE),
    ModelEntry("regnetx_002", "RegNet", MOBILE),
    ModelEntry("convnext_atto", "ConvNeXt", TRANSFORMER),
    ModelEntry("repvgg_a0", "RepVGG", CNN),
    ModelEntry("densenet121", "DenseNet", CNN),
    ModelEntry("ghostnet_100", "GhostNet", MOBILE),
    ModelEntry(
        "vit_tiny_patch16_224",
        "ViT",
        TRANSFORMER,
        _VIT,
        sized=True,
        recipes={"fashion_mnist": FASHION_TRANSFORMER},
    ),
    ModelEntry("deit_tiny_patch16_224", "DeiT", TRANSFORMER, _VIT, sized=True),
    ModelEntry("swin_tiny_patch4_window7_224", "Swin", TRANSFORMER, _SWIN, sized=True),
    ModelEntry("mobilevit_xxs", "MobileViT", MOBILE),
)

_BY_NAME: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry, replace: bool = False) -> ModelEntry:
    """Add ``entry`` to the bench's models (what ``--models '*'``, :func:`list_models` and the tiers see).

    Its name must be a timm model (register the architecture with timm first). Registering a name twice is
    a ``ValueError`` unless ``replace``; an entry already registered as it is, is a no-op."""
    check_model_name(entry.name)
    known = _BY_NAME.get(entry.name)
    if known is not None and known != entry and not replace:
        raise ValueError(f"bench model {entry.name!r} is already registered")
    _BY_NAME[entry.name] = entry
    get_model.cache_clear()
    return entry


def _registered() -> dict[str, ModelEntry]:
    """The bench models: :data:`MODELS`, then those of every ``prunebench.models`` entry point."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for entry in MODELS:
            register_model(entry)
        from .entry_points import load_models

        load_models()
    return _BY_NAME


_LOADED = False


def check_model_name(model_name: str) -> str:
    """Return ``model_name`` if timm knows it, else raise ``ValueError`` with the closest names."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {model_name!r}{hint}")
    return model_name


class UnmeasuredModelWarning(UserWarning):
    """A timm model without a :data:`MODELS` entry: its baseline recipe is the default, never measured."""


def list_models(pattern: str = "*") -> list[str]:
    """Names in :data:`MODELS` matching the shell-style ``pattern``, in table order."""
    return [name for name in _registered() if fnmatch.fnmatchcase(name, pattern)]


@cache
def get_model(name: str) -> ModelEntry:
    """The :data:`MODELS` entry of ``name``; any other timm name gets :data:`DEFAULT_RECIPE` and a warning.

    Raises ``ValueError`` for a name timm does not know.
    """
    if name in _registered():
        return _BY_NAME[name]
    check_model_name(name)
    warnings.warn(
        f"{name} has no entry in pruners.models.MODELS: its baseline trains with the default recipe "
        f"{DEFAULT_RECIPE}, which was never measured on it",
        UnmeasuredModelWarning,
        stacklevel=2,
    )
    return ModelEntry(name, "", DEFAULT_RECIPE, measured=False)


def default_target(name: str, family: str = "digits") -> float:
    """The MACs target ``name``'s structured cases run at by default on a workload of ``family``
    (:meth:`ModelEntry.target_for`)."""
    entry = _registered().get(name)
    return entry.target_for(family) if entry is not None else DEFAULT_TARGET


def model_img_size(name: str | None, family: str) -> int:
    """The input size ``name`` runs at on a dataset of ``family`` unless the run names one
    (:meth:`ModelEntry.img_size_for`); :data:`pruners.data.DEFAULT_IMG_SIZE` for no model or one without
    an entry."""
    entry = _registered().get(name) if name is not None else None
    return entry.img_size_for(family) if entry is not None else DEFAULT_IMG_SIZE


def _is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[")


def select_models(patterns: Iterable[str]) -> list[str]:
    """Model names for ``--models``: wildcards match :data:`MODELS`, plain names may be any timm model.

    Raises ``ValueError`` naming a pattern that matches nothing or a name timm does not know.
    """
    names: list[str] = []
    for pattern in patterns:
        if _is_pattern(pattern):
            matched = list_models(pattern)
            if not matched:
                raise ValueError(
                    f"no bench model matches {pattern!r}; known: {', '.join(list_models())} "
                    "(or give any timm model by its full name)"
                )
        else:
            matched = [check_model_name(pattern)]
        names += [name for name in matched if name not in names]
    return names


def smallest_input(name: str) -> int:
    """The smallest input size ``name`` can take: its total stride (timm's ``feature_info`` reduction of
    the last stage, with the entry's kwargs), below which the last stage sees less than one pixel."""
    kwargs = dict(get_model(name).kwargs) if name in _registered() else {}
    model = timm.create_model(name, pretrained=False, **kwargs)
    info = getattr(model, "feature_info", None)
    if not info:
        return 1
    last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
    return int(last.get("reduction", 1))
