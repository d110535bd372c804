"""Batched neural encoding (`--encode-batch`, `--device`): the analysis runs batched, entropy
coding per sample on CPU as the decoder decodes (docs/codecs.md, "Batched encoding").

Test weights are made here, never downloaded, from random:0 (random init, seed 0), which alone
would make these tests vacuous: the CompressAI models' random analysis output is so small that
every latent element rounds to zero, and EnCodec's codebooks start at zero (encodec fills them
by k-means in training), so every code is 0. So the test weights are random:0 with the image
analysis network's last layer scaled by ANALYSIS_GAIN, or with EnCodec's codebooks drawn at
random (seed 0), saved as checkpoint files (named amplified-random0-*.pth; "source": "file" in
the manifest), and the tests check that the latents and codes they compare carry information.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from lossyds import codecs
from lossyds.builder import BuildOptions, build
from lossyds.builder import encode as encode_stage
from lossyds.errors import UsageError
from lossyds.shards.mapped import MappedShard
from lossyds.sources import get as get_source
from lossyds.types import SourceSample
from lossyds.verify import verify

ANALYSIS_GAIN = 40.0
LATENT_TOLERANCE = 1e-3  # docs/codecs.md: at most this fraction of quantised latent elements (codes) may differ
# (height, width, channels): three padded sizes (64x128, 128x128, 128x64), one gray
IMAGE_SIZES = [(64, 96, 3), (60, 100, 3), (50, 70, 3), (64, 96, 1), (128, 128, 3), (100, 60, 3), (64, 96, 3)]
CLIP_SECONDS = [
    1.0,
    1.0,
    1.5,
    1.0,
    1.5,
    1.0,
    1.0,
    1.0,
    0.6,
]  # equal lengths batch (the 24 kHz model batches whole clips)


def smooth_image(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, channels), dtype=np.uint8)
    image = Image.fromarray(coarse if channels == 3 else coarse[..., 0]).resize((width, height), Image.BICUBIC)
    return np.asarray(image).reshape(height, width, channels)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batched-sources")
    rng = np.random.default_rng(7)
    for index, (height, width, channels) in enumerate(IMAGE_SIZES):
        folder = root / "images" / "train" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = smooth_image(rng, height, width, channels)
        Image.fromarray(image[..., 0] if channels == 1 else image).save(folder / f"img{index}.png")
    speech = get_source("sample", root=None, split="speech", modality="audio")
    voice = np.concatenate([speech.load(ref).audio[0] for ref in speech.refs()])
    (root / "clips").mkdir()
    for index, seconds in enumerate(CLIP_SECONDS):
        start = index * 4000
        soundfile.write(root / "clips" / f"clip{index}.wav", voice[start : start + int(seconds * 16000)], 16000)
    return {"image": root / "images", "audio": root / "clips"}


def amplified_weights(folder: Path, name: str, **rate) -> Path:
    """random:0 made informative (module docstring), as a checkpoint file."""
    path = folder / f"amplified-random0-{name}-{'-'.join(map(str, rate.values()))}.pth"
    if not path.exists():
        codec = codecs.get(name, weights="random:0", **rate)
        state = dict(codec.model.state_dict())
        if name.startswith("encodec"):
            generator = torch.Generator().manual_seed(0)
            for key in [key for key in state if key.endswith("_codebook.embed")]:
                state[key] = 0.03 * torch.randn(state[key].shape, generator=generator)  # the encoder output's scale
                state[key.replace("embed", "inited")] = torch.ones(1)
        else:
            for key in [key for key in state if key.startswith(f"{codec.analysis_attribute}.")][-2:]:
                state[key] = state[key] * ANALYSIS_GAIN  # the last layer's weight and bias
        torch.save(state, path)
    return path


def codec_setup(name: str, tmp_path: Path) -> tuple[dict, str]:
    """(codec options, modality) of a test codec."""
    rate = {"kbps": 6} if name.startswith("encodec") else {"quality": 1 if name == "msillm" else 2}
    modality = "audio" if name.startswith("encodec") else "image"
    return {**rate, "weights": str(amplified_weights(tmp_path, name, **rate))}, modality


def bitstreams(out: Path) -> dict[str, tuple[bytes, dict]]:
    manifest = json.loads((out / "manifest.json").read_text())
    extension = manifest["codec"]["extension"]
    found = {}
    for shard in manifest["shards"]:
        mapped = MappedShard(out / shard["path"], shard["path"])
        for entry in mapped.entries:
            meta = json.loads(bytes(mapped.read(entry, "json")))
            found[entry.key] = (bytes(mapped.read(entry, extension)), meta)
    return found


def latent_of(codec, data: bytes, meta: dict) -> torch.Tensor:
    """The quantised latent a bitstream decodes to: y_hat (images) or the codes (EnCodec)."""
    return codec.latent_output(data, meta)["y_hat" if "y_hat" in codec.latent_fields else "codes"]


@pytest.mark.parametrize(
    "name", ["bmshj2018-hyperprior", pytest.param("mbt2018", marks=pytest.mark.slow), "encodec"]
)  # mbt2018's autoregressive entropy coding takes seconds per image here: marked slow, as in test_neural.py
def test_builds_at_batch_1_and_8_verify_and_decode_alike(tmp_path, sources, name):
    """Acceptance (issue 29): builds at --encode-batch 1 and 8 both pass verify --decode; their
    quantised latents differ in at most LATENT_TOLERANCE of elements, and samples whose latents
    agree decode to identical outputs."""
    options, modality = codec_setup(name, tmp_path)
    outs = {}
    for batch in (1, 8):
        outs[batch] = tmp_path / f"b{batch}"
        manifest = build(
            BuildOptions(
                codec=name,
                out=outs[batch],
                codec_options=options,
                dataset="imagefolder" if modality == "image" else "audiofolder",
                root=sources[modality],
                split="train" if modality == "image" else None,
                workers=1,
                encode_batch=batch,
                limit=3 if name == "mbt2018" else None,  # autoregressive entropy coding: seconds per image here
            )
        )
        assert manifest["num_samples"] == (
            3 if name == "mbt2018" else len(IMAGE_SIZES if modality == "image" else CLIP_SECONDS)
        )
        assert manifest["codec"]["weights"]["source"] == "file"
        assert verify(outs[batch], decode=True).decoded == manifest["num_samples"]
    assert_decode_alike(codecs.get(name, **options), bitstreams(outs[1]), bitstreams(outs[8]), modality)


def assert_decode_alike(codec, first: dict, second: dict, modality: str) -> None:
    """The documented tolerance: quantised latents (codes) of the same samples differ in at most
    LATENT_TOLERANCE of their elements, and samples whose latents agree decode identically."""
    assert first.keys() == second.keys()
    differing = total = substantial = 0
    for key, (data, meta) in first.items():
        latents = [codec.decode_latent(data, meta), codec.decode_latent(*second[key])]
        a, b = (torch.cat([part if modality == "image" else part[0] for part in lat.parts], -1) for lat in latents)
        assert a.shape == b.shape
        differing += int((a != b).sum())
        total += a.numel()
        assert int((a != b).sum()) <= LATENT_TOLERANCE * a.numel(), key  # the tolerance holds per sample
        if modality == "image":  # a latent element moves by at most one quantisation step
            assert float((a - b).abs().max()) <= 1.0, key
        substantial += int((a.abs() > 0.5).sum()) if modality == "image" else int((a != 0).sum())
        if torch.equal(a, b):  # the same latent and the same header: the same decoded output
            one, other = codec.synthesize(latents)
            assert torch.equal(one, other), key
    assert substantial >= 0.05 * total  # the latents carry information: the comparison is not between zeros
    assert differing <= LATENT_TOLERANCE * total


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "mbt2018-mean", "msillm"])
def test_every_batched_bitstream_decodes_to_the_latent_its_encoder_quantised(tmp_path, name):
    """The entropy coder's scales and means at decode equal the encoder's: each decoded latent
    element lies within half a step of the analysis output that was coded (4 images, 2 sizes,
    one batch; mbt2018's context model is covered by the acceptance build's verify --decode)."""
    options, _ = codec_setup(name, tmp_path)
    codec = codecs.get(name, **options)
    rng = np.random.default_rng(1)
    samples = [SourceSample(key=str(i), image=smooth_image(rng, *size)) for i, size in enumerate(IMAGE_SIZES[:4])]
    analyses = codec.analyse([codec.analysis_input(s) for s in samples])
    streams = codec.encode_batch_samples(samples)
    for sample, y, data in zip(samples, analyses, streams):
        y_hat = codec.decode_latent(data, {}).parts[0]
        assert y_hat.shape == y.shape
        assert float((y_hat - y).abs().max()) <= 0.5 + 1e-4, sample.key
        assert float((y.abs() > 0.5).float().mean()) >= 0.05


def test_padding_to_a_common_shape_would_change_latents(tmp_path):
    """Why batches hold inputs of one shape only: padding an image further (to batch it with a
    larger one) changes its latent, and right-padding a clip changes EnCodec's last codes."""
    codec = codecs.get("bmshj2018-hyperprior", **codec_setup("bmshj2018-hyperprior", tmp_path)[0])
    image = smooth_image(np.random.default_rng(2), 64, 96, 3)
    alone = codec.analysis_input(SourceSample(key="a", image=image))  # [3, 64, 128]
    padded = torch.nn.functional.pad(alone[None], (0, 64, 0, 64), mode="replicate")[0]  # [3, 128, 192]
    y_alone, y_padded = codec.analyse([alone, padded])
    crop = y_padded[..., : y_alone.shape[-2], : y_alone.shape[-1]]
    assert not torch.equal(torch.round(crop), torch.round(y_alone))
    encodec = codecs.get("encodec", **codec_setup("encodec", tmp_path)[0])
    clip = torch.from_numpy((0.1 * np.random.default_rng(7777).standard_normal((1, 7777))).astype(np.float32))
    (short,) = encodec.analyse([clip])
    (long,) = encodec.analyse([torch.nn.functional.pad(clip, (0, 5000))])  # the last frame's reflect padding changes
    codes_short, codes_long = short.frames[0][0], long.frames[0][0][..., : short.frames[0][0].shape[-1]]
    assert bool((codes_short != 0).any()) and not torch.equal(codes_short, codes_long)
    # ...while inputs of one shape batch to exactly the per-sample analysis on this CPU
    batch = encodec.analyse([clip, clip.flip(-1), clip])
    assert all(torch.equal(b.frames[0][0], short.frames[0][0]) for b in batch[::2])


