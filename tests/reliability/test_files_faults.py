"""Faults in source folders, compressed shards and bitstreams (issue 26): symlinked folders and
files, a flipped byte inside a tar.gz or tar.zst shard, metadata.jsonl paths and byte-order
marks, and decode errors that carry the decoder's own reason."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest
import zstandard

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import ShardError
from lossyds.sources.sample import SAMPLE_ROOT
from lossyds.verify import verify

from ..conftest import build_sample
from ..fixtures import make_cityscapes, replace_bitstream, sample_photo
from .test_attacks import assert_one_sentence, run_cli

# ----------------------------------------------------------- 6. the real path wins over a symlinked one


def photo_class(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name, photo in zip(names, ["astronaut.png", "chelsea.png", "coffee.png"]):
        sample_photo(photo).convert("RGB").resize((48, 32)).save(folder / name)


@pytest.mark.parametrize("link", ["alink", "zlink"])  # sorts before and after the real folder
def test_real_class_folder_wins_over_a_symlinked_one(tmp_path, link, tally):
    root = tmp_path / "src"
    photo_class(root / "train" / "nature", ["a.png", "b.png", "c.png"])
    (root / "train" / link).symlink_to("nature", target_is_directory=True)
    manifest = build(
        BuildOptions(codec="png", out=tmp_path / "o", dataset="imagefolder", root=root, split="train", workers=1)
    )
    tally["duplicates caught"] += 3
    samples = {s["key"]: s for s in lossyds.open_dataset(tmp_path / "o")}
    assert sorted(samples) == ["nature-a", "nature-b", "nature-c"]
    assert {s["class_name"] for s in samples.values()} == {"nature"}
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert sorted(skipped) == [f"{link}-a", f"{link}-b", f"{link}-c"]
    assert all("nature/" in reason and "symlink" in reason for reason in skipped.values()), skipped


def test_real_file_wins_over_a_symlinked_file(tmp_path, tally):
    root = tmp_path / "src"
    photo_class(root / "nature", ["m.png"])
    (root / "nature" / "a.png").symlink_to("m.png")  # sorts before the real file
    (root / "nature" / "z.png").symlink_to("m.png")  # and after it
    manifest = build(BuildOptions(codec="png", out=tmp_path / "o", dataset="imagefolder", root=root, workers=1))
    tally["duplicates caught"] += 2
    assert [s["key"] for s in lossyds.open_dataset(tmp_path / "o")] == ["nature-m"]
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert sorted(skipped) == ["nature-a", "nature-z"]
    assert all("nature/m.png" in reason for reason in skipped.values()), skipped


@pytest.mark.parametrize("link", ["alink", "zlink"])
def test_audiofolder_keeps_the_real_path_too(tmp_path, link):
    root = tmp_path / "src"
    (root / "speakers").mkdir(parents=True)
    shutil.copy(SAMPLE_ROOT / "speech" / "sample-speech-0000.flac", root / "speakers" / "s.flac")
    (root / link).symlink_to("speakers", target_is_directory=True)
    manifest = build(BuildOptions(codec="flac", out=tmp_path / "o", dataset="audiofolder", root=root, workers=1))
    assert [s["key"] for s in lossyds.open_dataset(tmp_path / "o")] == ["speakers-s"]
    assert [s["key"] for s in manifest["skipped"]] == [f"{link}-s"]


# ----------------------------------------------------------- 7. one flipped byte in a compressed shard


def tar_samples(tar_bytes: bytes) -> dict[str, tuple[int, int]]:
    """key -> (data offset of its first member, end of its last member) in a tar held in memory."""
    spans: dict[str, tuple[int, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar.getmembers():
            key = info.name.split(".", 1)[0]
            start = spans.get(key, (info.offset_data, 0))[0]
            spans[key] = (start, info.offset_data + info.size)
    return spans


def output_before(new_stream, data: bytes, position: int) -> int:
    """How many bytes a fresh decompressor gives for data[:position]."""
    return len(new_stream().decompress(data[:position]))


def position_for(new_stream, data: bytes, target: int) -> int:
    """The first compressed byte whose input brings the output past `target` (binary search)."""
    low, high = 0, len(data)
    while low < high:
        middle = (low + high) // 2
        if output_before(new_stream, data, middle) > target:
            high = middle
        else:
            low = middle + 1
    return low


def first_difference(new_stream, damaged: bytes, clean: bytes, errors) -> int:
    """The first decompressed byte that differs from the clean tar (fed byte by byte, as far as it goes)."""
    stream, out = new_stream(), bytearray()
    for index in range(len(damaged)):
        try:
            out += stream.decompress(damaged[index : index + 1])
        except errors:
            break
    return next((i for i, (a, b) in enumerate(zip(out, clean)) if a != b), min(len(out), len(clean)))


def gunzip_stream():
    return zlib.decompressobj(wbits=31)


def check_damaged_build(damaged: Path, shard: Path, served: list[str], victim: str, offset: int, tally) -> None:
    """on_error="skip" serves exactly `served`; the skip note, on_error="raise" and verify name the victim."""
    dataset = lossyds.open_dataset(damaged, on_error="skip")
    with pytest.warns(UserWarning, match=victim):
        kept = [s["key"] for s in dataset]
    tally["corruptions detected"] += 1
    assert kept == served
    assert len(dataset.errors) == 1, dataset.errors
    note = dataset.errors[0]
    assert shard.name in note and repr(victim) in note and f"byte {offset} " in note, note
    assert "near byte 0" not in note
    with pytest.raises(ShardError, match=re.escape(repr(victim))):
        list(lossyds.open_dataset(damaged))
    with pytest.raises(ShardError) as raised:
        verify(damaged)
    assert shard.name in str(raised.value) and repr(victim) in str(raised.value), str(raised.value)


@pytest.mark.parametrize(("codec", "victim_index"), [("flac", 3), ("opus", 2)])
def test_flipped_byte_in_a_gzip_shard_serves_the_samples_before_it(tmp_path, codec, victim_index, tally):
    out = tmp_path / "o"
    build_sample(out, codec, shard_format="tar.gz")
    (shard,) = out.glob("shard-*.tar.gz")
    data = shard.read_bytes()
    clean = zlib.decompress(data, 31)
    spans = tar_samples(clean)
    keys = list(spans)
    victim = keys[victim_index]
    start, end = spans[victim]
    position = position_for(gunzip_stream, data, (start + end) // 2)
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    flipped = bytearray(data)
    flipped[position] ^= 0x10
    (damaged / shard.name).write_bytes(bytes(flipped))
    assert start <= first_difference(gunzip_stream, bytes(flipped), clean, zlib.error) < end
    check_damaged_build(damaged, damaged / shard.name, keys[:victim_index], victim, start, tally)


def test_gzip_damage_caught_mid_stream_keeps_the_output_before_it(tmp_path, tally):
    out = tmp_path / "o"
    build_sample(out, "opus", shard_format="tar.gz")
    (shard,) = out.glob("shard-*.tar.gz")
    data = shard.read_bytes()
    clean = zlib.decompress(data, 31)
    spans = tar_samples(clean)
    keys = list(spans)
    start, end = spans[keys[2]]
    first = position_for(gunzip_stream, data, (start + end) // 2)
    for position, bit in ((p, 1 << b) for p in range(first, first + 400) for b in range(8)):
        flipped = bytearray(data)
        flipped[position] ^= bit
        try:
            gunzip_stream().decompress(bytes(flipped))
        except zlib.error as exc:
            if "data check" not in str(exc):  # zlib refuses the stream there, not only its check at the end
                break
    else:
        pytest.fail("no flip near the sample that zlib refuses mid-stream")
    assert start <= first_difference(gunzip_stream, bytes(flipped), clean, zlib.error) < end
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / shard.name).write_bytes(bytes(flipped))
    check_damaged_build(damaged, damaged / shard.name, keys[:2], keys[2], start, tally)


def zstd_blocks(data: bytes) -> list[int]:
    """Offsets of the block headers of a one-frame zstd file without dictionary or content size."""
    assert data[:4] == b"\x28\xb5\x2f\xfd" and data[4] == 0  # the writer's frame header: magic, descriptor 0
    position, blocks = 6, []  # magic, frame header descriptor, window descriptor
    while True:
        header = int.from_bytes(data[position : position + 3], "little")
        blocks.append(position)
        size = 1 if (header >> 1) & 3 == 1 else header >> 3  # an RLE block holds one byte
        position += 3 + size
        if header & 1:
            return blocks


def test_flipped_byte_in_a_zstd_shard_serves_the_blocks_before_it(tmp_path, tally):
    out = tmp_path / "o"
    build_sample(out, "flac", shard_format="tar.zst")
    (shard,) = out.glob("shard-*.tar.zst")
    data = shard.read_bytes()
    clean = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    spans = tar_samples(clean)
    keys = list(spans)
    blocks = zstd_blocks(data)
    assert len(blocks) >= 3  # 128 KiB of tar per block
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    flipped = bytearray(data)
    flipped[blocks[2] + 2] ^= 0x80  # the third block claims a size zstd refuses
    (damaged / shard.name).write_bytes(bytes(flipped))
    whole = [key for key in keys if spans[key][1] <= 2 * (128 << 10)]  # wholly inside the first two blocks
    victim = keys[len(whole)]
    check_damaged_build(damaged, damaged / shard.name, whole, victim, spans[victim][0], tally)


def test_cut_single_block_zstd_shard_says_nothing_could_be_served(tmp_path):
    out = tmp_path / "o"
    build_sample(out, "opus", shard_format="tar.zst")  # a few hundred bytes of Ogg each: one zstd block
    (shard,) = out.glob("shard-*.tar.zst")
    data = shard.read_bytes()
    assert len(zstd_blocks(data)) == 1
    shard.write_bytes(data[: int(len(data) * 0.999)])
    dataset = lossyds.open_dataset(out, on_error="skip")
    with pytest.warns(UserWarning, match="truncated zstandard"):
        assert list(dataset) == []
    assert shard.name in dataset.errors[0]


# ----------------------------------------------------------- 12. metadata.jsonl paths and byte-order marks


def speech_root(root: Path) -> Path:
    root.mkdir(parents=True)
    for key in ("sample-speech-0000", "sample-speech-0001"):
        shutil.copy(SAMPLE_ROOT / "speech" / f"{key}.flac", root / f"{key}.flac")
    return root


@pytest.mark.parametrize("where", ["inside", "outside", "dotdot"])
def test_metadata_paths_leaving_the_folder_are_refused(tmp_path, where, tally):
    root = speech_root(tmp_path / "src")
    outside = tmp_path / "elsewhere.flac"
    shutil.copy(root / "sample-speech-0000.flac", outside)
    name = {"inside": str(root / "sample-speech-0000.flac"), "outside": str(outside), "dotdot": "../elsewhere.flac"}
    rows = [{"file_name": "sample-speech-0001.flac", "text": "a"}, {"file_name": name[where], "text": "b"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli(
        "build", "--codec", "flac", "--dataset", "audiofolder", "--root", str(root), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert_one_sentence(result, "metadata.jsonl:2", "file_name")
    assert not (tmp_path / "o").exists()
    tally["bad inputs tried"] += 1


def test_metadata_with_a_byte_order_mark_is_read(tmp_path):
    root = speech_root(tmp_path / "src")
    rows = [{"file_name": f"sample-speech-000{i}.flac", "text": f"t{i}"} for i in range(2)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (root / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    manifest = build(BuildOptions(codec="flac", out=tmp_path / "o", dataset="audiofolder", root=root, workers=1))
    assert manifest["num_skipped"] == 0
    assert [s["text"] for s in lossyds.open_dataset(tmp_path / "o")] == ["t0", "t1"]


# ----------------------------------------------------------- 13. decode errors carry the decoder's reason


def bitstream_of(shard: Path, key: str, extension: str) -> bytes:
    with tarfile.open(shard) as tar:
        return tar.extractfile(f"{key}.{extension}").read()


def garbage(data: bytes, how: str) -> bytes:
    if how == "random":  # no format's header at all
        return bytes((index * 37 + 11) & 255 for index in range(len(data)))
    keep = len(data) // 3  # a valid header, then scrambled entropy-coded data
    return data[:keep] + bytes((byte * 7 + 13) & 255 for byte in data[keep:])


DECODE_CASES = [
    ("jpeg", "jpg", "random", "Not a JPEG file"),
    ("jpeg", "jpg", "scrambled", "Corrupt JPEG data"),
    ("png", "png", "random", "not png"),
    ("png", "png", "scrambled", "bad adaptive filter value"),
    ("webp", "webp", "random", "WebP"),
    ("avif", "avif", "random", "not in an image format"),
    ("flac", "flac", "random", "Format not recognised"),
    ("flac", "flac", "scrambled", "lost sync"),
    ("mp3", "mp3", "random", "Invalid data found"),
    ("opus", "ogg", "random", "End of file"),
]


@pytest.mark.parametrize(("codec", "extension", "how", "reason"), DECODE_CASES)
@pytest.mark.parametrize("threads", [0, 2])
def test_decode_errors_carry_the_decoders_reason(built, tmp_path, capfd, codec, extension, how, reason, threads):
    extension = "opus" if codec == "opus" else extension
    out = tmp_path / "o"
    shutil.copytree(built(codec), out)
    (shard,) = out.glob("shard-*")
    key = sorted(tar_samples_of(shard))[1]
    replace_bitstream(shard, key, extension, garbage(bitstream_of(shard, key, extension), how))
    capfd.readouterr()
    with pytest.raises(ShardError) as raised:
        list(lossyds.open_dataset(out, decode_threads=threads))
    message = str(raised.value)
    stderr = capfd.readouterr().err
    assert shard.name in message and repr(key) in message and reason in message, message
    assert not re.search(r"object at 0x|/dev/shm|/tmp|\[Errno|<none>", message), message
    assert "\n" not in message and ". " not in message, message  # one sentence
    assert stderr.strip() == "", stderr  # nothing raw from libjpeg, libpng or FFmpeg


def tar_samples_of(shard: Path) -> list[str]:
    data = shard.read_bytes()
    return list(tar_samples(zlib.decompress(data, 31) if shard.name.endswith(".gz") else data))


def test_jpeg_dct_output_names_the_reason_not_a_temporary_file(built, tmp_path, capfd):
    pytest.importorskip("jpeglib")
    out = tmp_path / "o"
    shutil.copytree(built("jpeg"), out)
    (shard,) = out.glob("shard-*")
    key = sorted(tar_samples_of(shard))[1]
    replace_bitstream(shard, key, "jpg", garbage(bitstream_of(shard, key, "jpg"), "random"))
    capfd.readouterr()
    with pytest.raises(ShardError) as raised:
        list(lossyds.open_dataset(out, output="latent"))
    message = str(raised.value)
    assert repr(key) in message and "Not a JPEG file" in message and "/dev/shm" not in message, message
    assert capfd.readouterr().err.strip() == ""


def test_a_mask_that_does_not_decode_names_libpngs_reason(tmp_path, capfd):
    make_cityscapes(tmp_path / "cs")
    out = tmp_path / "o"
    build(
        BuildOptions(
            codec="jpeg", out=out, codec_options={"quality": 5}, dataset="cityscapes", root=tmp_path / "cs", split="val"
        )
    )
    (shard,) = out.glob("shard-*")
    key = sorted(tar_samples_of(shard))[1]
    replace_bitstream(shard, key, "mask.png", garbage(bitstream_of(shard, key, "mask.png"), "scrambled"))
    capfd.readouterr()
    with pytest.raises(ShardError) as raised:
        list(lossyds.open_dataset(out))
    message = str(raised.value)
    assert repr(key) in message and ".mask.png" in message and "libpng" in message, message
    assert capfd.readouterr().err.strip() == ""
