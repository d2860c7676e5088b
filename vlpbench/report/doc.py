"""A small document model rendered twice: Markdown (``report.md``) and static HTML (``report.html``).

Building the report as blocks, not as Markdown text, keeps the two files the same content: every
heading, paragraph, table and figure is written once and rendered by both renderers.  Inline text
knows two marks, ``**bold**`` and ```code```.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Union

from .table import Table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    table: Table  # raw values, typed columns (vlpbench.report.table)
    csv: str | None = None  # relative path of the same table as CSV (full precision), if written


@dataclass
class Image:
    path: str  # relative to the report folder
    caption: str


Block = Union[Heading, Para, Bullets, TableBlock, Image]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self

    def headings(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, Heading)]

    def images(self) -> list[Image]:
        return [b for b in self.blocks if isinstance(b, Image)]

    def tables(self) -> list[TableBlock]:
        return [b for b in self.blocks if isinstance(b, TableBlock)]

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            out.extend(_md_block(b))
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body = "\n".join(_html_block(b) for b in self.blocks)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{body}\n</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}"
    ".tablewrap{max-width:100%;overflow-x:auto;margin:0.5em 0 0.3em}"
    "table{border-collapse:collapse;font-size:0.82em}"
    "caption{text-align:left;font-style:italic;padding:2px 0}"
    "th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;vertical-align:top}"
    "th{background:#eee;vertical-align:bottom;max-width:9em}"
    "td{max-width:22em;overflow-wrap:anywhere}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "p.csv{font-size:0.8em;margin:0 0 1.4em}"
    "figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:0.9em;color:#444}"
    "code{background:#f3f3f3;padding:0 3px}"
)


def _md_block(b: Block) -> list[str]:
    if isinstance(b, Heading):
        return ["#" * (b.level) + " " + b.text]
    if isinstance(b, Para):
        return [b.text]
    if isinstance(b, Bullets):
        return [f"- {i}" for i in b.items]
    if isinstance(b, TableBlock):
        lines = b.table.to_markdown().rstrip("\n").split("\n")
        if b.csv:
            lines += ["", f"(as CSV: [{b.csv}]({b.csv}))"]
        return lines
    if isinstance(b, Image):
        return [f"![{b.caption}]({b.path})", "", f"*{b.caption}*"]
    raise TypeError(f"unknown block {type(b).__name__}")


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
    if isinstance(b, TableBlock):
        csv = f'<p class="csv">(as CSV: <a href="{html.escape(b.csv)}">{html.escape(b.csv)}</a>)</p>' if b.csv else ""
        return b.table.to_html(inline=_html_inline) + csv
    if isinstance(b, Image):
        return (
            f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.caption)}">'
            f"<figcaption>{_html_inline(b.caption)}</figcaption></figure>"
        )
    raise TypeError(f"unknown block {type(b).__name__}")
