"""Held-out attacks on a fresh clone: concurrent builds, lossless promises, duplicate folders,
damaged compressed shards, skip records across processes, one-sentence errors, and keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import BuildLockedError, ShardError, UsageError
from lossyds.sources import SourceRef
from lossyds.sources.sample import SAMPLE_ROOT
from lossyds.verify import verify

from ..fixtures import make_audio_folder, make_image_folder, sample_photo

PYTHON_CLI = [sys.executable, "-m", "lossyds.cli"]


def run_cli(*args: str, prelude: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `lossyds` command in a fresh interpreter; `prelude` runs first (e.g. to hide a package)."""
    code = f"{prelude}\nimport sys\nfrom lossyds.cli import main\nsys.argv = ['lossyds', *{list(args)!r}]\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_sentence(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The command failed with exit 1 or 2 and a single `error: ...` line on stderr, no traceback."""
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("photos"), copies=5)  # 30 images in 3 classes


# ----------------------------------------------------------- 1. two builds into one folder


def slow_build_args(source: Path, out: Path) -> list[str]:
    return [
        *("build", "--codec", "avif", "--quality", "30", "--dataset", "imagefolder"),
        *("--root", str(source), "--split", "train", "--shard-samples", "3", "--workers", "1", "--out", str(out)),
    ]


