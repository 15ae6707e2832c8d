"""Reading the dashboard's HTML back into numbers, as a person reads it: each chart's bars (their
day and exact values), the totals, the tables' rows, the budgets, the jobs and their thumbnails.
The page marks each of them with ``data-*`` attributes (``api/dashboard/templates``); this parser
is Python's own, so the in-process tests and the browser tests read a page the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    viewer: str | None = None
    bars: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """chart name -> day -> series -> exact value as written."""
    totals: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """table group -> row name -> column -> text."""
    budgets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """key name -> [(used, limit)] of its total and monthly budgets that are set."""
    jobs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    scripts: list[tuple[str | None, str]] = field(default_factory=list)
    """Every <script>: its src, and its inline text."""
    style_attributes: int = 0
    urls: list[str] = field(default_factory=list)
    """Every href, src and action of the page."""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.chart: str | None = None
        self.bar: str | None = None
        self.table: str | None = None
        self.row: str | None = None
        self.column: str | None = None
        self.total: str | None = None
        self.text: list[str] = []
        self.script: str | None = None
        self.in_script = False
        self.strong = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.style_attributes += "style" in a
        self.page.urls += [a[name] for name in ("href", "src", "action") if name in a]
        if "data-viewer" in a:
            self.page.viewer = a["data-viewer"]
        if tag == "figure" and "data-chart" in a:
            self.chart = a["data-chart"]
            self.page.bars[self.chart] = {}
        elif tag == "g" and self.chart and "data-label" in a:
            self.bar = a["data-label"]
            self.page.bars[self.chart][self.bar] = {}
        elif tag == "rect" and self.chart and self.bar and "data-series" in a:
            self.page.bars[self.chart][self.bar][a["data-series"]] = a["data-value"]
        elif tag == "table" and "data-group" in a:
            self.table = a["data-group"]
            self.page.tables[self.table] = {}
        elif tag == "tr" and self.table and "data-name" in a:
            self.row = a["data-name"]
            self.page.tables[self.table][self.row] = {}
        elif tag == "tr" and "data-job" in a:
            self.page.jobs.append(a["data-job"])
        elif tag == "td" and self.row is not None and "data-col" in a:
            self.column, self.text = a["data-col"], []
        elif tag == "div" and "data-total" in a:
            self.total, self.text = a["data-total"], []
        elif tag == "span" and "data-used" in a and self.row is not None:
            self.page.budgets.setdefault(self.row, []).append((a["data-used"], a["data-limit"]))
        elif tag == "strong" and self.total is not None:
            self.strong = True
        elif tag == "img":
            self.page.images.append(a.get("src", ""))
        elif tag == "script":
            self.script, self.in_script, self.text = a.get("src"), True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.chart = None
        elif tag == "g":
            self.bar = None
        elif tag == "table":
            self.table = None
        elif tag == "tr":
            self.row = None
        elif tag == "td" and self.column is not None and self.table and self.row is not None:
            self.page.tables[self.table][self.row][self.column] = "".join(self.text).strip()
            self.column = None
        elif tag == "strong":
            self.strong = False
        elif tag == "div" and self.total is not None:
            self.page.totals[self.total] = "".join(self.text).strip().removeprefix("$")
            self.total = None
        elif tag == "script" and self.in_script:
            self.page.scripts.append((self.script, "".join(self.text).strip()))
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.column is not None or self.in_script or self.strong:
            self.text.append(data)


def read(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page
