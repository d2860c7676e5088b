"""The one table model every vlpbench table is written with: raw values in, four renderings out.

A :class:`Table` holds typed :class:`Column` s and rows of *raw* values (floats stay floats, missing
is ``None``).  Each renderer decides how a value is shown:

- ``to_csv``: one header line of machine names with the unit in the name (``median_ms``,
  ``params_M``), full-precision numbers, empty cells for missing values, never a unit in a cell;
- ``to_markdown`` / ``to_html``: human titles with units (``median ms``), numbers formatted by the
  column's ``fmt`` (4 significant digits by default), numeric columns right-aligned;
- ``to_text``: the same cells padded for a terminal.

The compare table, the embedder table of ``make bench``, the report's tables and the study's tables
are all built as Tables, so the four formats cannot drift apart.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Formatter = Callable[[Any], str]
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def sig(x: Any, digits: int = 4) -> str:
    """``digits`` significant digits, thousands separators for big numbers, no exponent for everyday sizes."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    x = float(x)
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    if mag >= digits:
        return f"{x:,.0f}"
    if mag < -4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(digits - 1 - mag, 0)}f}"


def pct(x: Any) -> str:
    """A share (0..1) as ``12.3%``."""
    return "-" if x is None else f"{100 * float(x):.1f}%"


def yes_no(x: Any) -> str:
    return {True: "yes", False: "no"}.get(x, "-")


def plain(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, (list, tuple)):
        return "x".join(map(str, x))
    return str(x)


@dataclass(frozen=True)
class Column:
    """One column: ``key`` is the CSV header (snake case, unit in the name), ``title`` the human header."""

    key: str  # e.g. "median_ms": what a program reads
    title: str = ""  # e.g. "median ms": what a person reads (default: key with spaces)
    fmt: Formatter = sig  # how Markdown / HTML / terminal show a raw value
    numeric: bool | None = None  # right-align; None: decided from the values

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"invalid column key {self.key!r}; accepted: letters, digits, '_' and '.'")

    @property
    def header(self) -> str:
        return self.title or self.key.replace("_", " ")


def text(key: str, title: str = "") -> Column:
    """A column of labels (shown as they are)."""
    return Column(key, title, plain, numeric=False)


@dataclass
class Table:
    columns: Sequence[Column]
    rows: list[Sequence[Any]] = field(default_factory=list)
    caption: str | None = None  # shown above the table in Markdown / HTML
    notes: str | None = None  # shown below the table in the terminal rendering

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate column keys in {keys}")
        for r in self.rows:
            self._check(r)

    def _check(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"row of {len(row)} cells for {len(self.columns)} columns: {list(row)!r}")

    def add(self, *cells: Any) -> Table:
        self._check(cells)
        self.rows.append(list(cells))
        return self

    def column(self, key: str) -> list[Any]:
        i = [c.key for c in self.columns].index(key)
        return [r[i] for r in self.rows]

    def view(self, keys: Sequence[str]) -> Table:
        """The same rows restricted to the columns ``keys`` (in that order): a narrower table for a page."""
        idx = [[c.key for c in self.columns].index(k) for k in keys]
        return Table([self.columns[i] for i in idx], [[r[i] for i in idx] for r in self.rows], self.caption, self.notes)

    def records(self) -> list[dict]:
        """Rows as dicts keyed by column key (raw values)."""
        return [dict(zip((c.key for c in self.columns), r)) for r in self.rows]

    # -- rendering ------------------------------------------------------------------------------
    def shown(self) -> list[list[str]]:
        return [[c.fmt(v) for c, v in zip(self.columns, r)] for r in self.rows]

    def is_numeric(self, i: int) -> bool:
        col = self.columns[i]
        if col.numeric is not None:
            return col.numeric
        vals = [r[i] for r in self.rows if r[i] is not None]
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c.key for c in self.columns])
        for r in self.rows:
            w.writerow([_csv_cell(v) for v in r])
        return buf.getvalue()

    def to_markdown(self) -> str:
        def md(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = [f"*{self.caption}*", ""] if self.caption else []
        lines.append("| " + " | ".join(md(c.header) for c in self.columns) + " |")
        lines.append("|" + "|".join("---:" if self.is_numeric(i) else "---" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(md(s) for s in r) + " |" for r in self.shown()]
        return "\n".join(lines) + "\n"

    def to_html(self, inline: Callable[[str], str] = html.escape) -> str:
        num = [self.is_numeric(i) for i in range(len(self.columns))]
        head = "".join(f"<th>{html.escape(c.header)}</th>" for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td{' class=num' if num[i] else ''}>{html.escape(s)}</td>" for i, s in enumerate(r))
            + "</tr>"
            for r in self.shown()
        )
        cap = f"<caption>{inline(self.caption)}</caption>" if self.caption else ""
        return f'<div class="tablewrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'

    def to_text(self) -> str:
        shown = self.shown()
        headers = [c.header for c in self.columns]
        widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(headers)]
        num = [self.is_numeric(i) for i in range(len(self.columns))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(s.rjust(w) if n else s.ljust(w) for s, w, n in zip(cells, widths, num)).rstrip()

        out = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in shown)]
        if self.notes:
            out += ["", self.notes]
        return "\n".join(out) + "\n"

    def transposed(self, label_key: str, label_title: str = "") -> Table:
        """One column per row (named by its ``label_key`` cell), one row per other column: for side-by-side views.

        Cells keep their column's formatter by being pre-formatted; the result is for people, not programs.
        """
        i = [c.key for c in self.columns].index(label_key)
        names = [plain(r[i]) for r in self.rows]
        cols = [text("quantity", label_title)] + [
            Column(_safe_key(n, j), n, plain, numeric=True) for j, n in enumerate(names)
        ]
        out = Table(cols)
        for k, c in enumerate(self.columns):
            if k != i:
                out.add(c.header, *(c.fmt(r[k]) for r in self.rows))
        return out


def _safe_key(name: str, j: int) -> str:
    key = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return f"c{j}_{key}" if key else f"c{j}"


def _csv_cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.12g}"  # drops float noise (0.26181100000000024 -> 0.261811); ns timings stay exact
    return v