def test_concurrent_builds_into_one_folder_one_wins_the_other_refuses(photos, tmp_path, tally):
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [*PYTHON_CLI, *slow_build_args(photos, out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(2.0)  # the first is encoding by now, as in the attack (second started 2 s after the first)
    second = subprocess.run([*PYTHON_CLI, *slow_build_args(photos, out)], capture_output=True, text=True, timeout=600)
    first_err = first.communicate(timeout=600)[1]
    outcomes = sorted([(first.returncode, first_err), (second.returncode, second.stderr)])
    assert outcomes[0][0] == 0 and outcomes[1][0] == 1, outcomes
    lines = [line for line in outcomes[1][1].splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in outcomes[1][1], outcomes[1][1]
    assert "another lossyds process" in lines[0] and "pid" in lines[0], lines[0]
    verify(out)  # the manifest agrees with every shard's bytes
    tally["concurrent builds refused"] += 1


def test_a_held_folder_is_refused_naming_the_holder(photos, tmp_path):
    from lossyds.builder.lock import hold_folder

    out = tmp_path / "held"
    out.mkdir()
    with hold_folder(out, "test"):
        with pytest.raises(BuildLockedError, match=rf"pid {os.getpid()}"):
            build(BuildOptions(codec="png", out=out, dataset="imagefolder", root=photos, split="train", workers=1))
    # released: the same build now runs, and leaves no lock file behind
    build(BuildOptions(codec="png", out=out, dataset="imagefolder", root=photos, split="train", workers=1))
    assert not [p for p in out.iterdir() if "lock" in p.name]
    verify(out)


# ----------------------------------------------------------- 2. FLAC and sources beyond +-1


def test_flac_refuses_what_it_cannot_store_exactly(tmp_path, tally):
    speech, rate = soundfile.read(SAMPLE_ROOT / "speech" / "sample-speech-0000.flac", dtype="float32")
    root = tmp_path / "src"
    root.mkdir()
    loud = speech / np.abs(speech).max() * 2.5
    soundfile.write(root / "loud-float.wav", loud, rate, subtype="FLOAT")
    soundfile.write(root / "quiet-float.wav", speech * 0.5, rate, subtype="FLOAT")
    soundfile.write(root / "pcm16.wav", speech, rate, subtype="PCM_16")
    manifest = build(BuildOptions(codec="flac", out=tmp_path / "o", dataset="audiofolder", root=root, workers=1))
    tally["bad inputs tried"] += 1
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"loud-float"}
    assert "2.5" in skipped["loud-float"] and "clip" in skipped["loud-float"]
    decoded = {s["key"]: s["audio"] for s in lossyds.open_dataset(tmp_path / "o")}
    pcm16, _ = soundfile.read(root / "pcm16.wav", dtype="float32", always_2d=True)
    assert torch.equal(decoded["pcm16"], torch.from_numpy(pcm16.T.copy()))  # integer PCM: exact
    quiet, _ = soundfile.read(root / "quiet-float.wav", dtype="float32", always_2d=True)
    assert float((decoded["quiet-float"] - torch.from_numpy(quiet.T.copy())).abs().max()) <= 2.0**-23


# ----------------------------------------------------------- 3. a class folder that is a symlink


def test_symlinked_class_folder_is_not_added_twice(tmp_path, tally):
    root = tmp_path / "src"
    (root / "c0").mkdir(parents=True)
    for index, name in enumerate(["astronaut.png", "chelsea.png", "coffee.png"]):
        sample_photo(name).convert("RGB").resize((64, 48)).save(root / "c0" / f"img{index}.png")
    (root / "c1").symlink_to(root / "c0", target_is_directory=True)
    manifest = build(BuildOptions(codec="png", out=tmp_path / "o", dataset="imagefolder", root=root, workers=1))
    tally["duplicates caught"] += 3
    assert manifest["num_samples"] == 3
    labels = {s["key"]: int(s["label"]) for s in lossyds.open_dataset(tmp_path / "o")}
    assert labels == {"c0-img0": 0, "c0-img1": 0, "c0-img2": 0}
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"c1-img0", "c1-img1", "c1-img2"}
    assert all("c0/img" in reason and "same file" in reason for reason in skipped.values()), skipped


# ----------------------------------------------------------- 4. truncated .tar.gz, skips from workers


@pytest.fixture(scope="module")
def speech_gz(tmp_path_factory):
    root = make_audio_folder(tmp_path_factory.mktemp("speech"))
    out = tmp_path_factory.mktemp("speech-build") / "o"
    build(
        BuildOptions(
            codec="opus",
            out=out,
            codec_options={"kbps": 6},
            dataset="audiofolder",
            root=root,
            split="train",
            workers=1,
        )
    )
    return out


def test_truncated_gzip_shard_keeps_its_intact_prefix(speech_gz, tmp_path, tally):
    damaged = tmp_path / "damaged"
    shutil.copytree(speech_gz, damaged)
    (shard,) = damaged.glob("shard-*.tar.gz")
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * 0.7)])
    clean = {s["key"]: s["audio"] for s in lossyds.open_dataset(speech_gz)}
    dataset = lossyds.open_dataset(damaged, on_error="skip")
    with pytest.warns(UserWarning, match="truncated|damaged|ended"):
        kept = list(dataset)
    tally["corruptions detected"] += 1
    assert 0 < len(kept) < len(clean)
    assert [s["key"] for s in kept] == sorted(clean)[: len(kept)]  # the prefix, in order
    for sample in kept:
        assert torch.equal(sample["audio"], clean[sample["key"]])
    assert dataset.errors and shard.name in dataset.errors[0]
    with pytest.raises(ShardError, match=shard.name):
        verify(damaged)


def test_skips_in_worker_processes_reach_the_main_process(speech_gz, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(speech_gz, damaged)
    (shard,) = damaged.glob("shard-*.tar.gz")
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * 0.7)])
    loader = lossyds.make_loader(damaged, batch_size=2, cores=2, on_error="skip", collate_fn=list)
    assert loader.num_workers == 2  # audio decodes in worker processes
    served = sum(len(batch) for batch in loader)
    assert served > 0
    assert loader.dataset.errors and all(shard.name in error for error in loader.dataset.errors)
    assert loader.bits.summary()["samples"] == served


# ----------------------------------------------------------- 5. reproducible skip reasons


