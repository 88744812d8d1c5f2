"""The bench matrix as pytest runs it: the options' checks, the cases (:func:`pruners.matrix.select_cases`)
parametrising :func:`pruners.bench.test_prune`, its fixtures, the progress lines and the summary tables.
Registered by :mod:`pruners.pytest_plugin` when a run asks for the matrix."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

import pytest
import torch

from .convergence import convergence_lines
from .datasets import dataset_family
from .entry_points import EntryPointError
from .equal_cost import equal_cost_tables
from .files import check_writable
from .gates import ScratchControl, recovery_table
from .history import first_run_without_baseline
from .matrix import Case, choose_tier, left_out, parse_seeds, parse_shard, parse_speedups, select_cases
from .options import as_flags, check, split_csv
from .progress import show_progress
from .record import CaseRecord
from .report import ReportRow, row_from_record
from .settings import BenchSettings, bench_settings
from .zoo import WeightsUnavailableError


def pytest_configure(config: pytest.Config) -> None:
    option = config.option
    models, methods = split_csv(option.models), split_csv(option.methods)
    try:
        check(vars(option))
        family = dataset_family(option.dataset) if option.dataset else "digits"
        tier = choose_tier(option.quick, option.full, bool(models or methods), family)
        matrix, config.prunebench_cases = select_cases(
            models,
            methods,
            split_csv(config.option.ratios),
            tier=tier,
            shard_spec=config.option.shard,
            speedups=parse_speedups(config.option.speedups),
            family=family,
            latencies=parse_speedups(config.option.latency_speedups, "latency_speedups"),
        )
        config.prunebench_left_out = left_out(
            models,
            methods,
            tier,
            split_csv(config.option.ratios),
            parse_speedups(config.option.speedups),
            family,
            parse_speedups(config.option.latency_speedups, "latency_speedups"),
        )
        config.prunebench_matrix_size = len(matrix)
        config.prunebench_seeds = parse_seeds(config.option.seeds)
        config.prunebench_settings = bench_settings(
            [case.model for case in config.prunebench_cases], vars(option)
        )
        if option.profile_dir:
            check_writable(option.profile_dir, "`profile_dir`", folder=True)
    except (ValueError, WeightsUnavailableError, EntryPointError) as err:
        raise pytest.UsageError(as_flags(str(err))) from None
    config.prunebench_progress = TerminalStream(config)
    show_progress(config.prunebench_progress, progress_mode(config))
    config.prunebench_reports = CaseReports()
    config.pluginmanager.register(config.prunebench_reports, "prunebench-reports")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    torch.set_num_threads(config.option.threads or (1 if worker else os.cpu_count() or 1))


def pytest_unconfigure(config: pytest.Config) -> None:
    show_progress()


def pytest_report_header(config: pytest.Config) -> str:
    index, count = parse_shard(config.option.shard)
    part = f", shard {index}/{count} of {config.prunebench_matrix_size}" if count > 1 else ""
    skipped = (
        f", {len(config.prunebench_left_out)} pairs not applicable" if config.prunebench_left_out else ""
    )
    return f"prunebench: {len(config.prunebench_cases)} cases{part}{skipped}, seeds {config.prunebench_seeds}"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.prunebench_first_run = first_run_without_baseline(session.config)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [
        f"prunebench: left out {model}-{method} (not applicable: {reason})"
        for model, method, reason in config.prunebench_left_out
    ]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if config.prunebench_first_run:
        terminalreporter.write_line(config.prunebench_first_run, yellow=True)
    reports = config.prunebench_reports
    for line in convergence_lines(reports.cases):
        terminalreporter.write_line(line, yellow=True)
    if reports.scratch:
        terminalreporter.write_sep("=", "prunebench: the scratch control (pruned architecture, random init)")
        for line in reports.scratch:
            terminalreporter.write_line(line)
    gates = recovery_table(reports.cases)
    if gates:
        terminalreporter.write_sep("=", "prunebench: the recovery gate per case")
        terminalreporter.write_line(gates)
    tables = equal_cost_tables(reports.rows)
    if tables:
        terminalreporter.write_sep("=", "prunebench: methods at equal cost")
        terminalreporter.write_line(tables)
        if any(row.latency_dense_ms is None for row in reports.rows):
            terminalreporter.write_line(UNTIMED_NOTE)


def progress_mode(config: pytest.Config) -> str:
    """Live bars on a terminal, a line per epoch in CI logs and other files, nothing under ``-q -q`` or in an
    xdist worker (whose output the controller does not show)."""
    if config.option.verbose <= -2 or hasattr(config, "workerinput"):
        return "off"
    return "bar" if os.isatty(2) and not os.environ.get("CI") else "epochs"


class TerminalStream:
    """A file for progress output that writes past pytest's capture, onto the real stderr."""

    def __init__(self, config: pytest.Config) -> None:
        self.capture = config.pluginmanager.getplugin("capturemanager")

    def write(self, text: str) -> int:
        with self.capture.global_and_fixture_disabled():
            return sys.stderr.write(text)

    def flush(self) -> None:
        with self.capture.global_and_fixture_disabled():
            sys.stderr.flush()


