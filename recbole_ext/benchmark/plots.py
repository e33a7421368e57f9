"""PNG plots from stored records (matplotlib, Agg backend).

- ``reasoning_length.png``: test NDCG@10 (``metrics.PRIMARY_METRIC``) against the reasoning length ``l`` (read from the
  record's ``extra.reasoning_len`` or ``config.reasoning_len``), one line per dataset and
  method (and stage) that was run at two or more lengths (drawn only where a suite swept it), mean
  over seeds with a ± std band, integer ticks.
- ``frontier.png``: accuracy/latency frontier, test NDCG@10 against ms per test user (see
  ``measures.ms_per_user``; the figure says what was timed), one panel per dataset,
  Pareto-optimal methods joined by a line, labels placed so that none overlaps another.

A plot without data is skipped with an info message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recbole_ext.atomic import atomic_write
from recbole_ext.benchmark.collect import Entry
from recbole_ext.benchmark.measures import ms_per_user, reasoning_len_of
from recbole_ext.benchmark.stats import mean_std
from recbole_ext.metrics import PRIMARY_METRIC

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_reasoning_length(entries: Sequence[Entry], path: Path) -> Path | None:
    """NDCG@10 vs reasoning length, for the methods run at two or more lengths (a sweep); ``None``
    when none was. Mean over seeds, a ± std band where a length has several seeds; integer ticks."""
    series: dict[str, dict[float, list[float]]] = {}
    for e in entries:
        x = reasoning_len_of(e)
        y = e.test.get(PRIMARY_METRIC)
        if x is None or y is None:
            continue
        name = f"{e.model}{f' ({e.stage.upper()})' if e.stage else ''} – {e.dataset}"
        series.setdefault(name, {}).setdefault(x, []).append(y)
    series = {name: by_len for name, by_len in series.items() if len(by_len) >= 2}
    if not series:
        logger.info("no method was run at two or more reasoning lengths: %s not drawn", path.name)
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in sorted(series):
        xs = sorted(series[name])
        stats = [mean_std(series[name][x]) for x in xs]
        means = [st.mean for st in stats]
        (line,) = ax.plot(xs, means, marker="o", label=name)
        if any(st.std for st in stats):
            stds = [st.std or 0.0 for st in stats]
            ax.fill_between(xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)],
                            color=line.get_color(), alpha=0.2, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("reasoning length l")
    ax.set_ylabel(f"{PRIMARY_METRIC.upper()} (test), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


#: Offsets (points) tried in turn for a label, nearest first.
_LABEL_OFFSETS = [(dx * r, dy * r) for r in (4, 12, 22, 34, 48)
                  for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]


def _annotate(ax: Any, label: str, x: float, y: float, i: int, fontsize: float) -> Any:
    """``label`` at offset ``i`` of :data:`_LABEL_OFFSETS` from (x, y); a leader line beyond the nearest ring."""
    dx, dy = _LABEL_OFFSETS[i]
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
    return ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                       arrowprops={"arrowstyle": "-", "lw": 0.4, "alpha": 0.5} if i >= 8 else None)


def place_labels(ax: Any, points: Sequence[tuple[float, float, str]], fontsize: float = 7,
                 key: list[tuple[int, str]] | None = None) -> list[Any]:
    """Annotate each point with its label at the first offset of :data:`_LABEL_OFFSETS` whose text
    stays inside the axes and overlaps no label placed before and no marker; returns the labels'
    display boxes.

    A label that fits at no offset: with ``key`` (a list, shared by every panel of a figure) a number
    is placed instead, the same way, and ``(number, label)`` appended to ``key`` for the figure to
    list beside the axes; without ``key`` the label takes the least crowded offset."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    marker_boxes = []
    for x, y, _ in points:
        cx, cy = ax.transData.transform((x, y))
        marker_boxes.append((cx - 3, cy - 3, cx + 3, cy + 3))
    placed: list[tuple[float, float, float, float]] = []
    frame = ax.get_window_extent(renderer)

    def overlap(box: tuple[float, float, float, float]) -> float:
        """Area this box shares with the markers and the labels placed so far (3 px kept free around
        each label, so that two numbers never read as one; a label's area weighs 1000 times a marker's:
        a forced label covers a marker before a text); infinite outside the axes."""
        x0, y0, x1, y1 = box
        if x0 < frame.x0 or x1 > frame.x1 or y0 < frame.y0 or y1 > frame.y1:
            return math.inf

        def shared(b: tuple[float, float, float, float], pad: float) -> float:
            w = min(x1 + pad, b[2]) - max(x0 - pad, b[0])
            h = min(y1 + pad, b[3]) - max(y0 - pad, b[1])
            return w * h if w > 0 and h > 0 else 0.0

        return 1000 * sum(shared(b, 3) for b in placed) + sum(shared(b, 0) for b in marker_boxes)

    def put(x: float, y: float, label: str, force: bool) -> bool:
        """Place ``label`` at the first free offset; with ``force`` and none free, at the least crowded one."""
        least: tuple[float, int] = (math.inf, len(_LABEL_OFFSETS) - 1)
        for i in range(len(_LABEL_OFFSETS)):
            text = _annotate(ax, label, x, y, i, fontsize)
            ext = text.get_window_extent(renderer)
            box = (ext.x0, ext.y0, ext.x1, ext.y1)
            cost = overlap(box)
            if cost == 0:
                placed.append(box)
                return True
            least = min(least, (cost, i))
            text.remove()
        if not force:
            return False
        ext = _annotate(ax, label, x, y, least[1], fontsize).get_window_extent(renderer)
        placed.append((ext.x0, ext.y0, ext.x1, ext.y1))
        return True

    for x, y, label in points:
        if not put(x, y, label, force=key is None):
            key.append((len(key) + 1, label))  # type: ignore[union-attr]
            put(x, y, str(len(key)), force=True)  # type: ignore[arg-type]
    return placed


