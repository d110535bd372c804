"""Neural codecs (CompressAI models, EnCodec) with test weights made here: random init with a seed."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lossyds
from lossyds import codecs
from lossyds.builder import BuildOptions, build
from lossyds.codecs import lsyn
from lossyds.errors import CodecError, UsageError
from lossyds.sources import get as get_builder
from lossyds.verify import verify
from lossyds.weights import WeightsError

COMPRESSAI = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor", "msillm"]


def member_sizes(directory: Path, extension: str) -> int:
    total = 0
    for shard in directory.glob("shard-*.tar*"):
        with tarfile.open(shard) as tar:
            total += sum(m.size for m in tar if m.name.endswith("." + extension))
    return total


# The autoregressive models decode at ~2.5 s per sample photo on these CPUs: marked slow.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("mbt2018", "cheng2020-anchor", "msillm") else n
        for n in COMPRESSAI
    ],
)
def test_compressai_codec_builds_the_sample_and_decodes(tmp_path, name):
    manifest = build(
        BuildOptions(codec=name, out=tmp_path, codec_options={"quality": 1, "weights": "random:0"}, workers=1)
    )
    assert manifest["num_samples"] == 6 and manifest["codec"]["extension"] == "lsyn"
    assert manifest["codec"]["weights"]["source"] == "random" and len(manifest["codec"]["weights"]["sha256"]) == 64
    assert manifest["bits"]["payload"] == member_sizes(tmp_path, "lsyn") * 8
    assert verify(tmp_path).samples == 6
    samples = list(lossyds.open_dataset(tmp_path))  # decodes every sample (the loader checks payload bits too)
    for sample in samples:
        assert sample["image"].dtype == torch.uint8
        assert sample["pixels"] == sample["image"].shape[1] * sample["image"].shape[2]
    assert {s["image"].shape[0] for s in samples} == {1, 3}  # grayscale comes back grayscale


@pytest.mark.parametrize("name", ["mbt2018", "cheng2020-anchor", "msillm"])
def test_slow_codecs_on_small_images(tmp_path, name):
    source = tmp_path / "src"
    for index, (label, size) in enumerate([("a", (96, 64)), ("b", (70, 50))]):
        folder = source / label
        folder.mkdir(parents=True)
        from PIL import Image

        Image.fromarray(np.random.default_rng(index).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / "x.png"
        )
    manifest = build(
        BuildOptions(
            codec=name,
            out=tmp_path / "o",
            codec_options={"quality": 2, "weights": "random:3"},
            dataset="imagefolder",
            root=source,
            workers=1,
        )
    )
    assert verify(tmp_path / "o", decode=True).decoded == 2
    assert manifest["bits"]["payload"] == member_sizes(tmp_path / "o", "lsyn") * 8


def test_encodec_builds_speech_at_the_nominal_rate_and_matches_encodec_own_decoder(tmp_path):
    manifest = build(
        BuildOptions(codec="encodec", out=tmp_path, codec_options={"kbps": 6, "weights": "random:0"}, workers=1)
    )
    assert abs(manifest["bits"]["kbps"] / 6 - 1) < 0.05
    assert manifest["bits"]["payload"] == member_sizes(tmp_path, "ecdc") * 8
    assert verify(tmp_path, decode=True).decoded == 5
    codec = codecs.get("encodec", kbps=6, weights="random:0")
    encodec_compress = sys.modules["encodec.compress"]  # `import encodec.compress` yields the function of that name
    with tarfile.open(next(tmp_path.glob("shard-000000.tar*"))) as tar:
        member = next(m for m in tar if m.name.endswith(".ecdc"))
        data = tar.extractfile(member).read()
    saved = dict(encodec_compress.MODELS)
    encodec_compress.MODELS["encodec_24khz"] = lambda: codec.model  # "given the same model weights"
    try:
        reference, rate = encodec_compress.decompress(data)
    finally:
        encodec_compress.MODELS.clear()
        encodec_compress.MODELS.update(saved)
    assert rate == 24000 and torch.equal(reference, codec.decode_codes(data))
    samples = {s["key"]: s for s in lossyds.open_dataset(tmp_path)}
    sample = samples[member.name.split(".")[0]]
    assert sample["audio"].shape == (1, sample["num_frames"]) and sample["sample_rate"] == 16000


def test_encodec_48khz_on_stereo_music(tmp_path):
    manifest = build(
        BuildOptions(
            codec="encodec-48khz",
            out=tmp_path,
            codec_options={"kbps": 6, "weights": "random:0"},
            split="music",
            workers=1,
        )
    )
    (sample,) = list(lossyds.open_dataset(tmp_path))
    assert sample["audio"].shape == (2, sample["num_frames"]) and sample["sample_rate"] == 44100
    assert abs(manifest["bits"]["kbps"] / 6 - 1) < 0.05


def test_other_weights_are_refused_with_both_fingerprints(tmp_path):
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            out=tmp_path,
            codec_options={"quality": 1, "weights": "random:0"},
            workers=1,
            limit=2,
        )
    )
    with pytest.raises(WeightsError) as info:
        lossyds.open_dataset(tmp_path, weights="random:1")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["codec"]["weights"]["sha256"][:16] in str(info.value)
    # The same weights from a checkpoint file are accepted: the fingerprint is of the state dict.
    codec = codecs.get("bmshj2018-hyperprior", quality=1, weights="random:0")
    checkpoint = tmp_path / "weights.pth"
    torch.save(codec.model.state_dict(), checkpoint)
    assert len(list(lossyds.open_dataset(tmp_path, weights=str(checkpoint)))) == 2
    # A bitstream decoded by a codec with other weights is refused too, not decoded wrong.
    other = codecs.get("bmshj2018-hyperprior", quality=1, weights="random:1")
    sample = get_builder("sample", root=None, split="photos", modality="image").refs()[0]
    data = codec.encode(get_builder("sample", root=None, split="photos", modality="image").load(sample))
    with pytest.raises(WeightsError):
        other.decode(data, {})


def test_missing_pretrained_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSYDS_NO_DOWNLOAD", "1")
    monkeypatch.setenv("LOSSYDS_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--codec",
            "mbt2018",
            "--quality",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        "mbt2018-1-3f36cd77.pth.tar" in result.stderr
        and str(tmp_path / "w") in result.stderr
        and "random:SEED" in result.stderr
    )
    assert "Traceback" not in result.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--codec",
            "jpeg",
            "--quality",
            "5",
            "--weights",
            "random:0",
            "--out",
            str(tmp_path / "j"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "takes no option --weights" in bad.stderr
    # EnCodec's entropy LM with model weights from a file: the LM is still the pretrained one, and missing
    checkpoint = tmp_path / "encodec.pth"
    torch.save(codecs.get("encodec", kbps=6, weights="random:0").model.state_dict(), checkpoint)
    lm = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--codec",
            "encodec",
            "--kbps",
            "6",
            "--entropy-lm",
            "--weights",
            str(checkpoint),
            "--out",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
    )
    assert lm.returncode == 1 and "encodec_lm_24khz-1608e3c0.th" in lm.stderr and str(tmp_path / "w") in lm.stderr
    assert "Traceback" not in lm.stderr


def test_weights_file_is_loaded_without_unpickling_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    codec = codecs.get("bmshj2018-factorized", quality=1, weights=str(tmp_path / "evil.pth"))
    with pytest.raises(WeightsError, match="cannot read weights"):
        codec.weights_info()


def test_batch_and_thread_count_do_not_change_what_decodes(tmp_path):
    """Encode 4 images as one batch with 2 threads; decode one by one with 1 and with 2 threads."""
    photo = get_builder("sample", root=None, split="photos", modality="image")
    image = photo.load(photo.refs()[0]).image  # 512x512 RGB
    crops = [np.ascontiguousarray(image[i * 40 : i * 40 + 192, i * 30 : i * 30 + 256]) for i in range(4)]
    for name in ("bmshj2018-hyperprior", "mbt2018-mean"):
        codec = codecs.get(name, quality=2, weights="random:0")
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            batched = codec.encode_batch(crops)
            torch.set_num_threads(1)
            one_thread = [codec.decode(b, {}) for b in batched]
            singles = [codec.encode_batch([c])[0] for c in crops]
            torch.set_num_threads(2)
            two_threads = [codec.decode(b, {}) for b in batched]
        finally:
            torch.set_num_threads(threads)
        for a, b in zip(one_thread, two_threads):
            assert torch.equal(a, b), name
        assert batched == singles, f"{name}: batch-4 and batch-1 encodings differ"


def test_cpu_synthesis_runs_channels_last_and_gives_the_nchw_pixels():
    """The CPU synthesis network is converted to channels-last (faster in oneDNN); its pixels
    are those of the network as loaded (NCHW), within 1 level on at most 0.1% of them."""
    photo = get_builder("sample", root=None, split="photos", modality="image")
    image = photo.load(photo.refs()[0]).image
    codec = codecs.get("bmshj2018-hyperprior", quality=2, weights="random:0")
    reference_network = codec.copy_module("g_s")  # NCHW, as loaded
    data = codec.encode(SimpleNamespace(key="a", image=image))
    latent = codec.decode_latent(data, {})
    decoded = codec.decode(data, {})
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in codec.model.g_s.parameters() if p.dim() == 4)
    with torch.no_grad():
        reference = (
            reference_network(latent.parts[0])
            .clamp(0, 1)
            .mul(255)
            .round()
            .to(torch.uint8)[0, :, : image.shape[0], : image.shape[1]]
        )
    assert decoded.shape == reference.shape and decoded.is_contiguous()
    difference = (decoded.int() - reference.int()).abs()
    assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) <= 0.001
    assert torch.equal(codec.decode(data, {}), decoded)  # and the same every time


def test_container_rejects_wrong_magic_version_and_truncation():
    stream = lsyn.NeuralBitstream("mbt2018", 3, b"\x01" * 8, 100, 200, 3, [2, 4], [[b"abc"], [b"de"]])
    data = lsyn.pack(stream)
    assert lsyn.unpack(data) == stream
    with pytest.raises(CodecError, match="magic"):
        lsyn.unpack(b"XXXX" + data[4:])
    with pytest.raises(CodecError, match="version"):
        lsyn.unpack(data[:4] + b"\x09" + data[5:])
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            lsyn.unpack(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_container_parser_raises_only_codec_errors(data):
    try:
        lsyn.unpack(b"LSYN\x01" + data)
    except CodecError:
        pass


def test_neural_rates_and_names_are_checked():
    with pytest.raises(UsageError, match="1..6"):
        codecs.get("cheng2020-anchor", quality=7, weights="random:0")
    with pytest.raises(UsageError, match="1..6"):
        codecs.get("msillm", quality=0, weights="random:0")
    with pytest.raises(UsageError, match="one of 1.5, 3, 6, 12, 24"):
        codecs.get("encodec", kbps=5, weights="random:0")
    with pytest.raises(UsageError, match="one of 3, 6, 12, 24"):
        codecs.get("encodec-48khz", kbps=1.5, weights="random:0")
    with pytest.raises(UsageError, match="one of 3, 6, 12, 24"):
        codecs.get("encodec-48khz", kbps=5, weights="random:0")


def test_decode_cache_serves_identical_tensors_and_is_per_build(tmp_path):
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            out=tmp_path / "b",
            codec_options={"quality": 1, "weights": "random:0"},
            workers=1,
            limit=3,
        )
    )
    fresh = {s["key"]: s["image"] for s in lossyds.open_dataset(tmp_path / "b")}
    cached = lossyds.open_dataset(tmp_path / "b", decode_cache=tmp_path / "cache")
    first = {s["key"]: s["image"] for s in cached}
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 3
    original = cached.codec.decode
    cached.codec.decode = lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("decoded again")
    )  # second epoch: cache only
    try:
        second = {s["key"]: s["image"] for s in cached}
    finally:
        cached.codec.decode = original
    for key in fresh:
        assert torch.equal(fresh[key], first[key]) and torch.equal(fresh[key], second[key])
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            out=tmp_path / "c",
            codec_options={"quality": 2, "weights": "random:1"},
            workers=1,
            limit=3,
        )
    )
    list(lossyds.open_dataset(tmp_path / "c", decode_cache=tmp_path / "cache"))
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another build, another cache folder


def test_neural_decoding_in_dataloader_workers(tmp_path):
    """Forked DataLoader workers decode with a model the parent already ran (no OpenMP deadlock)."""
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            out=tmp_path / "b",
            codec_options={"quality": 1, "weights": "random:0"},
            workers=2,
            limit=4,
        )
    )
    script = (
        "import torch, lossyds, sys\n"
        f"ds = lossyds.open_dataset({str(tmp_path / 'b')!r})\n"
        "keys = sorted(s['key'] for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))\n"
        "print(len(keys), len(set(keys)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["4", "4"]


# -- two-stage decode: entropy stage on CPU, synthesis batched on a device ---------------------


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "msillm"])
def test_batched_synthesis_equals_one_by_one_decode_for_images(name):
    """Latents of two sizes and both channel counts, synthesized as one call, give decode's exact pixels."""
    photo = get_builder("sample", root=None, split="photos", modality="image")
    samples = [photo.load(r) for r in photo.refs()[:4]]  # 512x512 RGB, 300x451 RGB, 400x600 RGB, grayscale
    samples += [samples[0]]  # two of one shape: a real batch
    codec = codecs.get(name, quality=2 if name != "msillm" else 1, weights="random:0")
    streams = [codec.encode(s) for s in samples]
    one_by_one = [codec.decode(s, {}) for s in streams]
    latents = [codec.decode_latent(s, {}) for s in streams]
    assert {tuple(latent.parts[0].shape) for latent in latents} != {
        tuple(latents[0].parts[0].shape)
    }  # the groups differ in shape
    batched = codec.synthesize(latents, "cpu")
    for sample, single, together in zip(samples, one_by_one, batched):
        assert together.dtype == torch.uint8 and together.shape == (sample.image.shape[2], *sample.image.shape[:2])
        assert torch.equal(single, together), sample.key


