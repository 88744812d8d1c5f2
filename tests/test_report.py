"""Understanding a result: the report, the profiler table and the prune / list / profile commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch

import pruners
from pruners.cli import main
from pruners.plots import front_methods, pareto_front
from pruners.profile import OpTime, compare_ops, profile_model, profile_pair
from pruners.report import decision_changes, latency_size_label, load_run, markdown_table, table_rows
from pruners.report_page import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _case(model: str, method: str, ratio: float, top1: float, latency: float, passed: bool = True) -> dict:
    return {
        "name": f"test_prune[{model}-{method}-{ratio:g}]",
        "stats": {"median": latency / 1e3},
        "extra_info": {
            "model": model,
            "method": method,
            "ratio": ratio,
            "dense_top1": 98.0,
            "pruned_top1_before_recovery": top1 - 20,
            "pruned_top1": top1,
            "macs_dense": 4_000_000,
            "macs_pruned": 2_000_000,
            "params_dense": 1_000_000,
            "params_pruned": 500_000,
            "latency_dense_ms": 10.0,
            "latency_pruned_ms": latency,
            "passed": passed,
        },
    }


def write_run(path: Path, cases: list[dict]) -> Path:
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": cases}))
    return path


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    return write_run(
        tmp_path / "run.json",
        [
            _case("resnet18", "l1", 0.3, 97.0, 6.0),
            _case("resnet18", "random", 0.3, 95.0, 6.5),
            _case("resnet18", "magnitude", 0.5, 97.5, 10.5),
            _case("vit_tiny", "vit_heads", 0.25, 90.0, 8.0, passed=False),
        ],
    )


def test_the_pareto_front_keeps_what_nothing_beats() -> None:
    points = [(6.0, 97.0), (6.5, 95.0), (10.5, 97.5), (10.0, 98.0), (5.0, 90.0)]
    assert pareto_front(points) == [(5.0, 90.0), (6.0, 97.0), (10.0, 98.0)]


def test_the_table_has_a_row_per_case_with_the_speedups(run_file: Path) -> None:
    table = markdown_table([load_run(run_file)])
    lines = table.splitlines()
    assert len(lines) == 2 + 4
    assert (
        "| resnet18 | l1 | 0.3 | 98.00 | - | not recorded | 77.00 | - | 97.00 | pass | 4.0M → 2.0M "
        "| 1.0M → 0.5M | 10.00 → 6.00 |" in table
    )
    assert "| 2.00 | 1.67 | 0.83 |" in lines[2], "MACs x, measured x, measured / MACs"
    assert "| vit_tiny | vit_heads | 0.25 |" in table and "FAIL" in table


def test_the_table_shows_measured_over_macs_per_runtime_timed(tmp_path: Path) -> None:
    timed = _case("resnet18", "l1", 0.3, 97.0, 6.0)
    timed["extra_info"].update(
        {"latency_onnxruntime_per_macs": 0.78, "latency_at_size_compile_per_macs": 0.89}
    )
    run = write_run(tmp_path / "run.json", [timed, _case("resnet18", "random", 0.3, 95.0, 6.5)])
    lines = markdown_table([load_run(run)]).splitlines()
    assert lines[0].endswith(
        "| measured / MACs | measured / MACs, onnxruntime | measured / MACs, compile at --latency-size |"
    )
    assert lines[2].endswith("| 0.83 | 0.78 | 0.89 |") and lines[3].endswith("| 0.77 | - | - |")


def _timed_at_224(case: dict, dense_ms: float, pruned_ms: float) -> dict:
    case["extra_info"].update(
        {
            "latency_img_size": 32,
            "latency_at_size_img_size": 224,
            "latency_at_size_dense_ms": dense_ms,
            "latency_at_size_pruned_ms": pruned_ms,
        }
    )
    return case


def test_the_deploy_size_figures_drive_speedups_deltas_and_plots(run_file: Path, tmp_path: Path) -> None:
    later = write_run(
        tmp_path / "later.json",
        [
            _timed_at_224(_case("resnet18", "l1", 0.3, 97.0, 6.0), 200.0, 80.0),
            _case("resnet18", "random", 0.3, 95.0, 6.5),
        ],
    )
    rows = load_run(later)
    header, cells = table_rows([rows])
    l1 = dict(zip(header, cells[0], strict=True))
    assert l1["latency dense → pruned (ms)"] == "200.00 → 80.00"
    assert l1["latency timed at"] == "224 px (--latency-size)"
    assert (l1["measured x"], l1["measured / MACs"]) == ("2.50", "1.25")
    assert l1["latency at the workload's size (ms)"] == "10.00 → 6.00"
    random = dict(zip(header, cells[1], strict=True))
    assert random["latency dense → pruned (ms)"] == "10.00 → 6.50"
    assert random["latency at the workload's size (ms)"] == "-"
    assert latency_size_label(rows[:1]) == ", at 224 px (--latency-size)"
    assert latency_size_label(rows) == ", at several sizes"
    header, cells = table_rows([load_run(run_file), rows])
    l1 = dict(zip(header, cells[0], strict=True))
    assert l1["Δ pruned latency"] == "not comparable (- then 224 px (--latency-size))"


def test_several_runs_show_the_change_and_mark_regressions(run_file: Path, tmp_path: Path) -> None:
    later = write_run(
        tmp_path / "later.json",
        [_case("resnet18", "l1", 0.3, 95.0, 7.0), _case("resnet18", "random", 0.3, 95.5, 6.6)],
    )
    table = markdown_table([load_run(run_file), load_run(later)])
    assert "Δ recovered top-1" in table.splitlines()[0]
    l1 = next(line for line in table.splitlines() if "| l1 |" in line)
    assert l1.endswith("| -2.00 ⚠ | +16.7 % ⚠ |")
    random = next(line for line in table.splitlines() if "| random |" in line)
    assert random.endswith("| +0.50 | +1.5 % |")


def test_the_report_writes_table_plots_and_one_html_page(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = write_report([run_file], out)
    assert {p.name for p in written} == {
        "report.md",
        "pareto_resnet18.png",
        "pareto_vit_tiny.png",
        "report.html",
    }
    png = (out / "pareto_resnet18.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    page = (out / "report.html").read_text()
    assert "<table>" in page and "<td>resnet18</td>" in page and page.count("data:image/png;base64,") == 2
    assert "`resnet18`: on the front, fastest first: l1 @ 0.3" in (out / "report.md").read_text()


def test_the_front_names_the_methods_on_it(run_file: Path) -> None:
    rows = [row for row in load_run(run_file) if row.model == "resnet18"]
    assert front_methods(rows) == ["l1 @ 0.3", "magnitude @ 0.5"]


def test_a_file_that_is_not_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--out-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not a pytest-benchmark JSON file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_profiler_table_compares_ops_and_explains_the_gap(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10).eval()
    inputs = torch.randn(4, 3, 32, 32)
    pruned, record = pruners.prune(model, "l1", 0.5, inputs)
    profiled = profile_pair(model, pruned, inputs, tmp_path, record.macs_speedup, "test_resnet l1")
    text = profiled.markdown.read_text()
    assert f"profiled time {profiled.dense_ms / profiled.pruned_ms:.2f}x less" in text
    assert "`aten::mkldnn_convolution`" in text or "`aten::convolution`" in text
    assert "**total**" in text and f"MACs {record.macs_speedup:.2f}x fewer" in text
    for trace in ("dense.trace.json", "pruned.trace.json"):
        assert json.loads((tmp_path / trace).read_text())["traceEvents"]
    ops = profile_model(model, inputs)
    assert all(op.self_ms > 0 and op.calls >= 1 for op in ops.values())
    assert "## By layer kind" in text and "| conv |" in text and "| norm |" in text


def test_layer_kinds_name_depthwise_convs_and_squeeze_excite_blocks_and_count_their_macs() -> None:
    from pruners.measure import count_macs_params
    from pruners.profile import compare_kinds, layer_kind, profile_kinds

    depthwise, pointwise = torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 16, 1)
    assert (layer_kind(depthwise), layer_kind(pointwise)) == ("depthwise conv", "pointwise conv")
    assert layer_kind(torch.nn.Hardswish()) == "activation" and layer_kind(torch.nn.Sequential()) is None
    model = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    inputs = torch.randn(2, 3, 32, 32)
    kinds = profile_kinds(model, inputs, rounds=2)
    assert {"depthwise conv", "pointwise conv", "squeeze-excite", "norm", "other"} <= set(kinds)
    macs = sum(k.macs for k in kinds.values())
    assert 0.95 < macs / count_macs_params(model, inputs[:1])[0] < 1.05, "the convs and linears are the MACs"
    assert all(k.ms >= 0 for k in kinds.values())
    table = compare_kinds(kinds, kinds, macs_speedup=2.0)
    assert "| depthwise conv |" in table and "| 1.00 |" in table


def test_the_excess_over_the_macs_speedup_sums_to_the_gap() -> None:
    dense = {"conv": OpTime("conv", 2, 8.0), "norm": OpTime("norm", 2, 2.0)}
    pruned = {"conv": OpTime("conv", 2, 4.0), "norm": OpTime("norm", 2, 2.0)}
    table = compare_ops(dense, pruned, macs_speedup=2.0)
    assert "| `conv` | 2 | 8.000 | 4.000 | 2.00 | +0.000 | 0 % |" in table
    assert "| `norm` | 2 | 2.000 | 2.000 | 1.00 | +1.000 | 100 % |" in table
    assert "| **total** |  | 10.000 | 6.000 | 1.67 | +1.000 | 100 % |" in table


@pytest.mark.slow
@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_prune_command_end_to_end_saves_a_loadable_model(model: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.pt"
    argv = ["prune", "--model", model, "--method", "l1", "--ratio", "0.3", "--latency-rounds", "2"]
    assert main([*argv, "--batch-size", "4", "--out", str(out), "--runtime", "eager"]) == 0
    text = capsys.readouterr().out
    assert "top-1     dense" in text and "MACs" in text and "latency" in text and str(out) in text
    assert re.search(
        r"^eager       \d+\.\d\d ms -> \d+\.\d\d ms \(\d+\.\d\dx, \d+\.\d\d of the MACs", text, re.M
    )
    model = torch.load(out, weights_only=False)
    assert model(pruners.digits().test_batch(2)).shape == (2, 10)


def test_list_shows_methods_and_models(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "| `l1` | structured | channels | - | - | 0.3 | 2 | Channels with the smallest group L1" in text
    assert "| `swin_tiny_patch4_window7_224` | Swin |" in text
    fashion = "fashion_mnist: 6 epochs, lr 0.002, recovery 3 epochs at lr 0.0005"
    assert f"| `resnet18` | ResNet | - | 6 epochs, lr 0.002 | {fashion} | 3x |" in text
    assert "| default | `mobilenetv3_small_100` | `l1` | 1 |" in text and "| `--batch-size` |" in text
    assert main(["list", "methods", "--pattern", "l?"]) == 0
    assert capsys.readouterr().out.count("| structured |") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "--model", "no_such_model", "--method", "l1"], "unknown timm model 'no_such_model'"),
        (["prune", "--model", "test_resnet", "--method", "nope"], "unknown pruning method 'nope'"),
        (["prune", "--model", "test_resnet", "--method", "l1", "--ratio", "1.5"], "ratio must be in (0, 1)"),
        (
            ["prune", "--model", "test_resnet", "--method", "l1", "--speedup", "0.5"],
            "MACs target must be > 1",
        ),
        (
            ["prune", "--model", "test_resnet", "--method", "l1", "--ratio", "0.3", "--speedup", "2"],
            "pass one",
        ),
        (["prune", "--model", "test_resnet", "--method", "magnitude", "--speedup", "2"], "mask method"),
        (
            ["prune", "--model", "test_resnet", "--method", "l1", "--dataset", "torch/svhn"],
            "unknown --dataset",
        ),
        (["profile", "--model", "test_resnet", "--method", "l1", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _fingerprinted(case: dict, baseline: str, decision: str) -> dict:
    case["extra_info"].update(baseline_fingerprint=baseline, decision_fingerprint=decision)
    return case


def test_the_report_names_the_cases_that_decide_differently_on_the_same_baseline(tmp_path: Path) -> None:
    first = write_run(
        tmp_path / "first.json",
        [
            _fingerprinted(_case("resnet18", "l1", 0.3, 97.0, 6.0), "b1", "d1"),
            _fingerprinted(_case("resnet18", "l2", 0.3, 97.0, 6.0), "b1", "d2"),
            _fingerprinted(_case("resnet18", "fpgm", 0.3, 97.0, 6.0), "b1", "d3"),
        ],
    )
    last = write_run(
        tmp_path / "last.json",
        [
            _fingerprinted(_case("resnet18", "l1", 0.3, 96.0, 6.0), "b1", "dX"),
            _fingerprinted(_case("resnet18", "l2", 0.3, 97.0, 6.0), "b1", "d2"),
            _fingerprinted(_case("resnet18", "fpgm", 0.3, 97.0, 6.0), "b2", "dY"),
        ],
    )
    lines = decision_changes(load_run(first), load_run(last))
    assert lines == [
        "- `resnet18` / `l1` / 0.3: same baseline, different decision (d1 -> dX; recovered top-1 97.00 "
        "-> 96.00)",
        "- 1 case(s) not compared: their baseline weights changed",
    ]
    write_report([first, last], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Decisions, first run to last" in text and "same baseline, different decision" in text
