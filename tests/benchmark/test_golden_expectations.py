"""The golden table files against expectations computed here, independently of the table code.

``test_tables.py`` checks that the tables equal the golden files, which were written by the code
under test (``UPDATE_GOLDEN=1``); this file checks that the golden files say the right thing: from
the raw numbers of the hand-made records (written out again below, and checked against them) it
computes each cell's mean, sample std and seed count with ``statistics``, the best/second styles,
the Improv. row, the significance marks and the paired tests with scipy, and compares.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from scipy import stats
from test_tables import GOLDEN, make_records

COLUMNS = ("R@5", "R@10", "N@5", "N@10")
KEYS = {"R@5": "hit@5", "R@10": "hit@10", "N@5": "ndcg@5", "N@10": "ndcg@10"}
DATASETS = ("instruments", "scientific")
# (section, row) -> dataset -> one (R@5, R@10, N@5, N@10) per seed, as make_records writes them
RAW = {
    ("Traditional", "GRU4Rec"): {"instruments": [(0.03, 0.05, 0.02, 0.025)], "scientific": [(0.03, 0.05, 0.02, 0.025)]},
    ("Traditional", "SASRec"): {"instruments": [(0.04, 0.06, 0.026, 0.029), (0.042, 0.064, 0.028, 0.031)],
                                "scientific": [(0.031, 0.046, 0.019, 0.02)]},
    ("Generative", "TIGER"): {"instruments": [(0.039, 0.062, 0.025, 0.028), (0.037, 0.06, 0.024, 0.0278)],
                              "scientific": [(0.029, 0.045, 0.018, 0.0199)]},
    ("Reasoning", "STREAMRec (PT)"): {"instruments": [(0.038, 0.059, 0.024, 0.027)]},
    ("Reasoning", "STREAMRec (SFT)"): {"instruments": [(0.041, 0.065, 0.028, 0.0307)]},
    ("Reasoning", "STREAMRec (RL)"): {"instruments": [(0.045, 0.07, 0.03, 0.0329)]},
    ("Reasoning", "TwiSTAR"): {"scientific": [(0.033, 0.048, 0.021, 0.0221)]},
}
# per-user NDCG of the rows that have per-user values (instruments), one list per seed; hit = NDCG > 0
PER_USER = {"SASRec": [[0, .2, 0, .1, .3, 0], [.1, .2, 0, .1, .2, 0]], "TIGER": [[0, .1, 0, .1, .2, 0]] * 2,
            "STREAMRec (RL)": [[.3, .4, .2, .3, .5, .2]]}


def read_csv(name: str) -> list[dict[str, str]]:
    with open(GOLDEN / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def user_values(row: str, column: str) -> list[float]:
    """Seeds averaged per user, as the tables' tests pair them."""
    seeds = [[float(v > 0) for v in s] if column.startswith("R") else s for s in PER_USER[row]]
    return [statistics.mean(v) for v in zip(*seeds)]


def test_raw_numbers_are_the_records(tmp_path: Path) -> None:
    make_records(tmp_path)
    seen: dict = {}
    for path in (tmp_path / "runs").rglob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if "test" not in rec or "seed" not in rec:
            continue
        stages = rec.get("stages") or [{"name": None, "test": rec["test"]}]
        for st in stages:
            row = rec["model"] + (f" ({st['name'].upper()})" if st["name"] else "")
            seen.setdefault(row, {}).setdefault(rec["dataset"], []).append(
                tuple(st["test"][KEYS[c]] for c in COLUMNS))
    assert {r: {d: sorted(v) for d, v in ds.items()} for r, ds in seen.items()} == \
        {r: {d: sorted(v) for d, v in ds.items()} for (_, r), ds in RAW.items()}


def test_comparison_values_styles_marks_and_improvement() -> None:
    golden = {(r["row"], r["group"], r["column"]): r for r in read_csv("comparison.csv")}
    means: dict[tuple[str, str, str], float] = {}
    for (section, row), per_ds in RAW.items():
        for ds in DATASETS:
            seeds = per_ds.get(ds, [])
            for j, col in enumerate(COLUMNS):
                cell = golden[(row, ds, col)]
                assert cell["section"] == section and int(cell["n"]) == len(seeds)
                if not seeds:
                    assert cell["value"] == "" and cell["std"] == ""
                    continue
                values = [s[j] for s in seeds]
                means[(row, ds, col)] = statistics.mean(values)
                assert float(cell["value"]) == pytest.approx(statistics.mean(values), abs=1e-12)
                if len(values) > 1:
                    assert float(cell["std"]) == pytest.approx(statistics.stdev(values), rel=1e-9)
                else:
                    assert cell["std"] == ""
    for ds in DATASETS:
        for col in COLUMNS:
            column = {row: v for (row, d, c), v in means.items() if (d, c) == (ds, col)}
            shown = sorted({round(v, 4) for v in column.values()}, reverse=True)  # ties at the shown precision
            for row, v in column.items():
                style = "best" if round(v, 4) == shown[0] else "second" if round(v, 4) == shown[1] else ""
                assert golden[(row, ds, col)]["style"] == style, (row, ds, col)
            ref = column["TIGER"]
            best_other = max(v for row, v in column.items() if row != "TIGER")
            improv = golden[("Improv.", ds, col)]
            assert float(improv["value"]) == pytest.approx(100 * (best_other - ref) / ref, rel=1e-9)
            assert improv["text"] == f"{100 * (best_other - ref) / ref:+.2f}%"
    # marks: † over TIGER, ‡ over the best traditional baseline with per-user values (SASRec), p < 0.05
    for (row, ds, col), cell in golden.items():
        if row == "Improv.":
            continue
        expected = ""
        if ds == "instruments" and row in PER_USER and row not in ("TIGER", "SASRec"):
            for mark, other in (("†", "TIGER"), ("‡", "SASRec")):
                a, b = user_values(row, col), user_values(other, col)
                test = stats.ttest_rel(a, b)
                if statistics.mean(a) > statistics.mean(b) and test.pvalue < 0.05:
                    expected += mark
        if row == "SASRec" and ds == "instruments":
            test = stats.ttest_rel(user_values("SASRec", col), user_values("TIGER", col))
            expected = "†" if test.statistic > 0 and test.pvalue < 0.05 else ""
        assert cell["marks"] == expected, (row, ds, col)


