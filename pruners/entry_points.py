"""Methods and models from other installed packages, on the same footing as the built-in ones.

A distribution declares them in its ``pyproject.toml``::

    [project.entry-points."prunebench.methods"]
    my_criterion = "my_package.pruning"      # a module whose @register_method functions register on import

    [project.entry-points."prunebench.models"]
    my_net = "my_package.models:MY_NET"      # a ModelEntry (or a module that calls register_model)

They load the first time the registry is read (:func:`pruners.list_methods`, :func:`pruners.list_models`),
so the bench matrix, the tiers, the gates, the golden decisions and asv see them without an edit here. An
entry point that fails to load stops the run with its name and the error: a method that silently went
missing would leave a hole in the matrix nobody sees.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

METHODS_GROUP = "prunebench.methods"
MODELS_GROUP = "prunebench.models"


class EntryPointError(ImportError):
    """An installed package's ``prunebench.*`` entry point could not be loaded."""


def _load(group: str) -> list[tuple[EntryPoint, object]]:
    loaded = []
    for point in entry_points(group=group):
        try:
            loaded.append((point, point.load()))
        except Exception as err:
            dist = point.dist.name if point.dist is not None else "an installed package"
            raise EntryPointError(
                f"the {group} entry point {point.name!r} = {point.value!r} of {dist} failed to load: "
                f"{type(err).__name__}: {err}"
            ) from err
    return loaded


def load_methods() -> list[str]:
    """Import every ``prunebench.methods`` entry point (their decorators register the methods); the names
    of the entry points loaded."""
    return [point.name for point, _ in _load(METHODS_GROUP)]


def load_models() -> list[str]:
    """Import every ``prunebench.models`` entry point and register the :class:`pruners.ModelEntry` objects
    they name (a module registers its own); the names of the entry points loaded."""
    from .models import ModelEntry, register_model

    for point, value in _load(MODELS_GROUP):
        entries = value if isinstance(value, (list, tuple)) else [value]
        for entry in entries:
            if isinstance(entry, ModelEntry):
                register_model(entry, replace=False)
            elif not hasattr(entry, "__file__"):
                raise EntryPointError(
                    f"the {MODELS_GROUP} entry point {point.name!r} names {type(entry).__name__}, "
                    "not a ModelEntry, a list of them or a module"
                )
    return [point.name for point in entry_points(group=MODELS_GROUP)]
