"""Neural decode throughput on this device: one by one vs batched, and through the loader.

Test weights (random init, seed 0): entropy decoding speed depends on the bitstream, so
treat absolute figures as indicative; the ratios (batched / one-by-one, loader /
one-by-one) are what this script is for. Prints:
  EnCodec 24 kHz 6 kbps: real-time factor one by one, batch B, and through the loader;
  with --entropy-lm: bytes against bit-packed, and the LM decoding's real-time factor
  bmshj2018-hyperprior q2 (256x256): images/s one by one, batch B, and through the loader;
    its synthesis network channels-last (what lossyds runs on CPU) against NCHW (as loaded), 512x512

    python benchmarks/neural_decode.py --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import lossyds
from lossyds import codecs
from lossyds.builder import BuildOptions, build
from lossyds.sources import get as get_builder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_seconds  # noqa: E402


def encodec_figures(batch: int, workdir: Path) -> None:
    codec = codecs.get("encodec", kbps=6, weights="random:0")
    speech = get_builder("sample", root=None, split="speech", modality="audio")
    clip = speech.load(speech.refs()[0])
    clips = [clip] * batch
    seconds = clip.audio.shape[1] / clip.sample_rate * batch
    streams = [codec.encode(c) for c in clips]
    model = codec.model
    one = best_seconds(lambda: [codec.decode_codes(s) for s in streams])
    # Batched synthesis: the same codes decoded as one batch through the model's decoder.
    frames = model.encode(
        torch.from_numpy(
            np.ascontiguousarray(np.stack([codec._to_model(c.audio, c.sample_rate).numpy() for c in clips]))
        )
    )
    with torch.no_grad():
        batched = best_seconds(lambda: model.decode(frames))
    out = workdir / "encodec"
    if not (out / "manifest.json").exists():
        build(BuildOptions(codec="encodec", out=out, codec_options={"kbps": 6, "weights": "random:0"}, workers=1))
    dataset = lossyds.open_dataset(out)
    total = sum(s["num_frames"] / s["sample_rate"] for s in dataset)
    loader = best_seconds(lambda: list(dataset), repeat=1)
    print(
        f"EnCodec 24 kHz 6 kbps (CPU, {torch.get_num_threads()} threads): one by one {seconds / one:6.1f}x real time, batch {batch} {seconds / batched:6.1f}x, loader {total / loader:6.1f}x; batched/one-by-one {one / batched:.2f}"
    )


def encodec_lm_figures() -> None:
    """EnCodec 6 kbps with --entropy-lm (a random LM here: it costs bits instead of saving them)."""
    speech = get_builder("sample", root=None, split="speech", modality="audio")
    clip = speech.load(speech.refs()[0])
    seconds = clip.audio.shape[1] / clip.sample_rate
    plain = codecs.get("encodec", kbps=6, weights="random:0")
    with_lm = codecs.get("encodec", kbps=6, weights="random:0", entropy_lm=True)
    packed, coded = plain.encode(clip), with_lm.encode(clip)
    decode = best_seconds(lambda: with_lm.decode_codes(coded), repeat=1)
    print(
        f"EnCodec 24 kHz 6 kbps with the entropy LM (random LM, CPU): {seconds:.1f} s utterance {len(coded)} bytes vs {len(packed)} bit-packed; LM decoding {seconds / decode:5.1f}x real time"
    )


def hyperprior_figures(batch: int, workdir: Path) -> None:
    codec = codecs.get("bmshj2018-hyperprior", quality=2, weights="random:0")
    photo = get_builder("sample", root=None, split="photos", modality="image")
    image = photo.load(photo.refs()[0]).image[:256, :256]
    crops = [np.ascontiguousarray(np.roll(image, i * 17, axis=1)) for i in range(batch)]
    streams = codec.encode_batch(crops)
    one = best_seconds(lambda: [codec.decode(s, {}) for s in streams])
    from lossyds.codecs import lsyn

    parsed = [lsyn.unpack(s) for s in streams]
    strings = [[p.strings[g][0] for p in parsed] for g in range(len(parsed[0].strings))]
    with torch.no_grad():
        batched = best_seconds(lambda: codec.model.decompress(strings, parsed[0].latent_shape))
    print(
        f"bmshj2018-hyperprior q2 256x256 (CPU): one by one {batch / one:6.1f} images/s, batch {batch} {batch / batched:6.1f} images/s; batched/one-by-one {one / batched:.2f}"
    )
    # The CPU synthesis runs channels-last (LearnedImageCodec.synthesis_on): against the network as loaded (NCHW),
    # on the same latents of two full-size 512x512 photos.
    full = photo.load(photo.refs()[0]).image
    full_streams = codec.encode_batch([full, np.ascontiguousarray(np.roll(full, 101, axis=1))])
    nchw = codec.copy_module("g_s").to(memory_format=torch.contiguous_format)
    latents = [codec.decode_latent(s, {}) for s in full_streams]
    synthesis, layout = codec.synthesis_on("cpu")
    rounds: list[
        tuple[float, float, float]
    ] = []  # (channels-last, NCHW, entropy stage) seconds, measured in turn: this machine is noisy
    with torch.no_grad():
        for _ in range(5):
            rounds.append(
                (
                    best_seconds(
                        lambda: [synthesis(latent.parts[0].contiguous(memory_format=layout)) for latent in latents],
                        repeat=1,
                    ),
                    best_seconds(lambda: [nchw(latent.parts[0]) for latent in latents], repeat=1),
                    best_seconds(lambda: [codec.decode_latent(s, {}) for s in full_streams], repeat=1),
                )
            )
    count = len(full_streams)
    synthesis_ratio = statistics.median(n / c for c, n, _ in rounds)
    decode_ratio = statistics.median((e + n) / (e + c) for c, n, e in rounds)
    channels_last, as_loaded, entropy = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(
        f"  512x512, synthesis alone: channels-last {count / channels_last:5.1f} images/s, NCHW {count / as_loaded:5.1f}: {synthesis_ratio:.2f}x; "
        f"whole decode (entropy stage {count / entropy:.1f} images/s + synthesis): {decode_ratio:.2f}x (medians of 5 interleaved rounds)"
    )


def autoregressive_figures() -> None:
    """mbt2018 / cheng2020-anchor decode one 300x451 photo at a time: serial context model."""
    photo = get_builder("sample", root=None, split="photos", modality="image")
    image = photo.load(photo.refs()[1])  # chelsea, 300x451
    for name in ("mbt2018", "cheng2020-anchor"):
        codec = codecs.get(name, quality=1, weights="random:0")
        stream = codec.encode(image)
        seconds = best_seconds(lambda codec=codec, stream=stream: codec.decode(stream, {}), repeat=1)
        print(f"{name} q1 300x451 (CPU): {seconds:.2f} s per image decode")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-bench")
    parser.add_argument("--autoregressive", action="store_true", help="also time mbt2018 and cheng2020-anchor (slow)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    encodec_figures(args.batch, args.workdir)
    encodec_lm_figures()
    hyperprior_figures(args.batch, args.workdir)
    if args.autoregressive:
        autoregressive_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
