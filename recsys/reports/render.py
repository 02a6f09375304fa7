"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Both renderings come from the same blocks, so ``report.md`` and ``report.html`` always carry
the same content; the HTML page embeds the PNG plots (base64) so it can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Code:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    path: str  # relative to the report directory
    caption: str


@dataclass
class Document:
    title: str
    blocks: list[Heading | Paragraph | Code | Table | Image] = field(default_factory=list)

    def add(self, *blocks: Heading | Paragraph | Code | Table | Image) -> None:
        self.blocks.extend(blocks)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    """GitHub-flavoured Markdown; images are linked by their relative path."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Code):
            out += ["```", block.text, "```", ""]
        elif isinstance(block, Table):
            if block.caption:
                out += [block.caption, ""]
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "|".join("---" for _ in block.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Image):
            out += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
    return "\n".join(out)


def to_html(doc: Document, root: Path) -> str:
    """One HTML page; images under ``root`` are embedded as data URIs."""
    e = html.escape
    body = [f"<h1>{e(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Code):
            body.append(f"<pre><code>{e(block.text)}</code></pre>")
        elif isinstance(block, Table):
            caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{e(str(h))}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{e(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}caption{text-align:left;font-style:italic}"
        "img{max-width:100%}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(doc.title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(doc: Document, out_dir: Path, name: str = "report") -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.html`` into ``out_dir``; returns both paths."""
    md, page = out_dir / f"{name}.md", out_dir / f"{name}.html"
    md.write_text(to_markdown(doc), encoding="utf-8")
    page.write_text(to_html(doc, out_dir), encoding="utf-8")
    return md, page