# The attribute of a case's item, then of its call report, that carries the case's record to the summary.
CASE_RECORD = "prunebench_record"
UNTIMED_NOTE = (
    "latency: not measured in this run (pytest-benchmark is disabled: under xdist `-n` or with "
    "`--benchmark-disable`); run serially for the latency column"
)


class CaseReports:
    """What the terminal summary tells of each case, read from the record its call report carries, so that
    xdist workers' cases count too (a report and the attributes set on it travel from the worker to the
    controller): the dense baseline and control figures, the case's recovery gate, the scratch-control line
    and the case's row of the equal-cost tables, untimed where pytest-benchmark was disabled."""

    def __init__(self) -> None:
        self.cases: list[CaseRecord] = []
        self.scratch: list[str] = []
        self.rows: list[ReportRow] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = getattr(report, CASE_RECORD, None)
        if report.when != "call" or info is None:
            return
        record = CaseRecord.from_extra_info(info)
        self.cases.append(record)
        scratch = ScratchControl().line(record)
        if scratch:
            self.scratch.append(f"{record.case_id}: {scratch.removeprefix('scratch').strip()}")
        self.rows.append(row_from_record(record, report.nodeid, timed=False))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if call.when == "call" and hasattr(item, CASE_RECORD):
        setattr(report, CASE_RECORD, getattr(item, CASE_RECORD))
    return report


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case. On an xdist worker each model's first case leads, so under ``--dist loadgroup``
    (one case at a time per worker) the first workers train different baselines at once, and the other
    cases go to whichever worker is free (``docs/running.md``, "Running in parallel")."""
    if "case" in metafunc.fixturenames:
        cases = metafunc.config.prunebench_cases
        if os.environ.get("PYTEST_XDIST_WORKER"):
            cases = models_first(cases)
        metafunc.parametrize("case", [pytest.param(c, id=c.id) for c in cases])


def models_first(cases: list[Case]) -> list[Case]:
    """``cases`` with each model's first case moved to the front, in order; the rest as they were."""
    leads: dict[str, Case] = {}
    for case in cases:
        leads.setdefault(case.model, case)
    return [*leads.values(), *(case for case in cases if case not in leads.values())]


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> BenchSettings:
    return request.config.prunebench_settings


@pytest.fixture
def opts(request: pytest.FixtureRequest) -> pytest.Config:
    return request.config.option


@pytest.fixture
def seeds(request: pytest.FixtureRequest) -> list[int]:
    return request.config.prunebench_seeds


@pytest.fixture
def publish_record(request: pytest.FixtureRequest) -> Callable[[Mapping[str, object]], None]:
    """Hands a case's record (its ``extra_info``) to the run's summary: it rides on the case's report."""

    def publish(info: Mapping[str, object]) -> None:
        setattr(request.node, CASE_RECORD, dict(info))

    return publish
