"""The geometry of the dashboard's charts, drawn as SVG by the server (``templates/_charts.html``).

Server-side SVG rather than a charting library: the charts are bars over days, which take a
page of arithmetic; the page then needs no script to show them (the script only adds a readout
and sorting), nothing is vendored or fetched, the page's Content-Security-Policy stays strict
(no inline scripts or styles: SVG presentation attributes are not styles), and every bar carries
the exact amount the usage API returns (``data-value``), formatted by :mod:`core.billing.money`.
Pixel positions are floats; money never is: values stay integers (micro-dollars or counts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 30
MAX_DAY_LABELS = 10


@dataclass(frozen=True)
class Segment:
    series: str
    value: int
    text: str
    """The exact value as the usage API writes it."""
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    label: str
    x: float
    width: float
    segments: list[Segment]
    total: int
    total_text: str
    show_label: bool


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    bars: list[Bar]
    ticks: list[Tick]
    series: list[str]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP

    @property
    def plot_width(self) -> int:
        return self.width - LEFT - RIGHT

    @property
    def plot_height(self) -> int:
        return self.height - TOP - BOTTOM

    @property
    def baseline(self) -> int:
        return self.top + self.plot_height


def nice_step(largest: int, *, ticks: int = 4) -> int:
    """A step of 1, 2 or 5 times a power of ten such that ``ticks`` steps reach ``largest``."""
    raw = max(1, -(-largest // ticks))
    magnitude = int(10 ** (len(str(raw)) - 1))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def stacked_bars(
    *,
    name: str,
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[int]],
    fmt: Callable[[int], str],
    tick_fmt: Callable[[int], str],
) -> Chart:
    """One bar per label, its segments stacked from the bottom in the order of ``series``."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    step = nice_step(max(totals, default=0))
    axis_max = step * max(1, -(-max(totals, default=0) // step))
    chart = Chart(name=name, title=title, bars=[], ticks=[], series=list(series))
    plot_h, plot_w = chart.plot_height, chart.plot_width
    slot = plot_w / max(1, len(labels))
    gap = min(4.0, slot * 0.15)
    every = max(1, -(-len(labels) // MAX_DAY_LABELS))
    for i, label in enumerate(labels):
        y = float(chart.baseline)
        segments = []
        for series_name, values in series.items():
            height = values[i] / axis_max * plot_h
            y -= height
            segments.append(
                Segment(
                    series=series_name, value=values[i], text=fmt(values[i]), y=round(y, 2), height=round(height, 2)
                )
            )
        chart.bars.append(
            Bar(
                label=label,
                x=round(LEFT + i * slot + gap / 2, 2),
                width=round(slot - gap, 2),
                segments=segments,
                total=totals[i],
                total_text=fmt(totals[i]),
                show_label=(len(labels) - 1 - i) % every == 0,
            )
        )
    for k in range(axis_max // step + 1):
        chart.ticks.append(Tick(y=round(chart.baseline - k * step / axis_max * plot_h, 2), text=tick_fmt(k * step)))
    return chart


def share(value: int, whole: int) -> float:
    """``value`` as a fraction of ``whole`` (0 to 1), for the width of a bar in a table."""
    return 0.0 if whole <= 0 else max(0.0, min(1.0, value / whole))
