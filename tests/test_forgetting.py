"""What pruning forgets: per-class paired drops flagged with a correction for the number of classes, and the
images a pruned model loses in every seed, shown in the report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch

import pruners
from pruners import forgetting
from pruners.gate import encode_correct
from pruners.report_page import write_report


def _seeds(labels: torch.Tensor, missed_class: int, seeds: int = 2) -> list[dict[str, torch.Tensor]]:
    """A stand-in control that gets every image right and a recovered model that always misses
    ``missed_class`` and, in one seed only, two images of another class."""
    out = []
    for s in range(seeds):
        recovered = labels != missed_class
        if s == 0:
            recovered[(labels == (missed_class + 1) % 10).nonzero().flatten()[:2]] = False
        out.append({"control": torch.ones_like(recovered), "recovered": recovered})
    return out


def test_a_class_the_pruned_model_always_misses_is_flagged_and_a_stray_image_is_not() -> None:
    labels = torch.arange(1000) % 10
    counts = forgetting.per_class_counts(labels, _seeds(labels, 7))
    drops = forgetting.class_drops({"classes": [str(i) for i in range(10)], "counts": counts})
    assert [d.name for d in drops if d.flagged] == ["7"]
    seven, eight = drops[7], drops[8]
    assert seven.control_top1 == 100.0 and seven.recovered_top1 == 0.0 and seven.images == 100
    assert eight.verdict.mean_drop == 1.0 and not eight.flagged


def test_only_images_lost_in_every_seed_count_as_forgotten() -> None:
    labels = torch.arange(1000) % 10
    lost = forgetting.forgotten_indices(_seeds(labels, 7))
    assert lost == (labels == 7).nonzero().flatten().tolist()


def test_the_forgotten_images_of_a_real_workload_carry_their_labels_and_thumbnails() -> None:
    workload = pruners.digits()
    labels = forgetting.test_labels(workload)
    assert len(labels) == len(workload.test) and forgetting.class_names(workload)[3] == "3"
    figures = forgetting.forgetting_figures(workload, _seeds(labels, 4))
    shown = figures["forgotten"]["images"]
    assert figures["forgotten"]["count"] == int((labels == 4).sum())
    assert len(shown) == min(forgetting.FORGOTTEN_CAP, figures["forgotten"]["count"])
    assert {i["label"] for i in shown} == {"4"}
    assert base64.b64decode(shown[0]["png"]).startswith(b"\x89PNG")


def test_the_report_shows_the_flagged_class_and_the_thumbnail_grid(tmp_path: Path) -> None:
    workload = pruners.digits()
    labels = forgetting.test_labels(workload)
    seeds = _seeds(labels, 4, seeds=1)
    n = len(labels)
    info = {
        "model": "resnet18", "method": "l1", "ratio": 0.3, "dense_top1": 99.0, "one_shot_top1": 10.0,
        "recovered_top1": 90.0, "macs_dense": 4, "macs_pruned": 2, "params_dense": 2, "params_pruned": 1,
        "latency_dense_ms": 2.0, "latency_pruned_ms": 1.0, "passed": True, "schema": 2,
        "per_seed": [{"seed": 0, "correct": {k: encode_correct(v) for k, v in seeds[0].items()}}],
        **forgetting.forgetting_figures(workload, seeds),
    }  # fmt: skip
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"machine_info": {}, "benchmarks": [{"name": "c", "extra_info": info}]}))
    write_report([run], tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>What pruning forgets</h2>" in page and "<tr class=flag><td>4</td>" in page
    assert page.count("<figcaption>") == forgetting.FORGOTTEN_CAP and "<figcaption>4 #" in page
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "1 of 10 classes lose significantly: `4` 100.0 → 0.0" in markdown
    assert n > 0
