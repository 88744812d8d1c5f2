"""This directory is a PruneBench matrix: the installed plugin (pruners.pytest_plugin) supplies its options,
cases, gates and summary tables (`pytest bench/ --help`, section "prunebench")."""

prunebench = True