@pytest.mark.parametrize("name, rate, channels", [("encodec", 16000, 1), ("encodec-48khz", 44100, 2)])
def test_encodec_batched_files_equal_encodec_own_compress(tmp_path, name, rate, channels):
    """Clips of three lengths (the 48 kHz model batches its 1 s segments across clips): each
    file equals what encodec's own compress writes for the clip alone."""
    encodec_compress = sys.modules["encodec.compress"]
    codec = codecs.get(name, **codec_setup(name, tmp_path)[0])
    rng = np.random.default_rng(4)
    samples = [
        SourceSample(
            key=str(i),
            audio=(0.1 * rng.standard_normal((channels, int(s * rate)))).astype(np.float32),
            sample_rate=rate,
        )
        for i, s in enumerate([0.4, 1.2, 0.7, 1.2])
    ]
    batched = codec.encode_batch_samples(samples)
    assert len({data[-200:] for data in batched}) == len(batched)  # informative codes, not all zeros
    for sample, data in zip(samples, batched):
        assert data == encodec_compress.compress(codec.model, codec.analysis_input(sample), use_lm=False)


def test_worker_processes_and_parent_analysis_give_the_single_process_bitstreams(tmp_path, sources):
    """Batches encoded in worker processes (as encode_all hands them out on CPU), and the
    accelerator layout (analysis in this process, workers loading and entropy-coding; run here
    with the CPU as the device), decode like the one-process batch-1 build."""
    options, _ = codec_setup("bmshj2018-hyperprior", tmp_path)
    build(
        BuildOptions(
            codec="bmshj2018-hyperprior",
            codec_options=options,
            dataset="imagefolder",
            root=sources["image"],
            out=tmp_path / "one",
            workers=1,
        )
    )
    reference = bitstreams(tmp_path / "one")
    codec = codecs.get("bmshj2018-hyperprior", **options)
    source = get_source("imagefolder", root=sources["image"], split="train", modality="image")
    refs = source.refs()
    with multiprocessing.get_context("spawn").Pool(
        2, initializer=encode_stage._init_worker, initargs=(source, codec.name, options, [])
    ) as pool:
        tasks = [pool.apply_async(encode_stage._work, (refs[i : i + 4], True)) for i in range(0, len(refs), 4)]
        in_workers = [result for task in tasks for result in task.get()]
        in_parent = list(encode_stage._parent_analysis(pool, codec, refs, 3, 2, torch.device("cpu")))
    for results in (in_workers, in_parent):
        assert [r.key for r in results] == [ref.key for ref in refs] and len(results) == len(reference)
        encoded = {key: (r.candidates[0][1], meta) for (key, (_, meta)), r in zip(reference.items(), results)}
        assert_decode_alike(codec, reference, encoded, "image")


