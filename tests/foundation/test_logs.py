"""Log files are plain text; RecBole's colour codes stay on terminals only; known RecBole warnings are silenced."""

import logging
import warnings

from recbole_ext import compat
from recbole_ext.logs import PlainFormatter, strip_ansi


def test_plain_formatter_drops_recbole_colours():
    record = logging.LogRecord("root", logging.INFO, __file__, 1, "\x1b[1;34mThe number of users\x1b[0m: %d", (41,), None)
    assert PlainFormatter("%(message)s").format(record) == "The number of users: 41"
    assert strip_ansi("\x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 0.07s]") == "epoch 0 training [time: 0.07s]"


def test_known_recbole_warnings_are_silenced_and_others_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.silence_known_warnings()
        for message, category in compat.KNOWN_WARNINGS:
            text = message.replace("\\", "")
            warnings.warn_explicit(text, category, "trainer.py", 235, module="recbole.trainer.trainer")
        warnings.warn_explicit("`torch.cuda.amp.GradScaler(args...)` is deprecated", FutureWarning, "mine.py", 1,
                               module="mymodule")  # not RecBole's: kept
        warnings.warn_explicit("something else", FutureWarning, "trainer.py", 2, module="recbole.trainer.trainer")
    assert [str(w.message) for w in caught] == ["`torch.cuda.amp.GradScaler(args...)` is deprecated", "something else"]
