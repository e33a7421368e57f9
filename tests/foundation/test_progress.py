"""Progress lines: every interval, with count, rate and time left; none for short loops."""

import logging

from recbole_ext.progress import Progress, ProgressLoader, format_seconds, track


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_every_interval_with_rate_and_eta(caplog):
    clock = Clock()
    progress = Progress(10, "train epoch 0", interval_s=30, bar=False, clock=clock)
    with caplog.at_level(logging.INFO, logger="recbole_ext.progress"):
        for _ in range(3):
            clock.now += 10  # 3 steps in 30 s: 0.1/s, 7 left -> 70 s
            progress.tick()
        clock.now += 5
        progress.tick()  # 35 s: no line (5 s since the last one)
    assert [r.getMessage() for r in caplog.records] == [
        "train epoch 0: 3/10 (30 %), 0.10/s, elapsed 0m30s, ETA 1m10s"]


def test_short_loops_are_silent_and_track_yields_everything(caplog):
    with caplog.at_level(logging.INFO, logger="recbole_ext.progress"):
        assert list(track(range(5), 5, "evaluate", bar=False)) == [0, 1, 2, 3, 4]
    assert not caplog.records
    assert format_seconds(3725) == "1h02m05s" and format_seconds(75) == "1m15s"


def test_loader_wrapper_keeps_the_loaders_attributes():
    class Loader(list):
        shuffle = True

    wrapped = ProgressLoader(Loader([1, 2, 3]), "train", bar=False)
    assert list(wrapped) == [1, 2, 3] and len(wrapped) == 3 and wrapped.shuffle is True
