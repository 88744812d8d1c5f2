"""The docs say what the code holds, and the package keeps the shape the README promises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pruners import docs, register_method, registry

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
