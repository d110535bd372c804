"""One colour and marker per codec, and the axis habits every lossyds figure shares.

A codec's style depends on its name alone (its place among the built-in codecs, else a
hash of the name), never on which codecs happen to be in a panel: JPEG is the same colour
in the PSNR panel, the SSIM panel, report.png and the study figure, whatever else is drawn.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

# Matplotlib's tab10 and ten markers that stay distinct at small sizes. Written out here so that
# a codec's style is known without importing matplotlib (the HTML page colours its labels too).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MARKERS = "os^Dv<>pPX"

# The built-in codecs in a fixed order, so that adding a plugin never recolours them.
KNOWN_CODECS = (
    "jpeg",
    "webp",
    "avif",
    "png",
    "opus",
    "mp3",
    "flac",
    "encodec",
    "compressai",
    "msillm",
    "ecdc",
    "lsyn",
)


class CodecStyle(NamedTuple):
    color: str  # '#rrggbb'
    marker: str  # a matplotlib marker


def codec_style(codec: str) -> CodecStyle:
    """The colour and marker of `codec` (a codec name such as 'jpeg'; a neural codec's model
    suffix, as in 'compressai-bmshj2018', keeps the family's style)."""
    family = codec.split("-", 1)[0].split(":", 1)[0].lower()
    if family in KNOWN_CODECS:
        index = KNOWN_CODECS.index(family)
    else:
        index = zlib.crc32(family.encode())  # stable across runs, unlike hash()
    return CodecStyle(PALETTE[index % len(PALETTE)], MARKERS[(index // len(PALETTE) + index) % len(MARKERS)])


def lossless_reference(axis: Any, value: float | None, label: str) -> None:
    """A lossless build as a labelled horizontal reference line at its score (a point at its
    large rate would squeeze every lossy point into the left edge); for a score that is
    infinite on identical samples (None: PSNR), a legend entry saying so, with no line.
    The label goes in the legend, where it overlaps no point."""
    if value is None:
        axis.plot([], [], ls="none", label=f"{label}: identical, infinite")
    else:
        axis.axhline(value, ls="--", lw=1, color="black", label=label, zorder=1)


def readable_log_axis(axis: Any, which: str = "x") -> None:
    """A log axis whose tick labels never overlap: labels on at most six major ticks, in plain
    numbers (0.1, 1, 10), and none on minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = axis.xaxis if which == "x" else axis.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    target.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def format_score(value: float | None, digits: int = 4) -> str:
    """A table cell: '' for a missing value, 'lossless' for an infinite PSNR-like score."""
    if value is None:
        return ""
    if value == float("inf"):
        return "lossless"
    return f"{value:.{digits}f}"
