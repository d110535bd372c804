"""`lossyds report`'s index.html and `lossyds info --html`: built from real builds of the
embedded sample (jpeg q5, webp q0, png; opus 6, mp3 32, flac), checked in a real headless
Chromium (every image decoded, every audio element reports its sample's duration, no request
left the folder), its numbers against the manifests and the stored sample metadata; and the
plots' one colour per codec, lossless reference lines and log-axis tick labels."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lossyds.cli import main
from lossyds.errors import UsageError
from lossyds.plot_style import codec_style
from lossyds.report import collect, draw, lossless_metrics, make_report
from lossyds.report_samples import (
    MAX_AUDIO_SECONDS,
    OVERVIEW_MAX_HEIGHT,
    OVERVIEW_WIDTH,
    read_samples,
    write_audio_views,
    write_image_views,
)
from lossyds.study_report import build_facts

from .browser import Browser, find_chromium

pytest.importorskip("matplotlib")

IMAGE_BUILDS = {"jpeg": {}, "webp": {}, "png": {}}
AUDIO_BUILDS = {"opus": {}, "mp3": {}, "flac": {}}

# Awaits every <audio>'s metadata and every <img>'s decoding, then hands back what the test checks.
PAGE_CHECK = """(async () => {
  const audios = [...document.querySelectorAll('audio')];
  await Promise.all(audios.map(a => a.readyState >= 1 || a.error ? null : new Promise(done => {
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
  })));
  await Promise.all([...document.images].map(i => i.complete ? null : new Promise(done => {
    i.addEventListener('load', done, {once: true});
    i.addEventListener('error', done, {once: true});
  })));
  return {
    images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, height: i.naturalHeight})),
    audio: audios.map(a => ({src: a.getAttribute('src'), duration: a.duration, error: a.error && a.error.code})),
  };
})()"""


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the session (skips, saying why, where none is installed)."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (.ci/system-packages installs it where it may, as root)")
    chromium = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def image_builds(built):
    return {codec: built(codec, metrics=["psnr", "ssim"]) for codec in IMAGE_BUILDS}


@pytest.fixture(scope="module")
def audio_builds(built):
    return {codec: built(codec, metrics=["si-sdr", "psnr"]) for codec in AUDIO_BUILDS}


@pytest.fixture(scope="module")
def image_report(image_builds, tmp_path_factory):
    out = tmp_path_factory.mktemp("image-report")
    make_report(list(image_builds.values()), out, page=True)
    return out


@pytest.fixture(scope="module")
def audio_report(audio_builds, tmp_path_factory):
    out = tmp_path_factory.mktemp("audio-report")
    make_report(list(audio_builds.values()), out, page=True)
    return out


class PageParts(HTMLParser):
    """The builds table's rows, the gallery's captions and headings, and every src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.cells: list[list[str]] = []
        self.captions: list[dict[str, str]] = []
        self.caption_texts: list[str] = []
        self.headings: list[str] = []
        self.sources: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "src" in attributes:
            self.sources.append(attributes["src"])
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.sources.append(f"<{tag}>")
        if tag == "tr" and attributes.get("class") == "build":
            self.rows.append(attributes)
            self.cells.append([])
        elif tag == "td" and self.rows and self._in != "caption":
            self._in = "cell"
            self.cells[-1].append("")
        elif tag == "figcaption":
            self._in = "caption"
            self.captions.append(attributes)
            self.caption_texts.append("")
        elif tag == "h3":
            self._in = "heading"
            self.headings.append("")

    def handle_endtag(self, tag):
        if (tag, self._in) in (("td", "cell"), ("figcaption", "caption"), ("h3", "heading")):
            self._in = None

    def handle_data(self, data):
        if self._in == "cell":
            self.cells[-1][-1] += data
        elif self._in == "caption":
            self.caption_texts[-1] += data
        elif self._in == "heading":
            self.headings[-1] += data


def parse(page: Path) -> PageParts:
    parts = PageParts()
    parts.feed(page.read_text())
    return parts


