"""Choosing on validation: a suite's sweep collapses into the one row with the best validation score.

A suite's models item may say ``select: "SASRec (CE)"`` over a sweep (e.g. the protocol's
learning-rate grid): its cells keep their own labels in the records and the suite, and the tables
show one row, ``SASRec (CE)``, holding per dataset the candidate whose mean validation
:data:`~recbole_ext.metrics.PRIMARY_METRIC` over its seeds is best (ties: the first in suite
order). Test metrics never enter the choice. ``tables/selection.md`` lists every choice with all
candidates' validation scores, so a reader sees what was chosen and by how much. A staged method
is chosen per stage row (each stage row competes with the same stage of the other candidates).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from recbole_ext.atomic import atomic_write_text
from recbole_ext.benchmark.collect import Entry
from recbole_ext.metrics import METRIC_LABELS, PRIMARY_METRIC

__all__ = ["Choice", "select_on_validation", "write_selection"]


@dataclass(frozen=True)
class Choice:
    """One collapsed row: which candidate won on which dataset, and every candidate's score."""

    row: str
    dataset: str
    chosen: str
    scores: tuple[tuple[str, float | None, int], ...]  # (candidate label, mean valid score, seeds)


def _mean_valid(entries: list[Entry]) -> float | None:
    values = [e.valid[PRIMARY_METRIC] for e in entries if PRIMARY_METRIC in e.valid]
    return sum(values) / len(values) if values else None


def select_on_validation(entries: list[Entry]) -> tuple[list[Entry], list[Choice]]:
    """Collapse every ``select`` group to its best candidate on validation; other entries pass through.

    Returns the entries (the winners relabelled as their row, losers dropped) and the choices made."""
    groups: dict[tuple[str, str], dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    out: list[Entry] = []
    for e in entries:
        if e.select:
            groups[(e.select, e.dataset)][e.label].append(e)
        else:
            out.append(e)
    choices = []
    for (row, dataset), candidates in groups.items():
        ranked = sorted(candidates.items(), key=lambda kv: min(e.order for e in kv[1]))  # suite order
        scored = [(label, _mean_valid(group), len(group)) for label, group in ranked]
        best = max((s for s in scored if s[1] is not None), key=lambda s: s[1], default=None)
        if best is None:  # no candidate has a validation score: nothing to choose on, keep them all
            out.extend(e for _, group in ranked for e in group)
            continue
        choices.append(Choice(row, dataset, best[0], tuple(scored)))
        out.extend(replace(e, label=row) for e in candidates[best[0]])
    return out, choices


def write_selection(choices: list[Choice], path: Path) -> list[Path]:
    """``selection.md``: per collapsed row and dataset, the chosen candidate and all candidates' scores."""
    label = METRIC_LABELS[PRIMARY_METRIC]
    lines = [f"**Rows chosen on validation** (mean valid {label} over seeds; test metrics play no part)", "",
             f"| Row | Dataset | Chosen | Candidates (valid {label}, seeds) |", "| :-- | :-- | :-- | :-- |"]
    for c in sorted(choices, key=lambda c: (c.dataset, c.row)):
        cands = "; ".join(f"{lab}: {'–' if s is None else f'{s:.4f}'} ({n})" for lab, s, n in c.scores)
        lines.append(f"| {c.row} | {c.dataset} | {c.chosen} | {cands} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return [path]
