"""What pruning forgets: per class, the recovered model's top-1 against the dense control's with a paired
test over the class's images and the seeds, and the held-out images the control gets right and the pruned
model gets wrong in every seed.

Hooker et al., 2019, "What Do Compressed Deep Neural Networks Forget?": the top-1 average hides that
pruning costs some classes and some images far more than others. A class is flagged when its paired drop
is significant at 99 % one-sided, Bonferroni-corrected for the number of classes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from matplotlib.image import imsave

from .data import TensorImageDataset, Workload
from .gate import PairedDrop, Verdict, judge

# At most this many forgotten images keep a thumbnail in the record.
FORGOTTEN_CAP = 24
# The family-wise confidence of a flagged class (one-sided, over all classes).
CLASS_CONFIDENCE = 0.99


@cache
def test_labels(workload: Workload) -> torch.Tensor:
    """The labels of ``workload``'s held-out images, in the order every correctness vector uses (read from
    a tensor dataset directly, else through the test loader once per workload: an image folder is not
    decoded again for every case)."""
    held = workload.test
    if isinstance(held, TensorImageDataset):
        return torch.as_tensor(held.labels).long()
    return torch.cat([labels for _, labels in workload.loader("test", batch_size=512)])


def class_names(workload: Workload) -> list[str]:
    """The workload's class names, else the class indices as text."""
    return list(workload.classes) if workload.classes else [str(i) for i in range(workload.num_classes)]


def per_class_counts(
    labels: torch.Tensor, seeds: Sequence[Mapping[str, torch.Tensor]], classes: int | None = None
) -> list[list[list[int]]]:
    """Per seed and class ``[images, control right, recovered right, control only, recovered only]``: the
    paired counts a per-class test needs, compact enough for ``extra_info``; ``classes`` (default: the
    largest label + 1) sets how many."""
    out = []
    for correct in seeds:
        control, recovered = correct["control"], correct["recovered"]
        rows = []
        for c in range(classes or int(labels.max()) + 1):
            mine = labels == c
            a, b = control[mine], recovered[mine]
            rows.append(
                [int(mine.sum()), int(a.sum()), int(b.sum()), int((a & ~b).sum()), int((b & ~a).sum())]
            )
        out.append(rows)
    return out


def forgotten_indices(seeds: Sequence[Mapping[str, torch.Tensor]]) -> list[int]:
    """The held-out images the control gets right and the recovered model wrong, in every seed."""
    lost = torch.ones_like(seeds[0]["control"])
    for correct in seeds:
        lost &= correct["control"] & ~correct["recovered"]
    return lost.nonzero().flatten().tolist()


def thumbnail(image: torch.Tensor) -> str:
    """A held-out image (standardised, C x H x W) as a base64 PNG, stretched to its own value range; one
    channel where the channels are equal (grayscale repeated)."""
    low, high = image.min(), image.max()
    pixels = ((image - low) / (high - low + 1e-8)).clamp(0, 1)
    gray = pixels.shape[0] == 3 and torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])
    array = pixels[0].numpy() if gray else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    imsave(buffer, array, format="png", cmap="gray", vmin=0, vmax=1)
    return base64.b64encode(buffer.getvalue()).decode()


def forgetting_figures(workload: Workload, seeds: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, object]:
    """The record's ``per_class`` (class names and :func:`per_class_counts`) and ``forgotten`` (how many,
    and the first :data:`FORGOTTEN_CAP` with their index, label and thumbnail)."""
    labels = test_labels(workload)
    names = class_names(workload)
    lost = forgotten_indices(seeds)
    shown = [
        {"index": i, "label": names[int(labels[i])], "png": thumbnail(workload.test[i][0])}
        for i in lost[:FORGOTTEN_CAP]
    ]
    return {
        "per_class": {"classes": names, "counts": per_class_counts(labels, seeds, len(names))},
        "forgotten": {"count": len(lost), "images": shown},
    }


