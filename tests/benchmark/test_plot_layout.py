"""What the figures show: a reasoning-length curve only where a length was swept (integer ticks,
a std band over seeds), and frontier labels that never overlap."""

from __future__ import annotations

import itertools
from pathlib import Path

from bench_helpers import write_record

from recbole_ext.benchmark.collect import collect_entries, load_records
from recbole_ext.benchmark.plots import _pyplot, place_labels, plot_reasoning_length

M = {"hit@5": 0.1, "hit@10": 0.2, "ndcg@5": 0.05}


def test_no_reasoning_length_plot_without_a_sweep(tmp_path: Path) -> None:
    """The quickstart case: every stage at l = 2 only. One point per line is no curve: not drawn."""
    write_record(tmp_path, "STREAMRec", "ml-100k", 2020, {**M, "ndcg@10": 0.03}, extra={"reasoning_len": 2},
                 stages=[{"name": s, "test": {**M, "ndcg@10": 0.03}} for s in ("pt", "sft", "rl")])
    assert plot_reasoning_length(collect_entries(load_records(tmp_path)), tmp_path / "rl.png") is None
    assert not (tmp_path / "rl.png").exists()


def test_sweep_is_drawn_with_integer_ticks_and_std_band(tmp_path: Path, monkeypatch) -> None:
    for length, seed in itertools.product((0, 2, 4), (1, 2)):
        write_record(tmp_path, "STREAMRec", "d", seed, {**M, "ndcg@10": 0.02 + 0.001 * length + 0.002 * seed},
                     run_id=f"l{length}-s{seed}", config={"reasoning_len": length}, label=f"STREAMRec (l={length})")
    write_record(tmp_path, "TIGER", "d", 1, {**M, "ndcg@10": 0.02}, extra={"reasoning_len": 0})  # one length only
    plt = _pyplot()
    saved = {}
    monkeypatch.setattr("recbole_ext.benchmark.plots._save", lambda fig, plt_, path: saved.setdefault("fig", fig) and path)
    plot_reasoning_length(collect_entries(load_records(tmp_path)), tmp_path / "rl.png")
    ax = saved["fig"].axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() and not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in lines] == ["STREAMRec – d"]  # TIGER at one length: no line
    assert list(lines[0].get_xdata()) == [0, 2, 4]
    assert [round(v, 4) for v in lines[0].get_ydata()] == [0.023, 0.025, 0.027]  # means over the two seeds
    assert len(ax.collections) == 1  # the ± std band
    saved["fig"].canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(saved["fig"])


def test_frontier_labels_never_overlap() -> None:
    """The collisions seen in committed figures: two STREAM-Rec stages at nearly the same point,
    Caser and SASRec at nearly the same point, and more points around them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    points = [(0.1073, 0.0323, "STREAMRec (RL)"), (0.1042, 0.0338, "STREAMRec (SFT)"),
              (0.1573, 0.0325, "STREAMRec (PT)"), (0.0941, 0.0360, "TIGER"), (0.40, 0.0282, "Caser"),
              (0.41, 0.0283, "SASRec"), (0.39, 0.0342, "BERT4Rec"), (0.40, 0.0424, "GRU4Rec")]
    for x, y, _ in points:
        ax.scatter([x], [y])
    ax.set_xscale("log")
    ax.margins(0.15)
    fig.canvas.draw()
    boxes = place_labels(ax, points)
    assert len(boxes) == len(points)
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert sorted(t.get_text() for t in ax.texts) == sorted(p[2] for p in points)
    plt.close(fig)


def test_crowded_frontier_numbers_what_does_not_fit_and_lists_it() -> None:
    """The 23-row quickstart: labels that fit nowhere become numbers with a key; no two texts overlap."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.3, 5.9))
    cluster = [(0.40 + 0.012 * i, 0.0033 + 0.0002 * (i % 3), f"LASAR variant {i}") for i in range(8)]
    slow = [(1.8 + 0.05 * i, 0.0027 + 0.00005 * i, f"TwiSTAR (SLOW_{i})") for i in range(5)]
    spread = [(0.05 * 1.3 ** i, 0.015 + 0.0003 * i, f"Baseline {i}") for i in range(6)]
    points = cluster + slow + spread
    for x, y, _ in points:
        ax.scatter([x], [y])
    ax.set_xscale("log")
    ax.margins(0.15)
    fig.canvas.draw()
    key: list[tuple[int, str]] = []
    boxes = place_labels(ax, points, key=key)
    assert len(boxes) == len(points) and key  # this cluster cannot hold every label
    assert [n for n, _ in key] == list(range(1, len(key) + 1))
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted([p[2] for p in points if p[2] not in dict(key).values()] + [str(n) for n, _ in key])
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    plt.close(fig)