def test_device_and_batch_are_checked(tmp_path):
    with pytest.raises(UsageError, match="not a torch device"):
        build(
            BuildOptions(
                codec="encodec",
                out=tmp_path / "a",
                codec_options={"kbps": 6, "weights": "random:0"},
                device="gpu-please",
                workers=1,
                limit=1,
            )
        )
    with pytest.raises(UsageError, match="apply to neural codecs"):
        build(
            BuildOptions(
                codec="jpeg", out=tmp_path / "b", codec_options={"quality": 5}, encode_batch=4, workers=1, limit=1
            )
        )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lossyds.cli",
            "build",
            "--codec",
            "jpeg",
            "--quality",
            "5",
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "apply to neural codecs" in result.stderr and "Traceback" not in result.stderr


def test_a_batched_build_interrupted_mid_batch_resumes_to_the_uninterrupted_build(tmp_path, sources, monkeypatch):
    """Resume re-encodes the written part of the batch it stopped in: the resumed build hands the
    encoder the uninterrupted build's batches, and its shards and manifest are byte for byte
    the same."""
    from lossyds.manifest import JOURNAL_NAME

    from .conftest import file_hashes

    options, _ = codec_setup("bmshj2018-hyperprior", tmp_path)
    batches: list[list[str]] = []  # the keys of each batch handed to the encoder, in order
    encode_batch = encode_stage.encode_batch

    def recording(source, codec, refs, *args, **kwargs):
        batches.append([ref.key for ref in refs])
        return encode_batch(source, codec, refs, *args, **kwargs)

    monkeypatch.setattr(encode_stage, "encode_batch", recording)

    def build_into(out: Path, *progress) -> None:
        settings = BuildOptions(
            codec="bmshj2018-hyperprior",
            codec_options=options,
            dataset="imagefolder",
            root=sources["image"],
            split="train",
            out=out,
            workers=1,  # in this process, where the recording sees the batches
            encode_batch=3,
            shard_samples=2,
        )
        build(settings, *progress)

    build_into(tmp_path / "whole")
    whole, batches[:] = list(batches), []
    assert [len(keys) for keys in whole] == [3, 3, 1]

    def stop_at_four(done: int, total: int) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_into(tmp_path / "resumed", stop_at_four)
    written = json.loads((tmp_path / "resumed" / JOURNAL_NAME).read_text())["next_index"]
    assert written % 3 != 0  # it stopped inside a batch
    batches[:] = []
    build_into(tmp_path / "resumed")
    assert batches == whole[written // 3 :]  # from the batch it stopped in, cut where the whole build cut
    assert file_hashes(tmp_path / "resumed") == file_hashes(tmp_path / "whole")
