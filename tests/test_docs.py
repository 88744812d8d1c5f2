"""The docs say what the code holds, and the package keeps the shape the README promises."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from pruners import docs, register_method, registry
from pruners.record import CaseRecord

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 350
MAX_PARAMETERS = 9


@pytest.mark.parametrize("page", docs.PAGES)
def test_the_generated_tables_of_each_page_are_what_the_code_says(page: str) -> None:
    text = (ROOT / page).read_text()
    assert "<!-- generated:" in text
    assert docs.render(text) == text, f"{page} disagrees with the code: run `python -m pruners.docs`"


def test_a_method_registered_without_the_docs_rendered_again_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @register_method("l9", kind="structured", tolerance=1.0, default_ratio=0.3)
    def l9_channels(model, ratio, example_inputs, data) -> None:
        """A stand-in."""

    text = (ROOT / "README.md").read_text()
    assert docs.render(text) != text and "`l9`" in docs.render(text)


def test_an_unknown_generated_block_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        docs.render("<!-- generated: nope -->\n<!-- end: nope -->")


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("module", sorted((ROOT / "pruners").glob("*.py")), ids=lambda p: p.name)
def test_no_module_is_long_and_no_public_function_takes_many_parameters(module: Path) -> None:
    text = module.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            args = node.args
            count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
            count -= bool(args.args and args.args[0].arg in ("self", "cls"))
            assert count <= MAX_PARAMETERS, f"{module.name}: {node.name} takes {count} parameters"


def test_every_field_the_running_page_explains_is_a_field_of_the_record() -> None:
    text = (ROOT / "docs" / "running.md").read_text()
    table = text[text.index("| field | meaning |") :].split("\n\n")[0].splitlines()[2:]
    named = {name for row in table for name in re.findall(r"`([a-z0-9_*]+)`", row.split("|")[1])}
    fields = {f.name for f in dataclasses.fields(CaseRecord)}
    unknown = {n for n in named if n not in fields and not n.startswith("latency_")}
    assert named and not unknown, f"docs/running.md explains fields the record does not have: {unknown}"
