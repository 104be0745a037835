"""A table of paper and measured cells (`Table`, `Column`, `Cell`) and its renderings: Markdown with footnotes,
LaTeX (booktabs, footnote marks) and a wide CSV. reports/tables.py builds the paper tables, reports/checks.py the
checks table; `write_table` writes all three renderings as `{key}.md/.tex/.csv`."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Cell:
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    note: str | None = None      # footnote text (measured cells: protocol@version, metric, scorer, n)
    text: str | None = None      # non-numeric content (params "0.6B")
    protocol: str | None = None


@dataclass
class Column:
    key: str
    label: str
    kind: str                    # "paper" | "measured" | "info"
    digits: int = 4
    protocol: str | None = None  # name@version of a measured column
    thousands: bool = False      # "610,856,096" in Markdown/LaTeX (CSV keeps plain digits)


@dataclass
class Table:
    key: str
    title: str
    row_header: str
    rows: list[str]
    columns: list[Column]
    cells: dict = field(default_factory=dict)     # (row label, column key) -> Cell
    notes: list[str] = field(default_factory=list)

    def cell(self, row: str, column: str) -> Cell | None:
        return self.cells.get((row, column))

    def footnotes(self) -> tuple[dict, list[str]]:
        """Footnote number of each cell (row-major, identical texts share a number) and the texts."""
        numbers, texts, by_text = {}, [], {}
        for row in self.rows:
            for col in self.columns:
                c = self.cells.get((row, col.key))
                if c is None or not c.note:
                    continue
                if c.note not in by_text:
                    texts.append(c.note)
                    by_text[c.note] = len(texts)
                numbers[(row, col.key)] = by_text[c.note]
        return numbers, texts


def _fmt(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def cell_text(cell: Cell | None, column: Column) -> str:
    """Plain text of a cell: paper/info value, or 'value [low, high]' for a measured one."""
    if cell is None:
        return ""
    if cell.text is not None:
        return cell.text
    if cell.value is None:
        return "n/a"
    text = f"{cell.value:,.{column.digits}f}" if column.thousands else _fmt(cell.value, column.digits)
    if column.kind == "measured":
        if cell.ci_low is not None and cell.ci_high is not None:
            text += f" [{_fmt(cell.ci_low, column.digits)}, {_fmt(cell.ci_high, column.digits)}]"
        else:
            text += " [no CI]"
    return text


def to_markdown(table: Table) -> str:
    numbers, texts = table.footnotes()

    def esc(s):
        return str(s).replace("|", "\\|")

    head = [table.row_header] + [c.label for c in table.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(esc(h) for h in head) + " |",
             "|" + "---|" + "|".join("---:" for _ in table.columns) + "|"]
    for row in table.rows:
        cells = []
        for col in table.columns:
            text = esc(cell_text(table.cell(row, col.key), col))
            if (row, col.key) in numbers:
                text += f"[^{table.key}-{numbers[(row, col.key)]}]"
            cells.append(text)
        lines.append("| " + " | ".join([esc(row)] + cells) + " |")
    lines.append("")
    lines += [f"- {n}" for n in table.notes]
    if texts:
        lines.append("")
        lines += [f"[^{table.key}-{i}]: {t}" for i, t in enumerate(texts, 1)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"α": r"$\alpha$", "Σ": r"$\Sigma$", "×": r"$\times$", "·": r"$\cdot$", "≈": r"$\approx$",
                  "–": "--", "—": "---", "→": r"$\rightarrow$", "…": r"\ldots{}", "²": r"$^2$",
                  "≥": r"$\geq$",
                  "≤": r"$\leq$", "“": "``", "”": "''", "’": "'"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_UNICODE.get(ch, ch) for ch in out)


def to_latex(table: Table) -> str:
    numbers, texts = table.footnotes()
    spec = "l" + "r" * len(table.columns)
    head = [table.row_header] + [c.label for c in table.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{table.key}}}",
             rf"\resizebox{{\textwidth}}{{!}}{{\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = []
        for col in table.columns:
            cell = table.cell(row, col.key)
            text = cell_text(cell, col)
            if col.kind == "measured" and cell is not None and cell.value is not None and " [" in text:
                value, ci = text.split(" [", 1)
                text = latex_escape(value) + r" {\scriptsize[" + latex_escape(ci)[:-1] + "]}"
            else:
                text = latex_escape(text)
            if (row, col.key) in numbers:
                text += rf"\textsuperscript{{{numbers[(row, col.key)]}}}"
            cells.append(text)
        lines.append(" & ".join([latex_escape(row)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\vspace{2pt}\footnotesize"]
    lines += [latex_escape(n) + r"\par" for n in table.notes]
    lines += [rf"\textsuperscript{{{i}}}{latex_escape(t)}\par" for i, t in enumerate(texts, 1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Wide CSV: the row label, each paper/info column, and per measured column its value, CI bounds and the
    protocol@version of the cell (the footnote's key fact), all formatted with the column's digits."""
    header = [table.row_header]
    for col in table.columns:
        if col.kind == "measured":
            header += [col.label, f"{col.label} ci_low", f"{col.label} ci_high", f"{col.label} protocol"]
        else:
            header.append(col.label if col.kind == "info" or "paper" in col.label.lower() else f"paper: {col.label}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        out = [row]
        for col in table.columns:
            cell = table.cell(row, col.key)
            if col.kind == "measured":
                if cell is None:
                    out += ["", "", "", ""]
                else:
                    out += [_fmt(cell.value, col.digits), _fmt(cell.ci_low, col.digits),
                            _fmt(cell.ci_high, col.digits), cell.protocol or ""]
            elif cell is None:
                out.append("")
            else:
                out.append(cell.text if cell.text is not None else _fmt(cell.value, col.digits))
        writer.writerow(out)
    return buf.getvalue()


RENDERERS = {"md": to_markdown, "tex": to_latex, "csv": to_csv}


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, render in RENDERERS.items():
        path = out_dir / f"{table.key}.{ext}"
        path.write_text(render(table))
        written.append(path)
    return written
