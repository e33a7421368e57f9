"""One exclusive inter-process lock on a lock file, for work that concurrent runs should do once
(dataset preparation, tokenizer training): the second run waits, then finds the result."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed) for the ``with`` block.

    Waits for another holder, saying so once (``what`` names the work). The file is left in place
    (removing it would let a third process lock a different inode). Not POSIX: no locking.
    """
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process %s (lock %s)", what or "holding the lock", path)
            start = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            logger.info("lock %s acquired after %.1f s", path, time.monotonic() - start)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
