"""PNG plots from stored records (matplotlib, Agg backend).

- ``reasoning_length.png``: test NDCG@10 (``metrics.PRIMARY_METRIC``) against the reasoning length ``l`` (read from the
  record's ``extra.reasoning_len`` or ``config.reasoning_len``), one line per dataset and
  method (and stage), mean over seeds with std error bars.
- ``frontier.png``: accuracy/latency frontier, test NDCG@10 against ms per test user (see
  ``measures.ms_per_user``), one panel per dataset, Pareto-optimal methods joined by a line.

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
    """NDCG@10 vs reasoning length; ``None`` when no entry has a reasoning length."""
    series: dict[str, dict[float, list[float]]] = {}
    for e in entries:
        x = reasoning_len_of(e)
        y = e.test.get(PRIMARY_METRIC)
        if x is None or y is None:
            continue
        name = f"{e.model}{f' ({e.stage.upper()})' if e.stage else ''} – {e.dataset}"
        series.setdefault(name, {}).setdefault(x, []).append(y)
    if not series:
        logger.info("no records with a reasoning length: %s not drawn", path.name)
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in sorted(series):
        xs = sorted(series[name])
        stats = [mean_std(series[name][x]) for x in xs]
        ax.errorbar(xs, [s.mean for s in stats], yerr=[s.std or 0.0 for s in stats],
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("reasoning length l")
    ax.set_ylabel(f"{PRIMARY_METRIC.upper()} (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


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
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        pts = []
        for label, (xs, ys) in sorted(points[ds].items()):
            x, y = mean_std(xs).mean, mean_std(ys).mean
            pts.append((x, y, label))
            ax.scatter([x], [y])
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front([(x, y) for x, y, _ in pts])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, alpha=0.6)
        if all(x > 0 for x, _, _ in pts) and max(x for x, _, _ in pts) > 20 * min(
                x for x, _, _ in pts):
            ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel("inference ms / user")
        ax.set_ylabel(f"{PRIMARY_METRIC.upper()} (test)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
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
