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


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """``path`` as a ``Path`` once it is known that it can be written: a file, or with ``folder`` a folder
    (created later, where it does not exist yet). Otherwise a ``ValueError`` that names ``what`` and why.

    It tries: a probe file is created and removed in the nearest folder that exists, so a read-only file
    system or a path under a file is found before any work, whoever runs it (root included).
    """
    path = Path(path).expanduser()
    if path.exists() and path.is_dir() != folder:
        raise ValueError(
            f"{what} {path} is a {'file' if folder else 'folder'}; name a {'folder' if folder else 'file'}"
        )
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be written: {existing}: {err.strerror or err}") from None
    return path