def test_significance_rows_are_scipy_paired_tests() -> None:
    rows = read_csv("significance.csv")
    tests = []
    for start in range(0, len(rows), 8):  # one test = 8 cells: Metric, vs, Users, Mean diff, t, p, W, p
        block = {r["column"]: r for r in rows[start:start + 8]}
        tests.append((block["Metric"]["row"], block["Metric"]["text"], block["vs"]["text"], block))
    pairs = [("SASRec", "TIGER"), ("STREAMRec (RL)", "TIGER"), ("STREAMRec (RL)", "SASRec"), ("TIGER", "SASRec")]
    assert sorted((row, vs.split(" (")[0], metric) for row, metric, vs, _ in tests) == \
        sorted((a, b, c) for a, b in pairs for c in COLUMNS)
    for row, metric, vs, block in tests:
        a, b = user_values(row, metric), user_values(vs.split(" (")[0], metric)
        diff = [x - y for x, y in zip(a, b)]
        t = stats.ttest_rel(a, b)
        w = stats.wilcoxon(a, b, zero_method="wilcox") if any(diff) else None
        assert block["Users"]["text"] == "6"
        assert float(block["Mean diff"]["value"]) == pytest.approx(statistics.mean(diff), abs=1e-12)
        assert float(block["t"]["text"]) == pytest.approx(t.statistic, abs=5e-4)
        assert float(block["p (t-test)"]["text"]) == pytest.approx(t.pvalue, rel=5e-3)
        assert float(block["W"]["text"]) == pytest.approx(w.statistic, abs=1e-9)
        assert float(block["p (Wilcoxon)"]["text"]) == pytest.approx(w.pvalue, rel=5e-3)


def test_efficiency_values() -> None:
    golden = {(r["section"], r["row"], r["column"]): r for r in read_csv("efficiency.csv")}

    def check(section, row, column, values):
        cell = golden[(section, row, column)]
        assert int(cell["n"]) == len(values)
        assert float(cell["value"]) == pytest.approx(statistics.mean(values), abs=1e-12)
        assert (cell["std"] == "") if len(values) == 1 else float(cell["std"]) == pytest.approx(statistics.stdev(values))

    check("instruments", "TIGER", "ms/user", [19.0, 21.0])
    check("instruments", "TIGER", "Invalid rate", [0.01, 0.03])
    check("scientific", "SASRec", "ms/user", [0.5])  # test time per user when the model reports no decoding time
    for stage, invalid in (("PT", None), ("SFT", 0.02), ("RL", 0.005)):
        check("instruments", f"STREAMRec ({stage})", "ms/user", [25.0])
        if invalid is not None:
            check("instruments", f"STREAMRec ({stage})", "Invalid rate", [invalid])
    check("scientific", "TwiSTAR", "Reasoning steps", [0.4])
    for share, value in (("fast10", 0.6), ("fast50", 0.25), ("slow", 0.15)):
        check("scientific", "TwiSTAR", f"Share {share}", [value])
    assert golden[("instruments", "GRU4Rec", "ms/user")]["value"] == ""  # nothing measured: no number


def test_markdown_shows_the_csv_numbers() -> None:
    """Each Markdown cell is its CSV value (± std) at 4 decimals, with its style."""
    cells = {(r["row"], r["group"], r["column"]): r for r in read_csv("comparison.csv")}
    lines = (GOLDEN / "comparison.md").read_text(encoding="utf-8").splitlines()
    header = [h.strip() for h in lines[2].split("|")[2:-1]]
    for line in lines[4:]:
        if not line.startswith("| ") or line.startswith("| *"):
            continue
        parts = [p.strip() for p in line.split("|")[1:-1]]
        row = parts[0]
        for head, shown in zip(header, parts[1:]):
            ds, col = head.split()
            cell = cells[(row, ds, col)]
            if row == "Improv.":
                assert shown == cell["text"]
                continue
            if cell["value"] == "":
                assert shown == "–"
                continue
            text = f"{float(cell['value']):.4f}" + (f" ± {float(cell['std']):.4f}" if cell["std"] else "")
            text = {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(cell["style"], text)
            assert shown == text + cell["marks"], (row, head)
