"""Signs of life for long loops: training epochs, evaluation passes, tokenizer training.

:class:`Progress` counts steps of a loop of known length. On a terminal (stderr is a TTY) it draws
a tqdm bar; otherwise (log files, CI, suites) it logs one line every ``interval_s`` seconds with
the count, the rate and the time left, and nothing for loops shorter than that. :class:`ProgressLoader`
wraps a RecBole data loader so that iterating it ticks a :class:`Progress` (every other attribute is
the loader's own).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger("recbole_ext.progress")

#: Seconds between two progress lines in logs.
INTERVAL_S = 30.0


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1m15s"``, ``3725`` -> ``"1h02m05s"``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Progress of ``total`` steps named ``desc``: ``tick()`` after each step, ``close()`` at the end."""

    def __init__(self, total: int, desc: str, interval_s: float = INTERVAL_S, bar: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.interval_s, self.clock = int(total), desc, interval_s, clock
        self.done = 0
        self.start = self.last = clock()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, ncols=100, leave=False)

    def line(self) -> str:
        """``desc: done/total (p %), rate/s, elapsed, ETA``."""
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        share = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_seconds(left) if left == left else "?"
        return (f"{self.desc}: {self.done}/{self.total} ({share:.0f} %), {rate:.2f}/s, "
                f"elapsed {format_seconds(elapsed)}, ETA {eta}")

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.interval_s and self.done < self.total:
            self.last = now
            logger.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def track(iterable: Iterable, total: int, desc: str, **kwargs: Any) -> Iterator:
    """Iterate ``iterable``, ticking a :class:`Progress` after each item."""
    progress = Progress(total, desc, **kwargs)
    try:
        for item in iterable:
            yield item
            progress.tick()
    finally:
        progress.close()


class ProgressLoader:
    """A RecBole loader whose iteration reports progress; every other attribute is the loader's."""

    def __init__(self, loader: Any, desc: str, **kwargs: Any):
        self._loader, self._desc, self._kwargs = loader, desc, kwargs

    def __iter__(self) -> Iterator:
        return track(self._loader, len(self._loader), self._desc, **self._kwargs)

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
