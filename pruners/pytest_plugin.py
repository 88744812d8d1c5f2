"""PruneBench's pytest plugin, registered by ``pip install prunebench`` (a ``pytest11`` entry point).

It adds the bench's options to every pytest run (from :data:`pruners.options.OPTIONS`, without importing
torch) and does nothing else until a run asks for the matrix: with ``--prunebench``, or from a directory
whose ``conftest.py`` says ``prunebench = True``. Then :mod:`pruners.bench` picks the cases, parametrises
``test_prune`` and writes the summary tables. A project's bench is two lines::

    # conftest.py
    prunebench = True

    # test_pruning.py
    from pruners.bench import test_prune  # noqa: F401

or, with no files at all, ``pytest --prunebench --pyargs pruners.bench``.
"""

from __future__ import annotations

import pytest

from .options import add_pytest_options


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("prunebench cases").addoption(
        "--prunebench",
        action="store_true",
        help="run PruneBench's matrix in this session (a conftest.py with `prunebench = True` does too)",
    )
    add_pytest_options(parser)


def wanted(config: pytest.Config) -> bool:
    """Whether this run asked for the matrix: ``--prunebench``, or a loaded conftest that says so."""
    if config.getoption("prunebench"):
        return True
    return any(getattr(plugin, "prunebench", None) is True for plugin in config.pluginmanager.get_plugins())


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if wanted(config) and not config.pluginmanager.has_plugin("prunebench-matrix"):
        from . import matrix_plugin

        config.pluginmanager.register(matrix_plugin, "prunebench-matrix")
