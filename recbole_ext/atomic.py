"""Atomic file writes: every record, cache and prepared file in the project goes through here.

A file is written to a temporary sibling, flushed to disk, then renamed over the target with
``os.replace``, so a reader (or a rerun after ``kill -9``) sees the old file or the new one, never
half of one. On failure the temporary file is removed and the target is untouched.

``exclusive=True`` publishes with ``os.link`` instead, which fails if the target exists: of two
writers racing for one name (two runs given the same ``--run_id``), exactly one wins and the other
gets ``FileExistsError``; nothing is overwritten. Where hard links are unsupported it falls back to
a check-then-replace.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, exclusive: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary binary file, then move it to ``path``
    (``exclusive``: only if ``path`` does not exist, else ``FileExistsError``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        if exclusive:
            _publish_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _publish_exclusive(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)  # atomic; FileExistsError if another writer got there first
    except FileExistsError:
        raise FileExistsError(f"{path} exists") from None
    except OSError:  # no hard links on this filesystem
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(tmp, path)
        return
    Path(tmp).unlink()


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write` for ``exclusive``)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), exclusive=exclusive)