def stored_meta(build: Path) -> dict[str, dict]:
    """key -> its KEY.json, read with tarfile (not through lossyds)."""
    found = {}
    for shard in json.loads((build / "manifest.json").read_text())["shards"]:
        with tarfile.open(build / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    found[meta["key"]] = meta
    return found


def check_in_browser(browser: Browser, folder: Path) -> dict:
    """Load folder/index.html from a file URL; every image decoded and no request left the folder."""
    value, requests = browser.load((folder / "index.html").resolve().as_uri(), PAGE_CHECK)
    assert value["images"], "the page shows no image"
    undecoded = [image["src"] for image in value["images"] if not image["width"] > 0]
    assert not undecoded, f"images that did not decode: {undecoded}"
    prefix = folder.resolve().as_uri() + "/"
    # data: URLs fetch nothing (Chromium's own media-control icons are such); the page's sources hold none.
    outside = [url for url in requests if not url.startswith((prefix, "data:"))]
    assert requests and not outside, f"requests that left the folder: {outside}"
    return value


def test_the_browser_check_sees_a_request_that_leaves_the_folder(browser, tmp_path):
    """The harness itself: an image from elsewhere is seen as a request and as undecoded."""
    (tmp_path / "index.html").write_text('<img src="http://127.0.0.1:9/x.png"><img src="missing.png">')
    value, requests = browser.load((tmp_path / "index.html").as_uri(), PAGE_CHECK)
    assert "http://127.0.0.1:9/x.png" in requests
    assert [image["width"] for image in value["images"]] == [0, 0]


def test_image_report_page_decodes_in_chromium_and_names_the_manifests_numbers(browser, image_builds, image_report):
    page = image_report / "index.html"
    parts = parse(page)
    assert "<script>" not in parts.sources and all(not s.startswith(("http", "data:", "//")) for s in parts.sources)
    check_in_browser(browser, image_report)
    # Builds table, in gallery order: the lossless source first, then lossy builds by codec and rate.
    codec_of = {path.name: codec for codec, path in image_builds.items()}
    assert [codec_of[row["data-build"]] for row in parts.rows] == ["png", "jpeg", "webp"]
    for row, cells in zip(parts.rows, parts.cells):
        manifest = json.loads((image_builds[codec_of[row["data-build"]]] / "manifest.json").read_text())
        assert int(row["data-payload-bits"]) == manifest["bits"]["payload"]
        assert float(row["data-rate"]) == manifest["bits"]["bpp"]
        assert cells[3] == str(manifest["bits"]["payload"]) and cells[5] == f"{manifest['bits']['bpp']:.4f}"
        assert cells[4] == f"{manifest['bits']['per_sample_mean']:.0f}"
    assert parts.cells[0][6] == "lossless"  # png's PSNR is infinite
    # Gallery: every build for every shown key, each caption with the sample's stored bits, rate and metrics.
    assert len(parts.headings) == 3 and len(parts.captions) == 3 * len(IMAGE_BUILDS)
    stored = {path.name: stored_meta(path) for path in image_builds.values()}
    for index, (caption, text) in enumerate(zip(parts.captions, parts.caption_texts)):
        key = parts.headings[index // len(IMAGE_BUILDS)]
        meta = stored[caption["data-build"]][key]
        assert int(caption["data-payload-bits"]) == meta["payload_bits"]
        assert (
            f"{meta['payload_bits']} bits · {meta['payload_bits'] / (meta['height'] * meta['width']):.4f} bpp" in text
        )
        assert f"ssim {meta['metrics']['ssim']:.3f}" in text
    assert "psnr lossless" in parts.caption_texts[0]
    for image in (image_report / "images").iterdir():
        assert image.stat().st_size < 600_000, f"{image.name} is over the per-image limit"


def test_audio_report_plays_every_sample_for_its_duration(browser, audio_builds, audio_report):
    parts = parse(audio_report / "index.html")
    value = check_in_browser(browser, audio_report)
    codec_of = {path.name: codec for codec, path in audio_builds.items()}
    assert [codec_of[row["data-build"]] for row in parts.rows] == ["flac", "mp3", "opus"]
    for row, cells in zip(parts.rows, parts.cells):
        manifest = json.loads((audio_builds[codec_of[row["data-build"]]] / "manifest.json").read_text())
        assert int(row["data-payload-bits"]) == manifest["bits"]["payload"]
        assert cells[5] == f"{manifest['bits']['kbps']:.4f}"
    stored = {path.name: stored_meta(path) for path in audio_builds.values()}
    assert len(value["audio"]) == len(parts.captions) == 3 * len(AUDIO_BUILDS)
    for index, (player, caption) in enumerate(zip(value["audio"], parts.captions)):
        key = parts.headings[index // len(AUDIO_BUILDS)]
        meta = stored[caption["data-build"]][key]
        assert player["error"] is None, player
        seconds = min(meta["num_frames"] / meta["sample_rate"], MAX_AUDIO_SECONDS)
        assert player["duration"] == pytest.approx(seconds, abs=0.02), (player, key)
        kbps = meta["payload_bits"] / (meta["num_frames"] / meta["sample_rate"]) / 1000
        assert f"{meta['payload_bits']} bits · {kbps:.4f} kbps" in parts.caption_texts[index]


def test_chosen_samples_and_a_separate_source(audio_builds, tmp_path):
    out = tmp_path / "report"
    arguments = ["report", str(audio_builds["opus"]), str(audio_builds["mp3"]), "--out", str(out)]
    done = CliRunner().invoke(
        main, arguments + ["--samples", "sample-speech-0003", "--source", str(audio_builds["flac"])]
    )
    assert done.exit_code == 0, done.output
    assert "index.html" in done.output
    parts = parse(out / "index.html")
    assert parts.headings == ["sample-speech-0003"]
    assert [c["data-build"] for c in parts.captions] == [audio_builds[c].name for c in ("flac", "mp3", "opus")]
    with pytest.raises(UsageError, match="no sample 'nope'"):
        make_report([audio_builds["opus"]], tmp_path / "r2", samples=["nope"], page=True)
    with pytest.raises(UsageError, match="not lossless"):
        make_report([audio_builds["flac"]], tmp_path / "r3", source=audio_builds["opus"], page=True)


def test_only_the_shards_holding_the_shown_samples_are_opened(built, tmp_path):
    build = shutil.copytree(built("jpeg", shard_samples=2), tmp_path / "jpeg")
    manifest = json.loads((build / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3
    for shard in manifest["shards"][1:]:
        (build / shard["path"]).unlink()  # a reader that opened them would fail
    samples = read_samples(build, manifest, ["sample-photo-0001"])
    assert samples["sample-photo-0001"].signal.shape[0] == 3


def test_a_long_sample_is_cut_to_the_page_limit(tmp_path):
    rate = 16000
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (1, int(rate * (MAX_AUDIO_SECONDS + 3)))).astype(np.float32)
    sound, _, seconds = write_audio_views(noise, rate, rate / 2, tmp_path / "audio", "long")
    import soundfile

    assert seconds == MAX_AUDIO_SECONDS == soundfile.info(tmp_path / sound).duration


def test_image_views_fit_one_width_and_a_height_limit(tmp_path):
    """Whole images are OVERVIEW_WIDTH wide, tall ones OVERVIEW_MAX_HEIGHT high; the crop is 1:1."""
    from PIL import Image

    rng = np.random.default_rng(0)
    wide, tall = (
        (OVERVIEW_WIDTH, round(300 * OVERVIEW_WIDTH / 500)),
        (round(200 * OVERVIEW_MAX_HEIGHT / 3000), OVERVIEW_MAX_HEIGHT),
    )
    for height, width, fits in ((300, 500, wide), (3000, 200, tall), (100, 100, (OVERVIEW_WIDTH, OVERVIEW_WIDTH))):
        pixels = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
        whole, crop = write_image_views(pixels, (10, 20, 64), tmp_path, f"i{height}x{width}")
        assert Image.open(tmp_path.parent / whole).size == fits
        cropped = np.moveaxis(np.asarray(Image.open(tmp_path.parent / crop)), -1, 0)
        assert np.array_equal(cropped, pixels[:, 10:74, 20:84])


def test_info_html_checks_one_build_by_eye(browser, audio_builds, tmp_path):
    out = tmp_path / "page"
    done = CliRunner().invoke(main, ["info", str(audio_builds["opus"]), "--html", str(out)])
    assert done.exit_code == 0, done.output
    assert "index.html" in done.output
    parts = parse(out / "index.html")
    assert [row["data-build"] for row in parts.rows] == [audio_builds["opus"].name] and len(parts.captions) == 3
    value = check_in_browser(browser, out)
    assert len(value["audio"]) == 3 and all(player["duration"] > 1 for player in value["audio"])


def test_a_codec_keeps_its_colour_in_every_panel(built, image_builds):
    """The issue's case: jpeg q5/q30, webp q0 and png scored by psnr and ssim (png has no psnr)."""
    builds = [image_builds["jpeg"], built("jpeg", rate={"quality": 30}, metrics=["psnr", "ssim"])]
    builds += [image_builds["webp"], image_builds["png"]]
    rows = [collect(build_facts(b)) | {"lossless_metrics": lossless_metrics(b)} for b in builds]
    figure = draw(rows, ["psnr", "ssim"], "image")
    colours: dict[str, set[str]] = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            if len(line.get_xdata()) and not line.get_label().startswith("_") and "lossless" not in line.get_label():
                colours.setdefault(line.get_label(), set()).add(str(line.get_color()))
    assert set(colours) == {"jpeg", "webp"}
    for codec, seen in colours.items():
        assert seen == {codec_style(codec).color}, (codec, seen)
    assert codec_style("jpeg").color != codec_style("webp").color
    # png: a labelled reference line at SSIM 1 (not a point), and a legend entry for its infinite PSNR
    psnr_axis, ssim_axis = figure.axes
    reference = [line for line in ssim_axis.get_lines() if line.get_label().startswith("png (lossless")]
    assert len(reference) == 1 and set(reference[0].get_ydata()) == {1.0}
    assert any("infinite" in text.get_text() for text in psnr_axis.get_legend().get_texts())
    assert max(max(line.get_xdata()) for line in ssim_axis.get_lines() if line is not reference[0]) < 1.0


def test_log_axis_tick_labels_do_not_overlap():
    rows = [
        {"codec": codec, "rate": rate, "scores": {}, "quality": {"psnr": 20 + rate}, "modality": "image"}
        for codec, rate in [("jpeg", 0.02), ("jpeg", 0.3), ("jpeg", 4.0), ("webp", 0.05), ("webp", 30.0)]
    ]
    figure = draw(rows, ["psnr"], "image")
    figure.canvas.draw()
    axis = figure.axes[0]
    assert axis.get_xscale() == "log"
    renderer = figure.canvas.get_renderer()
    labels = [t for t in axis.get_xticklabels(which="both") if t.get_text() and t.get_visible()]
    labels = [t for t in labels if axis.get_xlim()[0] <= t.get_position()[0] <= axis.get_xlim()[1]]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.x0)
    assert len(boxes) >= 3
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, "tick labels overlap"


def test_report_table_reads_lossless_for_an_infinite_psnr(image_builds, image_report):
    name = image_builds["png"].name
    png_row = next(
        line for line in (image_report / "report.md").read_text().splitlines() if line.startswith(f"| {name} ")
    )
    assert re.search(r"\| lossless \| 1\.0000 \|$", png_row), png_row


def test_a_neural_codec_is_decoded_to_a_playable_file(browser, built, audio_builds, tmp_path):
    """EnCodec with random weights (random:0: no pretrained weights here), beside FLAC."""
    pytest.importorskip("encodec")
    neural = built("encodec", rate={"kbps": 6, "weights": "random:0"}, limit=1)  # one utterance keeps it quick
    make_report([neural, audio_builds["flac"]], tmp_path / "report", samples=["sample-speech-0000"], page=True)
    value = check_in_browser(browser, tmp_path / "report")
    meta = stored_meta(neural)["sample-speech-0000"]
    assert [player["duration"] for player in value["audio"]] == pytest.approx(
        [meta["num_frames"] / meta["sample_rate"]] * 2, abs=0.02
    )


def test_study_layout_page_holds_its_figures(browser, image_builds, audio_builds, tmp_path):
    """Builds of several datasets (photos and speech) share no sample: figures and tables only."""
    paths = make_report([image_builds["jpeg"], audio_builds["opus"]], tmp_path / "study", layout="study", page=True)
    parts = parse(tmp_path / "study" / "index.html")
    assert paths[-1].name == "index.html" and not parts.captions
    assert set(parts.sources) == {p.name for p in paths if p.suffix == ".png"}
    check_in_browser(browser, tmp_path / "study")


def test_builds_without_scores_still_get_the_page(built, tmp_path):
    """No eval result and no metric: no figure, but the page with the bits and the decoded samples."""
    builds = [built("jpeg"), built("webp")]
    result = CliRunner().invoke(main, ["report", *map(str, builds), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "r" / "report.png").exists()
    page = (tmp_path / "r" / "index.html").read_text()
    for build in builds:
        payload = json.loads((build / "manifest.json").read_text())["bits"]["payload"]
        assert str(payload) in page
    assert "report.png" not in page and "<img" in page
    with pytest.raises(UsageError, match="no eval"):
        make_report(builds, tmp_path / "plain")  # without the page there is nothing to draw
