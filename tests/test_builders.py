"""Every dataset builder on fixtures in its exact official layout, built and loaded back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import lossyds
from lossyds.builder import BuildOptions, build, merge
from lossyds.errors import UsageError
from lossyds.sources import get as get_builder
from lossyds.sources.cityscapes import add_train_ids, train_ids

from .fixtures import (
    MUSDB_STEMS,
    make_cityscapes,
    make_imagenet,
    make_imagenet_devkit,
    make_librispeech,
    make_musdb_hq,
    make_musdb_stem_mp4,
)


def run_build(out: Path, codec: str, dataset: str, root: Path, split: str, **extra) -> dict:
    rate = extra.pop(
        "rate",
        {"jpeg": {"quality": 30}, "opus": {"kbps": 12}, "webp": {"quality": 20}, "mp3": {"kbps": 64}}.get(codec, {}),
    )
    return build(
        BuildOptions(
            codec=codec,
            out=out,
            codec_options=rate,
            dataset=dataset,
            root=root,
            split=split,
            workers=extra.pop("workers", 1),
            **extra,
        )
    )


def test_imagenet_train_with_cmyk_gray_and_png_named_jpeg(tmp_path):
    make_imagenet(tmp_path / "in")
    manifest = run_build(tmp_path / "out", "jpeg", "imagenet", tmp_path / "in", "train")
    assert manifest["num_samples"] == 9 and manifest["num_skipped"] == 0
    samples = {s["key"]: s for s in lossyds.open_dataset(tmp_path / "out")}
    assert samples["n01440764_1"]["label"] == 0 and samples["n04266014_1"]["label"] == 2
    assert samples["n02123045_1"]["wnid"] == "n02123045" and samples["n02123045_1"]["class_name"] == "tabby, tabby cat"
    assert samples["n04266014_3"]["image"].shape[0] == 3  # CMYK -> RGB
    assert samples["n02123045_3"]["image"].shape[0] == 1  # grayscale stays grayscale
    assert samples["n01440764_3"]["image"].shape == (3, 120, 120)  # the PNG named .JPEG


def test_imagenet_flat_val_labels_from_csv_and_devkit_agree(tmp_path):
    truth = make_imagenet(tmp_path / "in")
    builder = get_builder("imagenet", root=tmp_path / "in", split="val", modality="image")
    from_csv = {r.key: r.targets["label"] for r in builder.refs()}
    assert from_csv == truth
    os.remove(tmp_path / "in" / "LOC_val_solution.csv")
    os.remove(tmp_path / "in" / "LOC_synset_mapping.txt")
    with pytest.raises(UsageError, match="devkit"):
        builder.refs()
    make_imagenet_devkit(tmp_path / "in", truth)
    from_devkit = {r.key: (r.targets["label"], r.targets["class_name"]) for r in builder.refs()}
    assert {k: v[0] for k, v in from_devkit.items()} == truth
    assert from_devkit["ILSVRC2012_val_00000001"][1] == "space shuttle"


def test_imagenet_kaggle_layout(tmp_path):
    base = tmp_path / "kaggle"
    make_imagenet(base / "ILSVRC" / "Data" / "CLS-LOC")
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.move(base / "ILSVRC" / "Data" / "CLS-LOC" / name, base / name)
    records = get_builder("imagenet", root=base, split="val", modality="image").refs()
    assert len(records) == 4


def test_cityscapes_masks_come_back_pixel_identical(tmp_path):
    labels = make_cityscapes(tmp_path / "cs")
    manifest = run_build(tmp_path / "out", "webp", "cityscapes", tmp_path / "cs", "val")
    assert manifest["num_samples"] == 4
    samples = list(lossyds.open_dataset(tmp_path / "out", transform=add_train_ids))
    for sample in samples:
        expected = labels[sample["key"]]
        assert sample["mask"].dtype == torch.uint8 and torch.equal(sample["mask"][0], torch.from_numpy(expected))
        assert sample["instances"].shape == (1, 128, 256)
        assert torch.equal((sample["instances"][0].to(torch.int32) // 1000).to(torch.uint8), sample["mask"][0])
        assert sample["image"].shape == (3, 128, 256) and sample["city"] in ("frankfurt", "lindau")
    ids = train_ids(torch.tensor([0, 7, 8, 11, 21, 23, 24, 26, 33, 1], dtype=torch.uint8))
    assert ids.tolist() == [255, 0, 1, 2, 8, 10, 11, 13, 18, 255]
    assert set(torch.unique(samples[0]["train_ids"]).tolist()) <= set(range(19)) | {255}


def test_librispeech_transcripts_round_trip_and_missing_line_is_skipped(tmp_path):
    expected = make_librispeech(tmp_path / "ls")
    manifest = run_build(tmp_path / "out", "opus", "librispeech", tmp_path / "ls", "dev-clean")
    assert manifest["num_samples"] + manifest["num_skipped"] == len(expected) == 5
    (skip,) = manifest["skipped"]
    assert expected[skip["key"]] is None and "transcript" in skip["reason"]
    for sample in lossyds.open_dataset(tmp_path / "out"):
        assert sample["text"] == expected[sample["key"]]
        speaker, chapter, _ = sample["key"].split("-")
        assert (sample["speaker_id"], sample["chapter_id"]) == (int(speaker), int(chapter))
    with pytest.raises(UsageError, match="no split"):
        get_builder("librispeech", root=tmp_path / "ls", split="dev_clean", modality="audio")


def test_musdb_hq_chunks_keep_exact_offsets_and_lossless_aligned_stems(tmp_path):
    track = make_musdb_hq(tmp_path / "musdb")
    manifest = run_build(
        tmp_path / "out", "mp3", "musdb", tmp_path / "musdb", "test", source_options={"chunk_seconds": 2.0}
    )
    sources = {s: soundfile.read(track / f"{s}.wav", dtype="float32", always_2d=True)[0].T for s in MUSDB_STEMS}
    total = sources["mixture"].shape[1]
    assert manifest["num_samples"] == 3 and manifest["dataset"]["options"] == {
        "chunk_seconds": 2.0,
        "compress_stems": False,
    }
    samples = sorted(lossyds.open_dataset(tmp_path / "out"), key=lambda s: s["start_frame"])
    assert [s["start_frame"] for s in samples] == [0, 88200, 176400]
    assert sum(s["num_frames"] for s in samples) == total
    for sample in samples:
        start, frames = sample["start_frame"], sample["num_frames"]
        assert sample["audio"].shape == (2, frames)
        for stem in MUSDB_STEMS[1:]:
            assert np.array_equal(
                sample["stems"][stem].numpy(), sources[stem][:, start : start + frames]
            )  # lossless and aligned
        assert np.allclose(
            sum(sample["stems"].values()).numpy(), sources["mixture"][:, start : start + frames], atol=2e-4
        )


def test_musdb_compress_stems_counts_their_bits(tmp_path):
    make_musdb_hq(tmp_path / "musdb")
    manifest = run_build(
        tmp_path / "out",
        "opus",
        "musdb",
        tmp_path / "musdb",
        "test",
        rate={"kbps": 24},
        source_options={"compress_stems": True},
    )
    (sample,) = list(lossyds.open_dataset(tmp_path / "out"))
    assert set(sample["stems"]) == {"drums", "bass", "other", "vocals"}
    assert all(s.shape == sample["audio"].shape for s in sample["stems"].values())
    import tarfile

    with tarfile.open(next((tmp_path / "out").glob("shard-000000.tar*"))) as tar:
        opus_bytes = sum(m.size for m in tar.getmembers() if m.name.endswith(".opus"))
        assert len([m for m in tar.getmembers() if m.name.endswith(".opus")]) == 5
    assert manifest["bits"]["payload"] == opus_bytes * 8 == sample["payload_bits"]


def test_musdb_stem_mp4_reads_all_five_streams(tmp_path):
    make_musdb_stem_mp4(tmp_path / "musdb")
    manifest = run_build(
        tmp_path / "out", "flac", "musdb", tmp_path / "musdb", "train", source_options={"chunk_seconds": 3.0}
    )
    assert manifest["num_samples"] == 2
    samples = sorted(lossyds.open_dataset(tmp_path / "out"), key=lambda s: s["start_frame"])
    for sample in samples:
        assert sample["sample_rate"] == 44100 and set(sample["stems"]) == {"drums", "bass", "other", "vocals"}
        mixture = sample["audio"]
        stem_sum = sum(sample["stems"].values())
        # AAC-coded stems still sum (closely) to the AAC-coded mixture: streams stay aligned.
        assert torch.corrcoef(torch.stack([mixture[0], stem_sum[0]]))[0, 1] > 0.95


def test_builder_options_are_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(UsageError, match="takes no option chunk_seconds"):
        get_builder("sample", root=None, split="speech", modality="audio", chunk_seconds=2)


def test_bpp_target_is_met_within_3_percent(tmp_path):
    for codec in ("jpeg", "webp"):
        manifest = build(BuildOptions(codec=codec, out=tmp_path / codec, codec_options={"bpp": 0.25}, workers=2))
        assert abs(manifest["bits"]["bpp"] / 0.25 - 1) < 0.03, manifest["bits"]["bpp"]
        import tarfile

        with tarfile.open(tmp_path / codec / "shard-000000.tar") as tar:
            metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
        qualities = [m["codec_settings"]["quality"] for m in metas]
        assert len(metas) == 6 and len(set(qualities)) > 1  # chosen per image


def test_opus_target_kbps_is_met_within_3_percent(tmp_path):
    manifest = build(BuildOptions(codec="opus", out=tmp_path / "o", codec_options={"target_kbps": 6}, workers=2))
    assert abs(manifest["bits"]["kbps"] / 6 - 1) < 0.03, manifest["bits"]["kbps"]
    for sample in lossyds.open_dataset(tmp_path / "o"):
        assert sample["audio"].shape == (1, sample["num_frames"])
    with pytest.raises(UsageError, match="takes no option target_kbps"):
        build(BuildOptions(codec="mp3", out=tmp_path / "m", codec_options={"target_kbps": 6}))


def keys_and_bits(directory: Path) -> tuple[Counter, int]:
    manifest = json.loads((directory / "manifest.json").read_text())
    keys = Counter(s["key"] for s in lossyds.open_dataset(directory))
    return keys, manifest["bits"]["payload"]


def test_three_part_build_merges_to_the_single_build(tmp_path):
    make_imagenet(tmp_path / "in")
    single = run_build(tmp_path / "single", "jpeg", "imagenet", tmp_path / "in", "train", shard_samples=2)
    args = [
        "--codec",
        "jpeg",
        "--quality",
        "30",
        "--dataset",
        "imagenet",
        "--root",
        str(tmp_path / "in"),
        "--split",
        "train",
        "--shard-samples",
        "2",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "parts"),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", *args, "--part", "0/3"], check=True, capture_output=True, env=env
    )
    for task in (1, 2):  # SLURM array tasks 1..2 of --array=0-2, variables set by hand
        slurm = {**env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "3"}
        subprocess.run(
            [sys.executable, "-m", "lossyds.cli", "build", *args], check=True, capture_output=True, env=slurm
        )
    merged = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "merge", str(tmp_path / "parts")], capture_output=True, text=True
    )
    assert merged.returncode == 0, merged.stderr
    assert keys_and_bits(tmp_path / "parts") == keys_and_bits(tmp_path / "single")
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert manifest["dataset"]["source_root_fingerprint"] == single["dataset"]["source_root_fingerprint"]
    assert manifest["num_samples"] == single["num_samples"] and not (tmp_path / "parts" / "parts").exists()
    ok = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "verify", "--decode", str(tmp_path / "parts")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def test_merge_combines_metric_means(tmp_path):
    make_imagenet(tmp_path / "in")
    for index in range(2):
        run_build(tmp_path / "p", "jpeg", "imagenet", tmp_path / "in", "train", part=(index, 2), metrics=["psnr"])
    merged = merge(tmp_path / "p")
    single = run_build(tmp_path / "s", "jpeg", "imagenet", tmp_path / "in", "train", metrics=["psnr"])
    assert merged["metrics"]["psnr"]["count"] == single["metrics"]["psnr"]["count"] == 9
    assert merged["metrics"]["psnr"]["mean"] == pytest.approx(single["metrics"]["psnr"]["mean"])


def test_merge_refuses_missing_parts(tmp_path):
    make_imagenet(tmp_path / "in")
    run_build(tmp_path / "p", "jpeg", "imagenet", tmp_path / "in", "train", part=(1, 3))
    from lossyds.errors import BuildStateError

    with pytest.raises(BuildStateError, match="0, 2 of 3"):
        merge(tmp_path / "p")


def test_torchrun_two_processes_build_disjoint_parts(tmp_path):
    make_imagenet(tmp_path / "in")
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        sys.executable,
        "-m",
        "lossyds.cli",
        "build",
        "--codec",
        "jpeg",
        "--quality",
        "30",
        "--dataset",
        "imagenet",
        "--root",
        str(tmp_path / "in"),
        "--split",
        "train",
        "--out",
        str(tmp_path / "tr"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    parts = sorted(p.name for p in (tmp_path / "tr" / "parts").iterdir())
    assert parts == ["part-00000-of-00002", "part-00001-of-00002"]
    merge(tmp_path / "tr")
    run_build(tmp_path / "single", "jpeg", "imagenet", tmp_path / "in", "train")
    assert keys_and_bits(tmp_path / "tr") == keys_and_bits(tmp_path / "single")


def test_spec_grid_runs_available_entries_and_names_the_rest(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "runs:\n"
        "  - {name: photos-jpeg-q5, dataset: sample, split: photos, codec: jpeg, quality: 5}\n"
        "  - {name: speech-opus-6k, dataset: sample, split: speech, codec: opus, kbps: 6}\n"
        "  - {name: photos-hific, dataset: sample, split: photos, codec: hific, quality: 1}\n"
    )
    fail = subprocess.run(
        [sys.executable, "-m", "lossyds.cli", "build", "--spec", str(spec), "--out", str(tmp_path / "grid")],
        capture_output=True,
        text=True,
    )
    assert fail.returncode == 2 and "photos-hific" in fail.stderr and "--skip-unavailable" in fail.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--spec",
            str(spec),
            "--out",
            str(tmp_path / "grid"),
            "--skip-unavailable",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "skip photos-hific" in ok.stdout and "built photos-jpeg-q5" in ok.stdout
    assert (tmp_path / "grid" / "speech-opus-6k" / "manifest.json").is_file()
    from lossyds.builder.spec import load_spec

    committed = load_spec("mpq-2024")  # the study lossyds ships, by name
    assert {r["codec"] for r in committed["runs"]} >= {
        "jpeg",
        "webp",
        "mbt2018",
        "msillm",
        "mp3",
        "opus",
        "encodec-48khz",
    }
    from lossyds import codecs

    assert {r["codec"] for r in committed["runs"]} <= set(codecs.available())
