"""A small document model rendered twice: Markdown (``report.md``) and static HTML (``report.html``).

Building the report as blocks, not as Markdown text, keeps the two files the same content: every
heading, paragraph, table and figure is written once and rendered by both renderers.  Inline text
knows two marks, ``**bold**`` and ```code```.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: List[str]


@dataclass
class Table:
    columns: List[str]
    rows: List[List[Any]]           # cells are already formatted strings (or numbers / None)
    caption: Optional[str] = None   # shown above the table
    csv: Optional[str] = None       # relative path of the same table as CSV (full precision), if written


@dataclass
class Image:
    path: str                       # relative to the report folder
    caption: str


Block = Union[Heading, Para, Bullets, Table, Image]


@dataclass
class Document:
    title: str
    blocks: List[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self

    def headings(self) -> List[str]:
        return [b.text for b in self.blocks if isinstance(b, Heading)]

    def images(self) -> List[Image]:
        return [b for b in self.blocks if isinstance(b, Image)]

    def tables(self) -> List[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            out.extend(_md_block(b))
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body = "\n".join(_html_block(b) for b in self.blocks)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{body}\n</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
    "th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.9em;color:#444}"
    "code{background:#f3f3f3;padding:0 3px}"
)


def cell(value: Any) -> str:
    """Text of one table cell: None -> '-', anything else as str."""
    return "-" if value is None else str(value)


def _md_cell(value: Any) -> str:
    return cell(value).replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block) -> List[str]:
    if isinstance(b, Heading):
        return ["#" * (b.level) + " " + b.text]
    if isinstance(b, Para):
        return [b.text]
    if isinstance(b, Bullets):
        return [f"- {i}" for i in b.items]
    if isinstance(b, Table):
        lines = []
        if b.caption:
            lines += [f"*{b.caption}*", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
        lines.append("|" + "|".join("---:" if _numeric_col(b, i) else "---" for i in range(len(b.columns))) + "|")
        for r in b.rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
        if b.csv:
            lines += ["", f"(as CSV: [{b.csv}]({b.csv}))"]
        return lines
    if isinstance(b, Image):
        return [f"![{b.caption}]({b.path})", "", f"*{b.caption}*"]
    raise TypeError(f"unknown block {type(b).__name__}")


_NUM = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?( ?[%x])?$", re.I)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) or bool(_NUM.match(cell(value).strip()))


def _numeric_col(b: Table, i: int) -> bool:
    vals = [r[i] for r in b.rows if i < len(r) and r[i] not in (None, "-", "")]
    return bool(vals) and all(_is_num(v) for v in vals)


def _html_inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', t)
    return t


def _html_block(b: Block) -> str:
    if isinstance(b, Heading):
        lvl = min(max(b.level, 1), 6)
        anchor = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-")
        return f'<h{lvl} id="{anchor}">{_html_inline(b.text)}</h{lvl}>'
    if isinstance(b, Para):
        return f"<p>{_html_inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        num = [_numeric_col(b, i) for i in range(len(b.columns))]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
        rows = "".join(
            "<tr>" + "".join(f'<td{" class=num" if num[i] else ""}>{html.escape(cell(c))}</td>' for i, c in enumerate(r)) + "</tr>"
            for r in b.rows
        )
        cap = f"<caption>{_html_inline(b.caption)}</caption>" if b.caption else ""
        csv = f'<p>(as CSV: <a href="{html.escape(b.csv)}">{html.escape(b.csv)}</a>)</p>' if b.csv else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{csv}"
    if isinstance(b, Image):
        return (f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.caption)}">'
                f"<figcaption>{_html_inline(b.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {type(b).__name__}")


def table_from(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: Optional[str] = None,
               csv: Optional[str] = None) -> Table:
    return Table(list(columns), [list(r) for r in rows], caption, csv)