@pytest.mark.parametrize("name, rate, channels", [("encodec", 16000, 1), ("encodec-48khz", 44100, 2)])
def test_batched_synthesis_matches_one_by_one_decode_for_encodec(name, rate, channels):
    """Utterances of different lengths in one batch (the causal 24 kHz model right-pads them; the
    48 kHz model batches its 1 s segments): within float rounding of decode, at the exact length."""
    from lossyds.types import SourceSample

    rng = np.random.default_rng(0)
    codec = codecs.get(name, kbps=6, weights="random:0")
    streams, metas = [], []
    for index, seconds in enumerate([0.7, 2.3, 1.3]):
        frames = int(seconds * rate)
        audio = (0.1 * rng.standard_normal((channels, frames))).astype(np.float32)
        streams.append(codec.encode(SourceSample(key=f"u{index}", audio=audio, sample_rate=rate)))
        metas.append({"sample_rate": rate, "num_frames": frames, "channels": channels})
    one_by_one = [codec.decode(s, m) for s, m in zip(streams, metas)]
    batched = codec.synthesize([codec.decode_latent(s, m) for s, m in zip(streams, metas)], "cpu")
    for single, together, meta in zip(one_by_one, batched, metas):
        assert together.shape == single.shape == (channels, meta["num_frames"])
        peak = float(single.abs().max())
        assert peak > 0 and float((single - together).abs().max()) <= 1e-5 * max(1.0, peak)


