"""Docs generated from the code: the tables of the README and of ``docs/reference.md`` that restate what
the registries, the tiers, the option table and the record hold. ``python -m pruners.docs`` rewrites them
between their markers; ``tests/test_docs.py`` fails when a committed page and the code disagree.

A generated block is ``<!-- generated: NAME -->`` ... ``<!-- end: NAME -->``, NAME one of :data:`BLOCKS`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .matrix import TIERS, select_methods
from .models import get_model, list_models
from .options import OPTIONS
from .record import CaseRecord
from .registry import get_method, list_methods
from .tables import markdown_table
from .train import Recipe
from .workloads import workload_sources


def methods_table(pattern: str = "*") -> str:
    """The registered methods matching ``pattern``: kind, unit, needs, requires, default ratio, tolerance,
    and the idea and paper from the method's docstring."""
    rows = []
    for name in list_methods(pattern):
        spec = get_method(name)
        only = " only" if spec.ratios == (spec.default_ratio,) else ""
        rows.append(
            (
                f"`{name}`",
                spec.kind,
                spec.unit,
                ", ".join(spec.needs) or "-",
                ", ".join(spec.requires) or "-",
                f"{spec.default_ratio:g}{only}",
                f"{spec.tolerance:g}",
                " ".join((spec.fn.__doc__ or "").split()).replace("|", "\\|"),
            )
        )
    header = ("method", "kind", "unit", "needs", "requires", "default ratio", "tolerance (points)", "idea")
    return markdown_table(header, rows)


def recipe_text(recipe: Recipe) -> str:
    """A baseline recipe in a models table: its budget, and its memory format where it is not the default."""
    return f"{recipe.epochs} epochs, lr {recipe.lr:g}" + (", channels-last" if recipe.channels_last else "")


def models_table(pattern: str = "*") -> str:
    """The bench models matching ``pattern``: family, timm kwargs at 32 px, baseline recipes (and input
    sizes and recovery budgets measured per workload) and default MACs target."""
    rows = []
    for entry in map(get_model, list_models(pattern)):
        others = (
            "; ".join(
                f"{w}: "
                + (f"{entry.img_sizes[w]} px, " if w in entry.img_sizes else "")
                + recipe_text(r)
                + (f", recovery {entry.recovery_epochs[w]} epochs" if w in entry.recovery_epochs else "")
                + (f" at lr {entry.recovery_lr[w]:g}" if w in entry.recovery_lr else "")
                + (f", target {entry.targets[w]:g}x" if w in entry.targets else "")
                for w, r in entry.recipes.items()
            )
            or "-"
        )
        kwargs = ", ".join(f"{k}={v}" for k, v in entry.kwargs.items()) or "-"
        rows.append(
            (f"`{entry.name}`", entry.family, kwargs, recipe_text(entry.recipe), others, f"{entry.target:g}x")
        )
    header = ("model", "family", "timm kwargs at 32 px", "digits recipe", "other workloads", "MACs target")
    return markdown_table(header, rows)


def tiers_table() -> str:
    """What ``--quick``, the default tier and ``--full`` run: the methods per model."""
    rows = []
    for tier, models in TIERS.items():
        for model, patterns in models.items():
            methods = select_methods(patterns)
            shown = "every method" if patterns == ("*",) else ", ".join(f"`{m}`" for m in methods)
            rows.append((tier, f"`{model}`", shown, len(methods)))
    return markdown_table(("tier", "model", "methods", "count"), rows)


def options_table() -> str:
    """Every option of the bench and the case commands, with its one default and who takes it."""
    rows = []
    for option in OPTIONS:
        default = "" if option.type is bool or option.default is None else f"`{option.default}`"
        flags = ", ".join(f"`{flag}`" for flag in option.flags)
        fronts = ", ".join(sorted(option.fronts))
        rows.append((flags, option.section, fronts, default, option.help.replace("|", "\\|")))
    return markdown_table(("option", "section", "taken by", "default", "meaning"), rows)


def record_table() -> str:
    """The fields of :class:`pruners.CaseRecord`, as ``extra_info`` holds them."""
    rows = []
    for f in dataclasses.fields(CaseRecord):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        rows.append((f"`{f.name}`", f"`{f.type}`", "yes" if required else ""))
    return markdown_table(("field", "type", "in every schema"), rows)


def workloads_table() -> str:
    """The registered workload sources."""
    rows = [
        (f"`{source.pattern}`", source.family or "per dataset", " ".join(source.doc.split()))
        for source in workload_sources().values()
    ]
    return markdown_table(("name", "recipe family", "what it is"), rows)


BLOCKS: dict[str, Callable[[], str]] = {
    "methods": methods_table,
    "models": models_table,
    "tiers": tiers_table,
    "options": options_table,
    "record": record_table,
    "workloads": workloads_table,
}

PAGES = ("README.md", "docs/reference.md", "docs/methods.md", "docs/models.md", "docs/running.md")
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block rewritten from the code."""

    def fill(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name]()}\n{match.group(4)}"

    return _BLOCK.sub(fill, text)


def main(root: Path = Path()) -> int:
    """Rewrite the generated blocks of :data:`PAGES` under ``root``."""
    for page in PAGES:
        path = root / page
        path.write_text(render(path.read_text()))
        print(f"rendered {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