def plot_frontier(entries: Sequence[Entry], path: Path) -> Path | None:
    """NDCG@10 vs ms/user per dataset; ``None`` when no entry has a latency."""
    points: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for e in entries:
        x, y = ms_per_user(e), e.test.get(PRIMARY_METRIC)
        if x is None or y is None:
            continue
        xs, ys = points.setdefault(e.dataset, {}).setdefault(e.label, ([], []))
        xs.append(x)
        ys.append(y)
    if not points:
        logger.info("no records with a latency: %s not drawn", path.name)
        return None
    plt = _pyplot()
    datasets = sorted(points)
    crowd = max(0, max(len(p) for p in points.values()) - 10)  # more points: a larger panel, then a key
    key_room = 2.2 if crowd else 0.0  # inches right of the panels for labels that fit nowhere in them
    fig, axes = plt.subplots(1, len(datasets), figsize=((5.5 + 0.2 * min(crowd, 15)) * len(datasets) + key_room,
                                                        4.2 + 0.12 * min(crowd, 15)), squeeze=False)
    labelled = []
    for ax, ds in zip(axes[0], datasets):
        pts = []
        for label, (xs, ys) in sorted(points[ds].items()):
            x, y = mean_std(xs).mean, mean_std(ys).mean
            pts.append((x, y, label))
            ax.scatter([x], [y], s=16, zorder=3)
        front = pareto_front([(x, y) for x, y, _ in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, alpha=0.6)
        if all(x > 0 for x, _, _ in pts) and max(x for x, _, _ in pts) > 20 * min(
                x for x, _, _ in pts):
            ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel("inference ms per test user")
        ax.set_ylabel(f"{PRIMARY_METRIC.upper()} (test)")
        ax.grid(alpha=0.3)
        ax.margins(0.15)
        labelled.append((ax, pts))
    fig.text(0.01, 0.01, "timed: the model's own decoding per test user when it reports one (generative models),\n"
             "else the whole test pass / test users; dashed: Pareto front", fontsize=6, alpha=0.8)
    right = 1 - key_room / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0.06, right, 1))
    fig.canvas.draw()  # final axes positions and limits: labels are placed in display coordinates
    key: list[tuple[int, str]] = []
    for ax, pts in labelled:
        place_labels(ax, pts, key=key if crowd else None)
    if key:
        fig.text(right + 0.01, 0.95, "\n".join(f"{n}  {label}" for n, label in key), fontsize=6.5, va="top")
    return _save(fig, plt, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by a faster-and-better one, sorted by latency."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _save(fig: Any, plt: Any, path: Path) -> Path:
    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    finally:
        plt.close(fig)


PLOTS = {"reasoning_length": plot_reasoning_length, "frontier": plot_frontier}


def make_plots(entries: Sequence[Entry], plot_dir: Path,
               which: Sequence[str] = tuple(PLOTS)) -> list[Path]:
    """Draw the requested plots into ``plot_dir``; returns the files written."""
    out = []
    for name in which:
        if name not in PLOTS:
            raise ValueError(f"unknown plot {name!r}; available: {sorted(PLOTS)}")
        p = PLOTS[name](entries, Path(plot_dir) / f"{name}.png")
        if p is not None:
            out.append(p)
    return out