@pytest.mark.parametrize("name, rate", [("encodec", {"kbps": 6}), ("bmshj2018-hyperprior", {"quality": 2})])
def test_device_copies_carry_the_same_weights(name, rate):
    """What decode_device runs is a copy with identical weights (EnCodec's weight_norm refuses deepcopy: rebuilt)."""
    codec = codecs.get(name, weights="random:0", **rate)
    part = getattr(codec, "synthesis_attribute", None)
    copy = codec.copy_module(part)
    reference = codec.model if part is None else getattr(codec.model, part)
    assert copy is not reference
    ours, theirs = copy.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert codec.module_on("cpu", part) is reference  # on CPU the model itself serves


@pytest.fixture(scope="module")
def two_stage_builds(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("two-stage")
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            out=root / "images",
            codec_options={"quality": 2, "weights": "random:0"},
            dataset="sample",
            split="photos",
            workers=1,
            shard_samples=2,
        )
    )
    build(
        BuildOptions(
            codec="encodec",
            out=root / "speech",
            codec_options={"kbps": 6, "weights": "random:0"},
            dataset="sample",
            split="speech",
            workers=1,
            shard_samples=2,
        )
    )
    return {"image": root / "images", "audio": root / "speech"}


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_decode_device_through_dataloader_workers_matches_plain_decode(two_stage_builds, modality):
    """Workers entropy-decode, the main process synthesizes each batch, then the user's collate runs."""
    reference = {s["key"]: s for s in lossyds.open_dataset(two_stage_builds[modality])}
    dataset = lossyds.open_dataset(
        two_stage_builds[modality], decode_device="cpu", transform=lambda s: {**s, "seen": True}
    )
    loader = lossyds.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda samples: samples)
    got = {s["key"]: s for batch in loader for s in batch}
    assert got.keys() == reference.keys()
    for key, sample in got.items():
        assert sample["seen"] is True  # the transform ran after synthesis
        ours, theirs = sample[modality], reference[key][modality]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert float((ours.float() - theirs.float()).abs().max()) <= (0 if modality == "image" else 1e-5)
    assert loader.bits.payload_bits == sum(s["payload_bits"] for s in reference.values())
    # iterated directly (no workers): the dataset synthesizes every synthesis_batch samples itself
    direct = {
        s["key"]: s[modality]
        for s in lossyds.open_dataset(two_stage_builds[modality], decode_device="cpu", synthesis_batch=3)
    }
    assert all(float((direct[k].float() - reference[k][modality].float()).abs().max()) <= 1e-5 for k in reference)


