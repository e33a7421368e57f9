"""What reasoning costs beside what it buys, read side by side from the records of an output folder.

    python -m recbole_ext.benchmark.reasoning_cost --output_dir=DIR [--reference=TIGER]

The reasoning methods' papers make efficiency claims; each is a ratio of two numbers measured in one
run on the same test users, so this reads them off the records (no new timing):

- every row (method, stage, decoding variant; mean over seeds): NDCG@10, HR@10, ms per test user and
  its ratio to the reference method's (TIGER by default), mean reasoning steps (latent steps or CoT
  tokens) and, where recorded, the depth histogram;
- decoding variants of the same weights (LASAR's ``[explicit]`` CoT text and ``[none]``): each
  variant's ms/user against the stage's own decoding (the abstract: latent ~20x faster than explicit
  CoT, marginal overhead over none), and NDCG beside it;
- adaptive depth across stages (``extra.mean_depth``): a stage's mean depth against the previous
  stage's (LASAR's abstract: RL nearly halves the depth while raising accuracy);
- routed stages (TwiSTAR's ``extra.fixed_strategies``): the planner's NDCG and mean/p95 ms beside
  always-fast, always fast+rank and always-slow, its latency as a share of always-slow's and the
  share of users it sends to each tool (the paper: slow reasoning for ~15 % of users at the
  always-slow accuracy, at a fraction of its latency).

``tables/efficiency.md`` holds the same per-row numbers; this adds the ratios the claims are about.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recbole_ext.benchmark.collect import Entry, collect_entries, load_records
from recbole_ext.benchmark.measures import ms_per_user, number, reasoning_steps

logger = logging.getLogger(__name__)


def _mean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _groups(entries: Sequence[Entry]) -> dict[tuple[str, str], list[Entry]]:
    """(dataset, label) -> its entries over seeds, in table order."""
    out: dict[tuple[str, str], list[Entry]] = {}
    for e in sorted(entries, key=lambda e: (e.dataset, e.order, e.label)):
        out.setdefault((e.dataset, e.label), []).append(e)
    return out


def _variant(label: str) -> tuple[str, str | None]:
    """``"LASAR (RL) [explicit]"`` -> (``"LASAR (RL)"``, ``"explicit"``); a plain label -> (label, None)."""
    if label.endswith("]") and " [" in label:
        base, _, rest = label.rpartition(" [")
        return base, rest[:-1]
    return label, None


def _histogram(group: Sequence[Entry]) -> str:
    hist = group[0].extra.get("depth_histogram")
    if not isinstance(hist, list) or len(group) != 1 or not any(hist):
        return ""  # no users decoded with latent steps (grounding, explicit CoT): no histogram to show
    return " depth histogram " + "/".join(str(int(c)) for c in hist)


def row_lines(entries: Sequence[Entry], reference: str) -> list[str]:
    """One line per (dataset, label): accuracy, ms/user, ratio to the reference, mean steps."""
    groups = _groups(entries)
    ref_ms = {ds: _mean(ms_per_user(e) for e in g) for (ds, label), g in groups.items() if label == reference}
    lines = []
    for (ds, label), g in groups.items():
        ms = _mean(ms_per_user(e) for e in g)
        steps = _mean(reasoning_steps(e) for e in g)
        lines.append(f"{ds:<16} {label:<34} N@10 {_fmt(_mean(e.test.get('ndcg@10') for e in g))}  "
                     f"R@10 {_fmt(_mean(e.test.get('hit@10') for e in g))}  ms/user {_fmt(ms, 3)}  "
                     f"x{reference} {_ratio(ms, ref_ms.get(ds))}  steps {_fmt(steps, 2)}{_histogram(g)}")
    return lines


def variant_lines(entries: Sequence[Entry]) -> list[str]:
    """Each decoding variant's ms/user and NDCG@10 against its stage's own decoding (same weights, users)."""
    groups = _groups(entries)
    lines = []
    for (ds, label), g in groups.items():
        base, variant = _variant(label)
        own = groups.get((ds, base))
        if variant is None or own is None:
            continue
        ms, own_ms = _mean(ms_per_user(e) for e in g), _mean(ms_per_user(e) for e in own)
        lines.append(f"{ds:<16} {base}: {variant} decoding {_fmt(ms, 3)} ms/user vs its own {_fmt(own_ms, 3)}: "
                     f"{variant}/own {_ratio(ms, own_ms)}, own/{variant} {_ratio(own_ms, ms)}; N@10 "
                     f"{_fmt(_mean(e.test.get('ndcg@10') for e in g))} vs "
                     f"{_fmt(_mean(e.test.get('ndcg@10') for e in own))}")
    return lines


def depth_lines(entries: Sequence[Entry]) -> list[str]:
    """A stage's mean latent depth (``extra.mean_depth``) against the previous stage's of the same run."""
    by_run: dict[tuple[str, str], list[Entry]] = {}  # (dataset, model) -> stage rows, over seeds
    for (ds, label), g in _groups(entries).items():
        if _variant(label)[1] is None and g[0].stage and number(g[0].extra.get("mean_depth")) is not None:
            by_run.setdefault((ds, g[0].model), []).append(g)  # type: ignore[arg-type]
    lines = []
    for (ds, _), stages in by_run.items():
        for before, after in zip(stages, stages[1:], strict=False):
            d0 = _mean(number(e.extra.get("mean_depth")) for e in before)
            d1 = _mean(number(e.extra.get("mean_depth")) for e in after)
            n0 = _mean(e.test.get("ndcg@10") for e in before)
            n1 = _mean(e.test.get("ndcg@10") for e in after)
            lines.append(f"{ds:<16} {after[0].label} vs {before[0].label}: mean depth {_fmt(d1, 3)} vs {_fmt(d0, 3)} "
                         f"({_ratio(d1, d0)}); N@10 {_fmt(n1)} vs {_fmt(n0)}")
    return lines


def _strategy(stats: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    return (number(stats.get("ndcg@10")), number(stats.get("latency_ms_mean")), number(stats.get("latency_ms_p95")))


def routing_lines(entries: Sequence[Entry]) -> list[str]:
    """Routed stages: the planner beside the fixed strategies on the same users (``extra.fixed_strategies``).

    A stage that serves one tool (``extra.route_mode`` other than ``route``: TwiSTAR's tool stages) is
    left out: its row inherits the record's final routing from the record-level extra."""
    lines = []
    for (ds, label), g in _groups(entries).items():
        rows = [e for e in g if isinstance(e.extra.get("fixed_strategies"), Mapping)
                and isinstance(e.extra.get("routed"), Mapping) and e.extra.get("route_mode", "route") == "route"]
        if not rows:
            continue
        names = list(rows[0].extra["fixed_strategies"])
        cols = {name: [_strategy(e.extra["fixed_strategies"].get(name, {})) for e in rows] for name in names}
        cols["routed"] = [_strategy(e.extra["routed"]) for e in rows]
        mean = {k: tuple(_mean(v[i] for v in vals) for i in range(3)) for k, vals in cols.items()}
        shares = {t: _mean(number((e.extra.get("tool_shares") or {}).get(t)) for e in rows)
                  for t in (rows[0].extra.get("tool_shares") or {})}
        parts = [f"{k} N@10 {_fmt(n)} {_fmt(m, 3)} ms (p95 {_fmt(p, 3)})" for k, (n, m, p) in mean.items()]
        slow_ms = mean.get("slow", (None, None, None))[1]
        share = ", ".join(f"{t} {_fmt(s, 3)}" for t, s in shares.items())
        lines.append(f"{ds:<16} {label}: " + "; ".join(parts)
                     + f"; routed/always-slow latency {_ratio(mean['routed'][1], slow_ms)}; shares {share}")
    return lines


def _sections(entries: Sequence[Entry], reference: str) -> list[tuple[str, list[str]]]:
    """(title, lines) of each section, rows first."""
    return [("Rows (mean over seeds)", row_lines(entries, reference)),
            ("Decoding variants of the same weights, same users", variant_lines(entries)),
            ("Adaptive depth, stage after stage", depth_lines(entries)),
            ("Routing: the planner beside the fixed strategies, same users", routing_lines(entries))]


def _render(sections: Sequence[tuple[str, list[str]]]) -> str:
    out = []
    for title, lines in sections:
        if lines:
            out += [f"## {title}", *lines, ""]
    return "\n".join(out)


def report(entries: Sequence[Entry], reference: str = "TIGER") -> str:
    """The whole printout for ``entries`` (sections without content are left out)."""
    return _render(_sections(entries, reference))


def write_reasoning_cost(entries: Sequence[Entry], reference: str, path: Path) -> Path | None:
    """``path`` (Markdown) with :func:`report`, atomically, when a record holds a claim to read (decoding
    variants, adaptive depths or routing); else nothing (returns None)."""
    from recbole_ext.atomic import atomic_write_text

    sections = _sections(entries, reference)
    if not any(lines for _, lines in sections[1:]):  # rows alone: no claim to read
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "**Reasoning cost beside accuracy** (`python -m recbole_ext.benchmark.reasoning_cost "
                            "--output_dir=DIR`; ratios of numbers measured in one run on the same test users)\n\n"
                            f"```text\n{_render(sections)}```\n")
    return path


def main(argv: list[str] | None = None) -> int:
    from recbole_ext.provenance import output_header

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True, help="a folder holding runs/ (a run's or a suite's --output_dir)")
    p.add_argument("--reference", default="TIGER", help="the row whose ms/user the others are divided by")
    args = p.parse_args(argv)
    entries = collect_entries(load_records(args.output_dir))
    if not entries:
        print(f"error: no run records under {args.output_dir}/runs (give a run's or a suite's --output_dir)",
              file=sys.stderr)
        return 2
    print("\n".join(output_header(["python", "-m", "recbole_ext.benchmark.reasoning_cost",
                                   *(sys.argv[1:] if argv is None else argv)])))
    print(report(entries, args.reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
