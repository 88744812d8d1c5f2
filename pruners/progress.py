"""What long work (baseline training, recovery) shows while it runs: a live tqdm bar on a terminal, one
line per epoch in a log (CI), or nothing. The bench points it past pytest's output capture, so a cold run
that trains for minutes says so."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TextIO

from tqdm.auto import tqdm

Mode = Literal["bar", "epochs", "off"]


@dataclass
class _Output:
    stream: TextIO | None = None
    mode: Mode | None = None


_output = _Output()


def show_progress(stream: TextIO | None = None, mode: Mode | None = None) -> None:
    """Write progress to ``stream`` (default: ``sys.stderr`` at the time) as ``mode``: ``"bar"`` (a live
    tqdm line), ``"epochs"`` (a line per epoch) or ``"off"``; ``None`` picks a bar on a terminal and a line
    per epoch elsewhere."""
    _output.stream, _output.mode = stream, mode


class Progress:
    """One phase's progress: :meth:`step` after each optimizer step, :meth:`epoch` after each epoch."""

    def __init__(self, desc: str, epochs: int, steps_per_epoch: int) -> None:
        self.desc, self.epochs, self.steps_per_epoch = desc, epochs, steps_per_epoch
        self.stream = _output.stream or sys.stderr
        self.mode = _output.mode or ("bar" if self.stream.isatty() else "epochs")
        self.done_epochs, self.start = 0, time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(
                total=epochs * steps_per_epoch,
                desc=desc,
                unit="step",
                leave=False,
                file=self.stream,
                mininterval=1.0,
            )

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(
                epoch=f"{self.done_epochs + 1}/{self.epochs}", loss=f"{loss:.3f}", refresh=False
            )

    def epoch(self) -> None:
        self.done_epochs += 1
        if self.mode == "epochs":
            spent = time.perf_counter() - self.start
            left = spent / self.done_epochs * (self.epochs - self.done_epochs)
            self.stream.write(
                f"{self.desc}: epoch {self.done_epochs}/{self.epochs}, {spent:.0f} s, ETA {left:.0f} s\n"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def progress(desc: str, epochs: int, steps_per_epoch: int) -> Iterator[Progress]:
    """The :class:`Progress` of one phase, closed when it ends."""
    shown = Progress(desc, epochs, steps_per_epoch)
    try:
        yield shown
    finally:
        shown.close()