def test_decode_device_default_collate_and_unbatched(two_stage_builds):
    loader = lossyds.DataLoader(
        lossyds.open_dataset(two_stage_builds["audio"], decode_device="cpu"), batch_size=None, num_workers=1
    )
    samples = list(loader)
    assert len(samples) == 5 and all(s["audio"].ndim == 2 for s in samples)
    crop = lambda s: {"image": s["image"].expand(3, -1, -1)[:, :64, :64], "payload_bits": s["payload_bits"]}  # noqa: E731  (gray -> 3 channels)
    batches = list(
        lossyds.DataLoader(
            lossyds.open_dataset(two_stage_builds["image"], decode_device="cpu", transform=crop),
            batch_size=3,
            num_workers=2,
        )
    )
    assert sum(b["image"].shape[0] for b in batches) == 6 and batches[0]["image"].dtype == torch.uint8


def test_decode_device_refuses_what_it_cannot_do(two_stage_builds, tmp_path):
    with pytest.raises(UsageError, match="lossyds.DataLoader"):
        list(
            torch.utils.data.DataLoader(
                lossyds.open_dataset(two_stage_builds["image"], decode_device="cpu"), batch_size=2, num_workers=1
            )
        )
    with pytest.raises(UsageError, match="alternatives"):
        lossyds.open_dataset(two_stage_builds["image"], decode_device="cpu", decode_cache=tmp_path / "cache")
    with pytest.raises(UsageError, match="not a torch device"):
        lossyds.open_dataset(two_stage_builds["image"], decode_device="gpu-please")
    build(
        BuildOptions(
            codec="jpeg",
            out=tmp_path / "jpeg",
            codec_options={"quality": 50},
            dataset="sample",
            split="photos",
            workers=1,
        )
    )
    with pytest.raises(UsageError, match="decodes in one"):
        lossyds.open_dataset(tmp_path / "jpeg", decode_device="cpu")


