"""index.html of a report: a self-contained folder (no server, no network, no script) with the
report's figures and tables, the rate and score of every build, and a gallery of a few
samples decoded from every build side by side (images: whole and a 1:1 crop; audio: a player
and a spectrogram on one colour scale), each labelled with its codec, setting, bits, rate
and the sample's stored metrics.
"""

from __future__ import annotations

import html
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs.base import describe_setting
from .errors import UsageError
from .location import Location, as_location, is_url
from .manifest import load_manifest
from .plot_style import codec_style, format_score
from .report_samples import (
    MAX_AUDIO_SECONDS,
    SPECTROGRAM_FLOOR_DB,
    DecodedSample,
    crop_box,
    file_stem,
    pick_keys,
    read_samples,
    write_audio_views,
    write_colour_scale,
    write_image_views,
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1800px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
td:first-child,th:first-child{text-align:left}.row{display:flex;gap:12px;overflow-x:auto;align-items:flex-start}
figure{margin:0;flex:0 0 auto;width:384px}figcaption{font-size:.8em;line-height:1.35}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em;vertical-align:middle}
.crop{width:160px;height:160px;image-rendering:pixelated}.spec{width:384px;height:160px}audio{width:384px}
h3{margin:1.2em 0 .4em}.note{color:#555;font-size:.9em}
"""


@dataclass
class BuildView:
    """What the page says of one build, every number from its manifest (and eval-*.json)."""

    directory: Location  # a local folder (Path) or an fsspec URL (str)
    name: str
    codec: str
    setting: str
    modality: str
    lossless: bool
    payload_bits: int  # bits.payload: all bitstreams of the build
    bits_per_sample: float  # bits.per_sample_mean
    rate: float  # bits.bpp (images) or bits.kbps (audio)
    scores: dict[str, float | None] = field(default_factory=dict)  # None: lossless, infinite
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rate_unit(self) -> str:
        return "bpp" if self.modality == "image" else "kbps"


def build_view(directory: Location, scores: dict[str, float] | None = None) -> BuildView:
    """A build's view from its manifest; `scores` (task scores, quality means) as the report
    collected them. A lossless build's metric without a finite mean (PSNR of identical
    samples) is None, printed "lossless"."""
    manifest = load_manifest(directory)
    bits = manifest["bits"]
    lossless = bool(manifest["codec"].get("lossless"))
    shown: dict[str, float | None] = dict(scores or {})
    for name, summary in (manifest.get("metrics") or {}).items():
        if name not in shown and summary.get("mean") is not None:
            shown[name] = summary["mean"]
        elif name not in shown and lossless:
            shown[name] = None
    return BuildView(
        directory=as_location(directory),
        name=str(directory).rstrip("/").rsplit("/", 1)[-1],
        codec=manifest["codec"]["name"],
        setting=describe_setting(manifest["codec"]["params"]),
        modality=manifest["modality"],
        lossless=lossless,
        payload_bits=int(bits["payload"]),
        bits_per_sample=float(bits["per_sample_mean"]),
        rate=float(bits["bpp"] if manifest["modality"] == "image" else bits["kbps"]),
        scores=shown,
        manifest=manifest,
    )


def gallery_order(views: list[BuildView], source: BuildView | None) -> list[BuildView]:
    """The source first (given, else the first lossless build), then the lossy builds by codec
    and rate: the order of the summary table and of every gallery row."""
    source = source or next((v for v in views if v.lossless), None)
    rest = sorted((v for v in views if v is not source), key=lambda v: (v.codec, v.rate))
    return ([source] if source is not None else []) + rest


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: float | None, lossless: bool) -> str:
    if value is None:
        return "lossless" if lossless else ""
    return format_score(value) if math.isfinite(value) else "lossless"


def _swatch(codec: str) -> str:
    return f'<span class="swatch" style="background:{codec_style(codec).color}"></span>'


def summary_table(order: list[BuildView]) -> str:
    """Every build's bits and rate and scores, in gallery order; the exact manifest numbers
    ride along in data- attributes."""
    columns = sorted({name for view in order for name in view.scores})
    unit = order[0].rate_unit
    head = f"<tr><th>build</th><th>codec</th><th>setting</th><th>payload bits</th><th>bits/sample</th><th>{unit}</th>"
    head += "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    rows = []
    for view in order:
        role = " (source)" if view is order[0] and view.lossless else ""
        cells = "".join(f"<td>{_cell(view.scores.get(c), view.lossless and c in view.scores)}</td>" for c in columns)
        rows.append(
            f'<tr class="build" data-build="{_e(view.name)}" data-payload-bits="{view.payload_bits}" '
            f'data-rate="{view.rate!r}"><td>{_e(view.name)}{role}</td><td>{_swatch(view.codec)}{_e(view.codec)}</td>'
            f"<td>{_e(view.setting)}</td><td>{view.payload_bits}</td><td>{view.bits_per_sample:.0f}</td>"
            f"<td>{view.rate:.4f}</td>{cells}</tr>"
        )
    return f'<table id="builds">{head}{"".join(rows)}</table>'


def markdown_tables(markdown: str) -> str:
    """Markdown tables (report.md's) as HTML tables, other lines as paragraphs."""
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{_e(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in body)
                + "</table>"
            )
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
        else:
            flush()
            if line.strip():
                parts.append(f'<p class="note">{_e(line.lstrip("#").strip())}</p>')
    flush()
    return "\n".join(parts)


def sample_caption(view: BuildView, sample: DecodedSample) -> str:
    """A gallery label: codec, setting, the sample's bits and rate, and its stored metrics."""
    metrics = sample.meta.get("metrics") or {}
    shown = ", ".join(
        f"{_e(name)} {'lossless' if isinstance(v, float) and math.isinf(v) else format_score(v, 3)}"
        for name, v in sorted(metrics.items())
        if isinstance(v, (int, float))
    )
    return (
        f'<figcaption data-build="{_e(view.name)}" data-payload-bits="{sample.meta["payload_bits"]}">'
        f"{_swatch(view.codec)}<b>{_e(view.codec)}</b> {_e(view.setting)} · {_e(view.name)}<br>"
        f"{sample.meta['payload_bits']} bits · {sample.rate(view.modality):.4f} {view.rate_unit}"
        + (f"<br>{shown}" if shown else "")
        + "</figcaption>"
    )


def asset_stem(key: str, order: list[BuildView], view: BuildView) -> str:
    """A sample's file name for one build: readable, and unique even where two keys or build
    names differ only in characters a file name drops (the build's place in `order` and a
    checksum of the key keep them apart)."""
    return f"{file_stem(key)}-{zlib.crc32(key.encode()):08x}--{order.index(view)}-{file_stem(view.name)}"


def image_row(key: str, order: list[BuildView], samples: dict[str, dict[str, DecodedSample]], out: Path) -> str:
    """One sample's images from every build: whole (scaled) and the same 1:1 crop."""
    first = samples[order[0].name][key]
    box = crop_box(first.signal)
    figures = []
    for view in order:
        sample = samples[view.name][key]
        whole, crop = write_image_views(sample.signal, box, out / "images", asset_stem(key, order, view))
        figures.append(
            f'<figure><img src="{_e(whole)}" alt="{_e(key)} from {_e(view.name)}">'
            f'<br><img class="crop" src="{_e(crop)}" alt="1:1 crop of {_e(key)} from {_e(view.name)}">'
            f"{sample_caption(view, sample)}</figure>"
        )
    top, left, side = box
    note = f"whole image scaled to 384 px wide; below it the same {side}x{side} px crop at 1:1, from ({left}, {top})"
    return f'<h3>{_e(key)}</h3><p class="note">{note}</p><div class="row">{"".join(figures)}</div>'


def audio_row(key: str, order: list[BuildView], samples: dict[str, dict[str, DecodedSample]], out: Path) -> str:
    """One sample from every build: a player (16-bit FLAC of the decoded audio) and a
    spectrogram up to the lowest Nyquist frequency among the builds."""
    top_hz = min(samples[v.name][key].meta["sample_rate"] for v in order) / 2
    figures = []
    for view in order:
        sample = samples[view.name][key]
        rate = sample.meta["sample_rate"]
        sound, picture, seconds = write_audio_views(
            sample.signal, rate, top_hz, out / "audio", asset_stem(key, order, view)
        )
        figures.append(
            f'<figure><audio controls preload="metadata" src="{_e(sound)}" data-seconds="{seconds!r}"></audio>'
            f'<img class="spec" src="{_e(picture)}" alt="spectrogram of {_e(key)} from {_e(view.name)}">'
            f"{sample_caption(view, sample)}</figure>"
        )
    seconds = samples[order[0].name][key].meta["num_frames"] / samples[order[0].name][key].meta["sample_rate"]
    clipped = f"; the players hold its first {MAX_AUDIO_SECONDS:g} s" if seconds > MAX_AUDIO_SECONDS else ""
    note = f"{seconds:.2f} s{clipped}; spectrograms 0 to {top_hz / 1000:g} kHz"
    return f'<h3>{_e(key)}</h3><p class="note">{note}</p><div class="row">{"".join(figures)}</div>'


def gallery(order: list[BuildView], keys: list[str] | None, out: Path) -> str:
    """The gallery of `keys` (None: a few spread over the builds' common keys)."""
    modality = order[0].modality
    chosen = pick_keys([(v.directory, v.manifest) for v in order], keys)
    samples = {v.name: read_samples(v.directory, v.manifest, chosen) for v in order}
    row = image_row if modality == "image" else audio_row
    body = "".join(row(key, order, samples, out) for key in chosen)
    if modality == "audio":
        scale = write_colour_scale(out / "audio" / "colour-scale.png")
        body = (
            f'<p class="note">spectrogram colours: <img src="{_e(scale)}" width="256" height="12" '
            f'alt="colour scale"> {SPECTROGRAM_FLOOR_DB:g} dBFS (left) to 0 dBFS (right), the same in every spectrogram</p>'
            + body
        )
    return body


def distinct_names(views: list[BuildView]) -> None:
    """Builds are told apart by folder name on the page; two of one name are refused."""
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise UsageError("two builds share a folder name; give each build a folder of its own name for the page.")


def _same_place(one: Location, other: Location) -> bool:
    if is_url(one) or is_url(other):
        return str(one).rstrip("/") == str(other).rstrip("/")
    return Path(one).resolve() == Path(other).resolve()


def write_page(
    out: Path,
    views: list[BuildView],
    *,
    keys: list[str] | None = None,
    source: BuildView | None = None,
    figures: list[str] = (),
    tables_markdown: str = "",
    title: str = "lossyds report",
) -> Path:
    """Write out/index.html and its images/ and audio/ folders; returns the page's path."""
    if source is not None and not source.lossless:
        raise UsageError(f"--source {source.directory} is a {source.codec} build, not lossless.")
    if source is not None:  # a --source that is also one of the builds is shown once
        views = [v for v in views if not _same_place(v.directory, source.directory)]
    distinct_names(views + ([source] if source else []))
    if len({v.modality for v in views + ([source] if source else [])}) != 1:
        raise UsageError("a page compares builds of one modality at a time.")
    order = gallery_order(views + ([source] if source else []), source)
    out.mkdir(parents=True, exist_ok=True)
    shown = gallery(order, keys, out)
    images = "".join(f'<p><img src="{_e(f)}" alt="{_e(f)}" style="max-width:100%"></p>' for f in figures)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
        f"<h2>Builds</h2>{summary_table(order)}<h2>Samples</h2>{shown}"
        + (f"<h2>Figures</h2>{images}" if images else "")
        + (f"<h2>Tables</h2>{markdown_tables(tables_markdown)}" if tables_markdown else "")
        + "</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def figures_page(out: Path, figures: list[str], tables_markdown: str, title: str = "lossyds report") -> Path:
    """out/index.html with figures (file names in `out`) and markdown tables only: the study
    layout's page, whose builds (of several datasets) have no sample in common."""
    images = "".join(f'<p><img src="{_e(f)}" alt="{_e(f)}" style="max-width:100%"></p>' for f in figures)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{images}{markdown_tables(tables_markdown)}</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build_page(directory: Location, out: Path, keys: list[str] | None = None) -> Path:
    """`lossyds info DIR --html OUT`: one build's manifest summary and a few decoded samples.
    DIR may be an fsspec URL: only the manifest and the shards holding the shown samples are
    fetched."""
    view = build_view(directory)
    manifest = view.manifest
    facts = {
        "dataset": f"{manifest['dataset']['name']} ({manifest['dataset'].get('split') or 'no split'})",
        "samples": manifest["num_samples"],
        "skipped": manifest.get("num_skipped", 0),
        "shards": len(manifest["shards"]),
        "codec library": f"{manifest['codec'].get('library')} {manifest['codec'].get('library_version')}",
        "compression vs raw": f"{manifest['bits']['compression_ratio_vs_raw']:.1f}:1",
    }
    table = "| fact | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    return write_page(out, [view], keys=keys, tables_markdown=table, title=f"lossyds build {view.name}")