def test_manifest_with_skips_is_reproducible(tmp_path):
    root = tmp_path / "src"
    (root / "x").mkdir(parents=True)
    sample_photo("chelsea.png").convert("RGB").resize((64, 48)).save(root / "x" / "good.png")
    (root / "x" / "not-an-image.jpg").write_bytes(b"this is text, not a JPEG\n" * 20)
    (root / "x" / "empty.png").write_bytes(b"")
    manifests = []
    for run in range(2):
        out = tmp_path / f"o{run}"
        build(BuildOptions(codec="png", out=out, dataset="imagefolder", root=root, workers=1))
        manifests.append((out / "manifest.json").read_bytes())
    assert manifests[0] == manifests[1]
    reasons = [s["reason"] for s in json.loads(manifests[0])["skipped"]]
    assert len(reasons) == 2 and not any(" at 0x" in reason or "<_io" in reason for reason in reasons), reasons


# ----------------------------------------------------------- 6 and 9. audiofolder metadata


def speech_folder(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True)
    for key in ("sample-speech-0000", "sample-speech-0001"):
        shutil.copy(SAMPLE_ROOT / "speech" / f"{key}.flac", root / f"{key}.flac")
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_metadata_rows_are_checked_both_ways(tmp_path, tally):
    root = speech_folder(
        tmp_path / "src",
        ['{"file_name": "sample-speech-0000.flac", "text": "a"}', '{"file_name": "gone.flac", "text": "b"}'],
    )
    manifest = build(BuildOptions(codec="flac", out=tmp_path / "o", dataset="audiofolder", root=root, workers=1))
    tally["bad inputs tried"] += 2
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"gone", "sample-speech-0001"}, skipped
    assert "metadata.jsonl" in skipped["gone"] and "gone.flac" in skipped["gone"]
    assert "no row" in skipped["sample-speech-0001"]
    assert [s["text"] for s in lossyds.open_dataset(tmp_path / "o")] == ["a"]
    strict = run_cli(
        *("build", "--codec", "flac", "--dataset", "audiofolder", "--root", str(root), "--strict"),
        *("--out", str(tmp_path / "strict")),
    )
    assert_one_sentence(strict, "gone.flac")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"file_name": 5, "text": "a"}\n', "file_name"),
        (b'{"file_name": "sample-speech-0000.flac", "text": "caf\xe9"}\n', "UTF-8"),
        (b'["file_name"]\n', "JSON object"),
    ],
)
def test_bad_metadata_is_one_sentence_naming_the_line(tmp_path, content, fragment, tally):
    root = speech_folder(tmp_path / "src", [])
    (root / "metadata.jsonl").write_bytes(content)
    result = run_cli(
        "build", "--codec", "flac", "--dataset", "audiofolder", "--root", str(root), "--out", str(tmp_path / "o")
    )
    assert_one_sentence(result, "metadata.jsonl:1", fragment)
    assert not (tmp_path / "o").exists()
    tally["bad inputs tried"] += 1


# ----------------------------------------------------------- 7 and 8. missing extras, unwritable --out


@pytest.mark.parametrize(("metric", "package"), [("ssim", "pytorch_msssim"), ("stoi", "pystoi")])
def test_metric_without_its_package_is_one_sentence(tmp_path, metric, package):
    codec = ["--codec", "jpeg", "--quality", "50"] if metric == "ssim" else ["--codec", "opus", "--kbps", "6"]
    result = run_cli(
        "build",
        *codec,
        "--metrics",
        metric,
        "--out",
        str(tmp_path / "o"),
        prelude=f"import sys; sys.modules[{package!r}] = None  # as if the [eval] extra were not installed",
    )
    assert_one_sentence(result, metric, "lossyds[eval]")
    assert not (tmp_path / "o").exists()


