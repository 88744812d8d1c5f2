"""The bench's one test, parametrised by the plugin over the model x method x cost cases."""

from pruners.bench import test_prune  # noqa: F401
