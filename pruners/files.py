"""Where PruneBench keeps what it builds (baselines, datasets laid out for torchvision), and how it writes
files: atomically, so that an interrupted run never leaves one half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CACHE_ENV = "PRUNEBENCH_CACHE"


def cache_dir() -> Path:
    """Where baselines and datasets live: ``$PRUNEBENCH_CACHE``, else ``~/.cache/prunebench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prunebench")


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, then rename it over ``path``.

    A crash or interrupt leaves ``path`` as it was, never half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