def test_entropy_lm_bitstreams_decode_to_the_same_codes_and_are_read_by_encodec(tmp_path):
    """--entropy-lm with a random LM (seed of --weights): encoded with 2 threads, decoded with 1,
    the codes equal the bit-packed build's; encodec's own decompress reads the files; the LM's
    fingerprint is recorded and checked."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        manifest = build(
            BuildOptions(
                codec="encodec",
                out=tmp_path / "lm",
                codec_options={"kbps": 6, "weights": "random:0", "entropy_lm": True},
                workers=1,
                limit=2,
            )
        )
        build(
            BuildOptions(
                codec="encodec",
                out=tmp_path / "plain",
                codec_options={"kbps": 6, "weights": "random:0"},
                workers=1,
                limit=2,
            )
        )
        torch.set_num_threads(1)
        with_lm = {s["key"]: s["audio"] for s in lossyds.open_dataset(tmp_path / "lm")}
        plain = {s["key"]: s["audio"] for s in lossyds.open_dataset(tmp_path / "plain")}
    finally:
        torch.set_num_threads(threads)
    assert with_lm.keys() == plain.keys() and all(torch.equal(with_lm[k], plain[k]) for k in plain)
    recorded = manifest["codec"]["weights"]["lm"]
    assert recorded["source"] == "random" and len(recorded["sha256"]) == 64
    assert manifest["codec"]["params"]["entropy_lm"] is True and "CPU" in manifest["codec"]["decode_portability"]
    assert manifest["bits"]["payload"] == member_sizes(tmp_path / "lm", "ecdc") * 8
    assert verify(tmp_path / "lm", decode=True).decoded == 2

    codec = codecs.get("encodec", kbps=6, weights="random:0", entropy_lm=True)
    with tarfile.open(next((tmp_path / "lm").glob("shard-000000.tar*"))) as tar:
        data = tar.extractfile(next(m for m in tar if m.name.endswith(".ecdc"))).read()
    encodec_compress = sys.modules["encodec.compress"]
    saved = dict(encodec_compress.MODELS)
    model = codec.model
    model.get_lm_model = lambda: codec.lm  # "given the same weights": model and LM
    encodec_compress.MODELS["encodec_24khz"] = lambda: model
    try:
        reference, _rate = encodec_compress.decompress(data)
    finally:
        encodec_compress.MODELS.clear()
        encodec_compress.MODELS.update(saved)
    assert torch.equal(reference, codec.decode_codes(data))
    with pytest.raises(CodecError, match="entropy LM"):
        codecs.get("encodec", kbps=6, weights="random:0").decode_codes(data)

    edited = json.loads((tmp_path / "lm" / "manifest.json").read_text())
    edited["codec"]["weights"]["lm"]["sha256"] = "0" * 64
    (tmp_path / "lm" / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(WeightsError, match="entropy LM"):
        lossyds.open_dataset(tmp_path / "lm")
