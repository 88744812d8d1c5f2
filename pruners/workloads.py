"""The workload registry, in the shape of timm's ``create_dataset``: a name says where the labelled images
come from, and :func:`create_workload` builds the :class:`pruners.Workload`.

>>> create_workload("digits")                              # the embedded default
>>> create_workload("torch/fashion_mnist")                 # a dataset named the timm way
>>> create_workload("folder:/data/imagenet", "resnet18")   # your ImageFolder, at the model's data config

Each source is one file that registers one function with :func:`register_workload`, naming the recipe
family its workloads train with (:attr:`pruners.Workload.family`, the key of
:attr:`pruners.ModelEntry.recipes`); a new source is that file and its import in :func:`workload_sources`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data import Workload

Create = Callable[[str, "str | None", Mapping[str, object]], "Workload"]


@dataclass(frozen=True)
class WorkloadSource:
    """A registered source: names matching ``pattern`` (``torch/*``), the recipe ``family`` of its
    workloads (``None``: one per name, such as ``fashion_mnist``), and ``create(name, model, options)``."""

    pattern: str
    family: str | None
    create: Create
    doc: str


_SOURCES: dict[str, WorkloadSource] = {}


def register_workload(pattern: str, family: str | None = None) -> Callable[[Create], Create]:
    """Decorator that registers ``create(name, model_name, options)`` for the names matching ``pattern``."""

    def decorator(create: Create) -> Create:
        known = _SOURCES.get(pattern)
        if known is not None and _origin(known.create) != _origin(create):
            raise ValueError(f"workload source {pattern!r} is already registered")
        _SOURCES[pattern] = WorkloadSource(pattern, family, create, (create.__doc__ or "").strip())
        return create

    return decorator


def _origin(create: Create) -> tuple[str, str]:
    """Where ``create`` is defined: the same function imported again (a reloaded module, or pytest's
    in-process runs, which drop the modules a run imported) registers again instead of clashing."""
    return create.__module__, create.__qualname__


def workload_sources() -> dict[str, WorkloadSource]:
    """Every registered source, by pattern (importing the built-in ones first)."""
    from . import data, datasets, folder  # noqa: F401  (each registers its source)

    return _SOURCES


def list_workloads(pattern: str = "*") -> list[str]:
    """The registered source patterns matching ``pattern``: ``digits``, ``folder:*``, ``torch/*``."""
    return sorted(p for p in workload_sources() if fnmatch.fnmatchcase(p, pattern))


def create_workload(name: str, model_name: str | None = None, **options: object) -> Workload:
    """The workload ``name`` names, built for ``model_name`` where the source reads images at the model's
    own data config (``folder:PATH``); ``options`` are the source's (``img_size``, ``train_images``,
    ``test_images``, ``root``, ``download``, ``hflip``, ``crop_scale``, ``skip_unreadable``)."""
    for pattern, source in workload_sources().items():
        if fnmatch.fnmatchcase(name, pattern):
            workload = source.create(name, model_name, options)
            if source.family is not None and workload.family != source.family:
                raise ValueError(f"workload source {pattern!r} built a {workload.family!r} workload")
            return workload
    raise ValueError(f"unknown workload {name!r}; the sources are {', '.join(list_workloads())}")
