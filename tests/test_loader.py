"""The decoding loader with real DataLoader workers and a real two-process gloo group."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lossyds
from lossyds.errors import ShardError, UsageError

from .conftest import build_sample
from .fixtures import make_image_folder, replace_bitstream


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in (batch["key"] if isinstance(batch["key"], list) else [batch["key"]])]


def test_image_samples_decode_to_uint8_chw_with_targets(built):
    directory = built("jpeg")
    manifest = json.loads((directory / "manifest.json").read_text())
    samples = list(lossyds.open_dataset(directory))
    assert len(samples) == manifest["num_samples"] == 6
    for sample in samples:
        assert sample["image"].dtype == torch.uint8 and sample["image"].ndim == 3
        assert sample["image"].shape[0] in (1, 3)
        assert sample["pixels"] == sample["image"].shape[1] * sample["image"].shape[2]
        assert isinstance(sample["label"], int) and isinstance(sample["payload_bits"], int)
    assert sum(s["payload_bits"] for s in samples) == manifest["bits"]["payload"]
    assert {s["image"].shape[0] for s in samples} == {1, 3}


def test_audio_samples_come_back_at_source_rate_and_length(built):
    for codec in ("opus", "mp3", "flac"):
        for sample in lossyds.open_dataset(built(codec)):
            assert sample["audio"].dtype == torch.float32
            assert sample["sample_rate"] == 16000
            assert sample["audio"].shape == (1, sample["num_frames"])
            assert sample["text"].isupper()


def test_music_sample_carries_decoded_stems(built):
    (sample,) = list(lossyds.open_dataset(built("mp3", split="music", rate={"kbps": 64})))
    assert sample["sample_rate"] == 44100 and sample["audio"].shape[0] == 2
    assert set(sample["stems"]) == {"drums", "bass", "other", "vocals"}
    total = sum(sample["stems"].values())
    assert total.shape == sample["audio"].shape
    assert torch.corrcoef(torch.stack([total[0], sample["audio"][0]]))[0, 1] > 0.9  # the mixture is their sum


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    make_image_folder(root, copies=4)  # 24 images
    out = root / "out"
    from lossyds.builder import BuildOptions, build

    build(
        BuildOptions(
            codec="jpeg",
            out=out,
            codec_options={"quality": 20},
            dataset="imagefolder",
            root=root,
            split="train",
            shard_samples=5,
            workers=1,
        )
    )
    return out


def resize(sample):
    import torch.nn.functional as F

    image = sample["image"].expand(3, -1, -1).float()[None]
    sample["image"] = F.interpolate(image, size=(32, 32), mode="bilinear", align_corners=False)[0].to(torch.uint8)
    return sample


@pytest.mark.parametrize("num_workers, shuffle", [(0, False), (2, False), (2, True), (3, True)])
def test_dataloader_workers_yield_every_key_exactly_once(many_shards, num_workers, shuffle):
    manifest = json.loads((many_shards / "manifest.json").read_text())
    dataset = lossyds.open_dataset(many_shards, shuffle=shuffle, seed=3, shuffle_buffer=8, transform=resize)
    loader = lossyds.DataLoader(dataset, batch_size=4, num_workers=num_workers)
    expected = set()
    for shard in sorted(many_shards.glob("*.tar")):
        import tarfile

        with tarfile.open(shard) as tar:
            expected |= {name.split(".")[0] for name in tar.getnames()}
    for epoch in range(2):
        dataset.set_epoch(epoch)
        keys = keys_of(loader)
        assert Counter(keys) == Counter(expected), f"epoch {epoch}"
    assert len(expected) == manifest["num_samples"] == 24
    meter = loader.bits.summary()
    assert meter["samples"] == 48
    assert meter["payload_bits"] == 2 * manifest["bits"]["payload"]
    assert meter["bpp"] == pytest.approx(manifest["bits"]["bpp"])


@pytest.mark.parametrize("codec, rate_key", [("jpeg", "bpp"), ("opus", "kbps")])
def test_bit_meter_counts_sample_lists_as_it_counts_collated_batches(built, codec, rate_key):
    directory = built(codec)
    manifest = json.loads((directory / "manifest.json").read_text())
    as_lists = lossyds.DataLoader(lossyds.open_dataset(directory), batch_size=4, collate_fn=list)
    collated = lossyds.DataLoader(lossyds.open_dataset(directory), batch_size=1)  # sizes differ: batches of one
    for loader in (as_lists, collated):
        for _ in loader:
            pass
    lists, tensors = as_lists.bits.summary(), collated.bits.summary()
    assert lists["samples"] == tensors["samples"] == manifest["num_samples"]
    assert lists["payload_bits"] == tensors["payload_bits"] == manifest["bits"]["payload"]
    assert lists[rate_key] == pytest.approx(tensors[rate_key]) and lists[rate_key] > 0


def crop_rgb(sample):
    sample["image"] = sample["image"][:, :32, :40].expand(3, -1, -1)  # a view: gray ones expanded, not copied
    return sample


@pytest.mark.parametrize("num_workers", [0, 2])
def test_channels_last_collate_matches_default_collate(many_shards, num_workers):
    dataset = lossyds.open_dataset(many_shards, transform=crop_rgb)
    ours = list(
        lossyds.DataLoader(dataset, batch_size=5, num_workers=num_workers, collate_fn=lossyds.collate_channels_last)
    )
    theirs = list(lossyds.DataLoader(dataset, batch_size=5, num_workers=num_workers))
    assert len(ours) == len(theirs) > 1
    for mine, reference in zip(ours, theirs, strict=True):
        assert list(mine) == list(reference)  # same keys, same order
        assert mine["image"].shape == reference["image"].shape == (len(mine["key"]), 3, 32, 40)
        assert torch.equal(mine["image"], reference["image"])
        assert mine["image"].is_contiguous(memory_format=torch.channels_last)
        for key in reference:
            if key != "image":
                assert (
                    mine[key] == reference[key]
                    if not torch.is_tensor(reference[key])
                    else torch.equal(mine[key], reference[key])
                )


def test_channels_last_collate_copies_full_size_decoded_images_as_they_lie(built):
    samples = [s for s in lossyds.open_dataset(built("jpeg")) if s["image"].shape[0] == 3][:1]
    image = samples[0]["image"]
    assert image.permute(1, 2, 0).is_contiguous()  # torchvision's [C, H, W] view of [H, W, C] memory
    batch = lossyds.collate_channels_last(samples)
    assert torch.equal(batch["image"][0], image) and batch["image"].is_contiguous(memory_format=torch.channels_last)


def test_shuffle_changes_order_between_epochs(many_shards):
    dataset = lossyds.open_dataset(many_shards, shuffle=True, seed=1, shuffle_buffer=10)
    first = [s["key"] for s in dataset]
    dataset.set_epoch(1)
    second = [s["key"] for s in dataset]
    assert sorted(first) == sorted(second) and first != second
    assert first == [s["key"] for s in lossyds.open_dataset(many_shards, shuffle=True, seed=1, shuffle_buffer=10)]


def test_ranks_and_workers_partition_exactly_with_fewer_shards_than_readers(many_shards):
    # 5 shards, 3 ranks x 2 workers = 6 readers: splitting must still be exact.
    seen = Counter()
    sizes = []
    for rank in range(3):
        dataset = lossyds.open_dataset(many_shards, rank=rank, world_size=3, transform=resize)
        keys = keys_of(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2))
        assert len(keys) == len(dataset)
        sizes.append(len(keys))
        seen.update(keys)
    assert sum(seen.values()) == 24 and set(seen.values()) == {1}
    assert max(sizes) - min(sizes) <= 1


def _ddp_worker(rank: int, world: int, port: int, directory: str, result_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dataset = lossyds.open_dataset(directory, shuffle=True, seed=7, transform=resize)
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
        keys = keys_of(loader)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, keys)
        if rank == 0:
            Path(result_dir, "keys.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_neither_duplicates_nor_drops(many_shards, tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(many_shards), str(tmp_path)), nprocs=2, join=True)
    per_rank = json.loads((tmp_path / "keys.json").read_text())
    assert len(per_rank) == 2 and all(per_rank)
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)) == 24
    assert not set(per_rank[0]) & set(per_rank[1])


def test_corrupt_shard_is_named_by_the_loader(tmp_path):
    out = tmp_path / "b"
    build_sample(out, "jpeg", shard_samples=3)
    shard = sorted(out.glob("*.tar"))[1]
    data = bytearray(shard.read_bytes())
    data[700:1200] = b"\x00" * 500  # inside the first member's data: the JPEG bitstream
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError) as info:
        list(lossyds.open_dataset(out))
    assert shard.name in str(info.value)
    dataset = lossyds.open_dataset(out, on_error="skip")
    with pytest.warns(UserWarning, match=shard.name):
        samples = list(dataset)
    assert len(samples) < 6 and dataset.errors and shard.name in dataset.errors[0]


def test_shard_indexes_are_reused_across_epochs_until_a_file_changes(many_shards, tmp_path, monkeypatch):
    import shutil

    import lossyds.shards.mapped as shards

    copy = tmp_path / "copy"
    shutil.copytree(many_shards, copy)
    dataset = lossyds.open_dataset(copy, decode_threads=2)
    first = [s["key"] for s in dataset]
    scans = []
    original = shards.index_tar
    monkeypatch.setattr(shards, "index_tar", lambda *a, **k: scans.append(a[1]) or original(*a, **k))
    second = [s["key"] for s in dataset]
    assert second == first and scans == []  # every index came from the first epoch
    victim = copy / dataset.shards[0]["path"]
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data)  # same bytes, another file: its index is read again
    third = [s["key"] for s in dataset]
    assert third == first and scans == [dataset.shards[0]["path"]]


@pytest.mark.parametrize("decode_threads", [0, 2])
def test_an_undecodable_bitstream_fails_alone_in_its_decode_chunk(tmp_path, decode_threads):
    from lossyds.codecs.jpeg import JpegCodec

    out = tmp_path / "b"
    build_sample(out, "jpeg", shard_samples=6)
    clean = {s["key"]: s["image"] for s in lossyds.open_dataset(out)}
    order = list(clean)
    victim = order[3]  # mid-chunk: the six photos make one decode chunk
    shard = next(out.glob("*.tar"))
    replace_bitstream(shard, victim, "jpg", b"\x00" * member_size(shard, f"{victim}.jpg"))

    dataset = lossyds.open_dataset(out, on_error="skip", decode_threads=decode_threads)
    with pytest.warns(UserWarning, match=victim):
        samples = list(dataset)
    assert [s["key"] for s in samples] == [k for k in order if k != victim]
    assert all(torch.equal(s["image"], clean[s["key"]]) for s in samples)  # the chunk's other images decoded as before
    assert len(dataset.errors) == 1 and victim in dataset.errors[0] and "cannot be decoded" in dataset.errors[0]

    yielded = []
    with pytest.raises(ShardError, match=victim):
        for sample in lossyds.open_dataset(out, decode_threads=decode_threads):
            yielded.append(sample["key"])
    assert yielded == order[:3]  # the samples before the bad one still arrive, in order
    assert JpegCodec._fast_decode is not None  # a corrupt bitstream does not switch torchvision off


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_decode_threads_read_at_most_their_window_ahead_and_keep_order(threads):
    from lossyds.load.parallel import decode_window
    from lossyds.load.parallel import threaded_map as _threaded_map

    window = decode_window(threads)
    assert window > threads  # every thread busy, one chunk at least waiting
    pulled = 0

    def items():
        nonlocal pulled
        for index in range(50):
            pulled += 1
            yield index

    out = []
    for value in _threaded_map(lambda x: x * x, items(), threads, window=window):
        assert pulled - len(out) <= window  # chunks taken but not yet handed out: bounded memory
        out.append(value)
    assert out == [i * i for i in range(50)]


def test_without_decode_threads_the_first_sample_waits_for_one_decode_only(many_shards, monkeypatch):
    from lossyds.load.parallel import DECODE_CHUNK

    decoded: list[int] = []
    threaded = lossyds.open_dataset(many_shards, decode_threads=2)
    serial = lossyds.open_dataset(many_shards)
    for dataset in (serial, threaded):
        original = dataset.codec.decode_many
        monkeypatch.setattr(
            dataset.codec, "decode_many", lambda items, original=original: decoded.append(len(items)) or original(items)
        )
    next(iter(serial))
    assert decoded == [1]  # a slow neural codec's first sample is not held back by a chunk of others
    decoded.clear()
    assert len(list(threaded)) == 24 and max(decoded) == DECODE_CHUNK  # threads share chunks


def member_size(shard: Path, name: str) -> int:
    import tarfile

    with tarfile.open(shard) as tar:
        return tar.getmember(name).size


def test_make_loader_sets_each_codec_up_the_recommended_way(built, many_shards):
    images = lossyds.make_loader(many_shards, batch_size=5, cores=2, transform=resize, shuffle=True, seed=1)
    assert images.dataset.decode_threads == 2 and images.num_workers == 0  # JPEG: decode threads, no worker processes
    assert sorted(keys_of(images)) == sorted(
        keys_of(lossyds.DataLoader(lossyds.open_dataset(many_shards, transform=resize), batch_size=5))
    )
    assert images.bits.summary()["samples"] == 24
    speech = lossyds.make_loader(built("opus"), batch_size=2, cores=2, collate_fn=list)
    assert (
        speech.dataset.decode_threads == 0 and speech.num_workers == 2 and speech.persistent_workers
    )  # audio: worker processes
    samples = [sample for batch in speech for sample in batch]
    assert sorted(s["key"] for s in samples) == sorted(s["key"] for s in lossyds.open_dataset(built("opus")))
    assert all(s["audio"].dtype == torch.float32 and s["sample_rate"] == 16000 for s in samples)
    serial = lossyds.make_loader(many_shards, cores=0, transform=resize)
    assert serial.dataset.decode_threads == 0 and serial.num_workers == 0
    with pytest.raises(UsageError, match="decode_threads"):
        lossyds.make_loader(many_shards, decode_threads=4)
