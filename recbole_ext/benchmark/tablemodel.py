"""One table model, three renderers (Markdown, LaTeX booktabs, CSV).

Builders (``tables.py``) fill a :class:`Table`; the renderers only lay it out, so Markdown and
LaTeX always show the same numbers, styles and markers.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

BEST, SECOND = "best", "second"

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
#: Significance markers: Markdown/CSV character -> LaTeX superscript.
_LATEX_MARKS = {"†": r"\dagger", "‡": r"\ddagger"}


@dataclass
class Cell:
    """A numeric cell (``value`` ± ``std`` over ``n`` seeds) or a fixed ``text``."""

    value: float | None = None
    std: float | None = None
    n: int = 0
    style: str = ""  # BEST, SECOND or ""
    marks: str = ""  # significance markers, e.g. "†‡"
    text: str | None = None  # fixed text (overrides number formatting)
    digits: int | None = None  # decimals for this cell (default: the table's)


@dataclass
class Row:
    label: str
    cells: list[Cell]


@dataclass
class Section:
    name: str | None
    rows: list[Row] = field(default_factory=list)


@dataclass
class Table:
    """Rows grouped in sections; columns grouped under headers (``""`` = no group header)."""

    title: str
    stub: str
    groups: list[tuple[str, list[str]]]
    sections: list[Section]
    notes: list[str] = field(default_factory=list)
    digits: int = 4
    footer: list[Row] = field(default_factory=list)  # e.g. the "Improv." row

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(g, c) for g, cols in self.groups for c in cols]


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in free text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _number(cell: Cell, digits: int, pm: str) -> str:
    digits = digits if cell.digits is None else cell.digits
    if cell.text is not None:
        return cell.text
    if cell.value is None or not math.isfinite(cell.value):
        return "–"
    out = f"{cell.value:.{digits}f}"
    if cell.std is not None:
        out += f"{pm}{cell.std:.{digits}f}"
    return out


def _md_cell(cell: Cell, digits: int) -> str:
    text = _number(cell, digits, " ± ")
    if cell.style == BEST:
        text = f"**{text}**"
    elif cell.style == SECOND:
        text = f"<u>{text}</u>"
    return text + cell.marks


def _tex_cell(cell: Cell, digits: int) -> str:
    text = latex_escape(cell.text) if cell.text is not None else _number(cell, digits, r" $\pm$ ")
    if cell.style == BEST:
        text = rf"\textbf{{{text}}}"
    elif cell.style == SECOND:
        text = rf"\underline{{{text}}}"
    if cell.marks:
        text += "$^{" + "".join(_LATEX_MARKS.get(m, m) for m in cell.marks) + "}$"
    return text


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; column groups become ``"<group> <column>"`` headers."""
    header = [table.stub] + [f"{g} {c}".strip() for g, c in table.columns]
    body: list[list[str]] = []
    width = len(header)
    for sec in table.sections:
        if sec.name:
            body.append([f"*{_md_escape(sec.name)}*"] + [""] * (width - 1))
        for row in sec.rows:
            body.append([_md_escape(row.label)] + [_md_cell(c, table.digits) for c in row.cells])
    for row in table.footer:
        body.append([_md_escape(row.label)] + [_md_cell(c, table.digits) for c in row.cells])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(width)]
    widths = [max(w, 3) for w in widths]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join([":" + "-" * (widths[0] - 1)]
                             + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |"
    lines = [f"**{table.title}**", "", line(header), rule] + [line(r) for r in body]
    if table.notes:
        lines += [""] + table.notes
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` with ``\\multicolumn`` column groups and section rows."""
    ncols = 1 + len(table.columns)
    spec = "l" + " ".join("c" * len(cols) for _, cols in table.groups)
    lines = [f"% {table.title}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(g for g, _ in table.groups):
        heads, rules, col = [""], [], 2
        for g, cols in table.groups:
            n = len(cols)
            heads.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}" if g else
                         " & ".join([""] * n))
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines.append(" & ".join(heads) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([latex_escape(table.stub)]
                            + [latex_escape(c) for _, c in table.columns]) + r" \\")
    for sec in table.sections:
        lines.append(r"\midrule")
        if sec.name:
            lines.append(rf"\multicolumn{{{ncols}}}{{l}}{{\textit{{{latex_escape(sec.name)}}}}} \\")
        for row in sec.rows:
            lines.append(" & ".join([latex_escape(row.label)]
                                    + [_tex_cell(c, table.digits) for c in row.cells]) + r" \\")
    if table.footer:
        lines.append(r"\midrule")
        for row in table.footer:
            lines.append(" & ".join([latex_escape(row.label)]
                                    + [_tex_cell(c, table.digits) for c in row.cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in table.notes:
        lines.append(f"% {note}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Long format: one line per (row, column) with the raw mean, std and seed count."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "row", "group", "column", "value", "std", "n", "style", "marks",
                "text"])

    def emit(section: str, row: Row) -> None:
        for (g, c), cell in zip(table.columns, row.cells):
            w.writerow([section, row.label, g, c,
                        "" if cell.value is None else repr(float(cell.value)),
                        "" if cell.std is None else repr(float(cell.std)),
                        cell.n, cell.style, cell.marks,
                        "" if cell.text is None else cell.text])

    for sec in table.sections:
        for row in sec.rows:
            emit(sec.name or "", row)
    for row in table.footer:
        emit("", row)
    return buf.getvalue()