@dataclass(frozen=True)
class ClassDrop:
    """One class of one case: its images, the control's and the recovered model's top-1 on them (mean over
    seeds), the paired verdict over seeds, and whether the drop is significant (:data:`CLASS_CONFIDENCE`,
    corrected)."""

    name: str
    images: int
    control_top1: float
    recovered_top1: float
    verdict: Verdict
    flagged: bool


def class_drops(per_class: Mapping[str, object]) -> list[ClassDrop]:
    """Per class of a record's ``per_class``, its :class:`ClassDrop`; none when the record has none."""
    if not per_class:
        return []
    names, counts = per_class["classes"], per_class["counts"]
    confidence = 1 - (1 - CLASS_CONFIDENCE) / len(names)
    drops = []
    for c, name in enumerate(names):
        pairs = [
            PairedDrop(n, ctl, rec, c_only, r_only) for n, ctl, rec, c_only, r_only in (s[c] for s in counts)
        ]
        if not pairs[0].n:
            continue
        verdict = judge(pairs, 0.0, confidence)
        control = sum(p.dense_top1 for p in pairs) / len(pairs)
        recovered = sum(p.pruned_top1 for p in pairs) / len(pairs)
        drops.append(ClassDrop(name, pairs[0].n, control, recovered, verdict, not verdict.passed))
    return drops


def forgetting_markdown(cases: Sequence[tuple[str, Mapping, Mapping]]) -> str:
    """Markdown, per ``(case id, per_class, forgotten)``: the flagged classes with their drops, and how many
    images the control gets right and the pruned model wrong in every seed."""
    lines = []
    for case_id, per_class, forgotten in cases:
        drops = class_drops(per_class)
        if not drops:
            continue
        flagged = [d for d in drops if d.flagged]
        named = ", ".join(
            f"`{d.name}` {d.control_top1:.1f} → {d.recovered_top1:.1f} ({d.verdict.mean_drop:+.2f} ± "
            f"{d.verdict.noise:.2f})"
            for d in flagged
        )
        lost = forgotten.get("count", 0) if forgotten else 0
        lines.append(
            f"- `{case_id}`: {len(flagged)} of {len(drops)} classes lose significantly"
            + (f": {named}" if flagged else "")
            + f"; {lost} images right for the control and wrong after pruning in every seed"
        )
    return "\n".join(lines)


def forgetting_html(cases: Sequence[tuple[str, Mapping, Mapping]]) -> str:
    """HTML, per case: a per-class table (control and recovered top-1, paired drop ± SE, flagged at 99 %
    corrected) and a grid of the forgotten images with their labels."""
    parts = []
    for case_id, per_class, forgotten in cases:
        drops = class_drops(per_class)
        if not drops:
            continue
        rows = "".join(
            f"<tr{' class=flag' if d.flagged else ''}><td>{html.escape(d.name)}</td><td>{d.images}</td>"
            f"<td>{d.control_top1:.2f}</td><td>{d.recovered_top1:.2f}</td>"
            f"<td>{d.verdict.mean_drop:+.2f} ± {d.verdict.noise:.2f}</td>"
            f"<td>{'yes' if d.flagged else ''}</td></tr>"
            for d in drops
        )
        images = (forgotten or {}).get("images", [])
        grid = "".join(
            f"<figure><img alt='held-out image {i['index']}' src='data:image/png;base64,{i['png']}'>"
            f"<figcaption>{html.escape(str(i['label']))} #{i['index']}</figcaption></figure>"
            for i in images
        )
        count = (forgotten or {}).get("count", 0)
        parts.append(
            f"<h3>{html.escape(case_id)}</h3><table><thead><tr><th>class</th><th>images</th><th>control</th>"
            f"<th>recovered</th><th>drop ± SE</th><th>flagged</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<p>{count} held-out images the control gets right and the pruned model wrong in every seed"
            + (f" (the first {len(images)}):" if images else ".")
            + f"</p><div class=grid>{grid}</div>"
        )
    return "".join(parts)
