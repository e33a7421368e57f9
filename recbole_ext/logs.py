"""Log output: plain text in files and pipes, RecBole's colours only on a terminal.

RecBole colours parts of its messages itself (``set_color``: ``\\x1b[1;34m...\\x1b[0m`` inside the
message text), so a formatter that strips ANSI escape sequences is what keeps them out of log files,
suite cell logs and anything else that is not a terminal.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import IO

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FORMAT, DATEFMT = "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


class PlainFormatter(logging.Formatter):
    """A formatter whose output carries no ANSI escape sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(log_file: Path | None = None, level: str = "INFO") -> None:
    """Log to stderr and, when given, to the run's own log file (replacing earlier handlers); the
    file, and stderr unless it is a terminal, get plain text. Python warnings are logged too (so
    they reach the file)."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter((logging.Formatter if _is_terminal(sys.stderr) else PlainFormatter)(FORMAT, DATEFMT))
    handlers: list[logging.Handler] = [stream]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(PlainFormatter(FORMAT, DATEFMT))
        handlers.append(handler)
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), handlers=handlers, force=True)
    logging.captureWarnings(True)