def unwritable_outs(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    outs = [blocker / "out"]  # mkdir under a file: "Not a directory"
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o555)
        outs.append(locked / "new" / "out")
    elif not os.access("/sys", os.W_OK) or subprocess.run(["mkdir", "/sys/lossyds-probe"]).returncode != 0:
        outs.append(Path("/sys/lossyds-test/out"))  # a read-only file system (sysfs) for root
    return outs


def test_unwritable_out_is_one_sentence(photos, tmp_path):
    for out in unwritable_outs(tmp_path):
        result = run_cli(
            "build", "--codec", "png", "--dataset", "imagefolder", "--root", str(photos), "--split", "train",
            "--out", str(out),
        )  # fmt: skip
        assert_one_sentence(result, str(out))


# ----------------------------------------------------------- 10. keys


def test_keys_keep_what_distinguishes_files(tmp_path):
    root = tmp_path / "src"
    (root / "c0").mkdir(parents=True)
    photo = sample_photo("chelsea.png").convert("RGB").resize((64, 48))
    photo.save(root / "c0" / "写真.png")
    photo.rotate(90).save(root / "c0" / "画像.png")
    photo.save(root / "c0" / "anim.gif")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "c0" / "anim.webp", lossless=True)
    photo.save(root / "c0" / "a b.png")
    photo.save(root / "c0" / "a-b.png")
    manifest = build(BuildOptions(codec="png", out=tmp_path / "o", dataset="imagefolder", root=root, workers=1))
    assert manifest["num_samples"] == 6 and manifest["num_skipped"] == 0
    samples = {s["key"]: s for s in lossyds.open_dataset(tmp_path / "o")}
    assert {"c0-写真", "c0-画像", "c0-anim-gif", "c0-anim-webp"} <= set(samples), sorted(samples)
    assert len([key for key in samples if key.startswith("c0-a-b")]) == 2
    assert not any("." in key or "/" in key for key in samples)
    import webdataset

    urls = [str(tmp_path / "o" / shard["path"]) for shard in manifest["shards"]]
    assert {s["__key__"] for s in webdataset.WebDataset(urls, shardshuffle=False, empty_check=False)} == set(samples)
    rebuilt = build(BuildOptions(codec="png", out=tmp_path / "again", dataset="imagefolder", root=root, workers=1))
    assert [s["sha256"] for s in rebuilt["shards"]] == [s["sha256"] for s in manifest["shards"]]  # stable keys


def test_a_true_key_collision_names_both_paths():
    from lossyds.builder.pipeline import check_unique_keys

    refs = [SourceRef("k", "a/one.jpg"), SourceRef("j", "b.jpg"), SourceRef("k", "a/two.jpg")]
    with pytest.raises(UsageError, match=r"a/one\.jpg.*a/two\.jpg"):
        check_unique_keys(refs)


# ----------------------------------------------------------- 13. the bit meter under any collate


@pytest.mark.parametrize("cores", [0, 2])
def test_bit_meter_counts_samples_whatever_the_collate(speech_gz, cores):
    manifest = json.loads((speech_gz / "manifest.json").read_text())
    loader = lossyds.make_loader(speech_gz, batch_size=None, collate_fn=list, cores=cores)
    items = list(loader)
    assert len(items) == manifest["num_samples"]
    summary = loader.bits.summary()
    assert summary["samples"] == manifest["num_samples"]
    assert summary["payload_bits"] == manifest["bits"]["payload"]


def test_worker_skip_records_are_not_repeated_across_epochs(speech_gz, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(speech_gz, damaged)
    (shard,) = damaged.glob("shard-*.tar.gz")
    shard.write_bytes(shard.read_bytes()[: int(shard.stat().st_size * 0.7)])
    dataset = lossyds.open_dataset(damaged, on_error="skip")
    loader = lossyds.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)  # workers restart each epoch
    counts = []
    for _epoch in range(3):
        list(loader)
        counts.append(len(dataset.errors))
    assert counts[0] > 0 and counts == [counts[0] * (epoch + 1) for epoch in range(3)], counts
