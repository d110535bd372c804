"""Batched neural encoding on a device against the one-by-one CPU encode.

For bmshj2018-hyperprior (q2, ImageNet-sized 500x375 photos) and EnCodec 24 kHz (6 kbps,
10 s clips: the 24 kHz model batches clips of equal length only), prints samples per second of:

  - the one-by-one CPU encode (`codec.encode`, main process, all its threads);
  - `encode_batch_samples` at each --batch on DEVICE, and within it the analysis alone on
    DEVICE and the per-sample CPU entropy coding alone (what the device cannot speed up);
  - whole builds: --workers processes encoding one by one on CPU, against the same workers
    with --device DEVICE --encode-batch B (analysis in the main process, entropy coding in
    the workers);

with the ratios side by side, and how far the DEVICE bitstreams are from the CPU ones: the
fraction of quantised latent elements (codes) that differ (docs/codecs.md allows 0.1%).

Test weights: random:0 would quantise every latent element to zero (and EnCodec's codebooks
start at zero), which makes entropy coding unrealistically cheap; so, as in
tests/test_batched_encode.py, the analysis output is scaled (images) and the codebooks drawn at
random (EnCodec). Pass --weights-dir with pretrained checkpoints for real figures.

    python benchmarks/batched_encode.py --device cuda --images 256 --clips 64 --batch 1,8,32 --workers 4
    python benchmarks/batched_encode.py --device cpu --images 2 --clips 2 --clip-seconds 1 --batch 2 --workers 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_photo_folder  # noqa: E402

from lossyds import codecs  # noqa: E402
from lossyds.builder import BuildOptions, build  # noqa: E402
from lossyds.sources import get as get_source  # noqa: E402

warnings.filterwarnings("ignore")
ANALYSIS_GAIN = 40.0


def test_weights(folder: Path, name: str, rate: dict) -> Path:
    """random:0 made informative (module docstring), saved as a checkpoint file."""
    path = folder / f"amplified-random0-{name}.pth"
    if path.exists():
        return path
    codec = codecs.get(name, weights="random:0", **rate)
    state = dict(codec.model.state_dict())
    if name.startswith("encodec"):
        generator = torch.Generator().manual_seed(0)
        for key in [key for key in state if key.endswith("_codebook.embed")]:
            state[key] = 0.03 * torch.randn(state[key].shape, generator=generator)
            state[key.replace("embed", "inited")] = torch.ones(1)
    else:
        for key in [key for key in state if key.startswith(f"{codec.analysis_attribute}.")][-2:]:
            state[key] = state[key] * ANALYSIS_GAIN
    torch.save(state, path)
    return path


def make_clips(root: Path, count: int, seconds: float = 10.0) -> Path:
    """`count` 16 kHz clips of exactly `seconds`, cut from the sample's joined utterances."""
    speech = get_source("sample", root=None, split="speech", modality="audio")
    voice = np.concatenate([speech.load(ref).audio[0] for ref in speech.refs()])
    length = int(seconds * 16000)
    voice = np.tile(voice, 2 + length // voice.size)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        target = root / f"clip-{index:04d}.wav"
        if not target.exists():
            start = (index * 7919) % (voice.size - length)
            soundfile.write(target, voice[start : start + length], 16000, subtype="PCM_16")
    return root


def timed(function) -> float:
    """Seconds of one call of function() (device work synchronised)."""
    start = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def latent_disagreement(codec, ours: list[bytes], theirs: list[bytes], metas: list[dict]) -> float:
    """Fraction of quantised latent elements (EnCodec: codes) that differ between two encodings."""
    differing = total = 0
    for a, b, meta in zip(ours, theirs, metas):
        parts = [codec.decode_latent(data, meta).parts for data in (a, b)]
        x, y = (torch.cat([p if isinstance(p, torch.Tensor) else p[0] for p in ps], -1) for ps in parts)
        differing += int((x != y).sum()) if x.shape == y.shape else x.numel()
        total += x.numel()
    return differing / max(total, 1)


def section(name: str, options: dict, source_args: dict, args, device: torch.device) -> dict:
    codec = codecs.get(name, **options)
    source = get_source(**source_args, modality=codec.modality)
    samples = [source.load(ref) for ref in source.refs()]
    count = len(samples)
    metas = [
        {"sample_rate": s.sample_rate, "num_frames": s.audio.shape[1]} if s.audio is not None else {} for s in samples
    ]
    codec.encode(samples[0])  # warm: model built, kernels chosen
    cpu_streams: list[bytes] = []
    result: dict = {"codec": name, "device": str(device), "samples": count}
    result["cpu_one_by_one"] = count / timed(lambda: cpu_streams.extend(codec.encode(s) for s in samples))
    result["batches"] = {}
    for batch in args.batch:
        chunks = [samples[i : i + batch] for i in range(0, count, batch)]
        codec.encode_batch_samples(chunks[0], device)  # warm: device copy made, kernels chosen
        streams: list[bytes] = []
        seconds = timed(lambda: [streams.extend(codec.encode_batch_samples(c, device)) for c in chunks])  # noqa: B023
        inputs = [[codec.analysis_input(s) for s in c] for c in chunks]
        analyses: list = []
        analysis_s = timed(lambda: [analyses.extend(codec.analyse(i, device)) for i in inputs])  # noqa: B023
        entropy_s = timed(lambda: [codec.entropy_code(s, a) for s, a in zip(samples, analyses)])  # noqa: B023
        result["batches"][batch] = {
            "encode": count / seconds,
            "analysis_only": count / analysis_s,
            "entropy_only_cpu": count / entropy_s,
            "latent_disagreement_vs_cpu": latent_disagreement(codec, streams, cpu_streams, metas),
        }
    result["builds"] = builds(name, options, source_args, args, device)
    return result


def builds(name: str, options: dict, source_args: dict, args, device: torch.device) -> dict:
    """Samples/s of whole builds: one by one on CPU against batched on `device`, same workers."""
    figures = {}
    for label, build_device, batch in (
        ("cpu_batch_1", "cpu", 1),
        (f"{device}_batch_{max(args.batch)}", str(device), max(args.batch)),
    ):
        out = args.workdir / f"build-{name}-{label}"
        source = {k: v for k, v in source_args.items() if k != "name"}
        start = time.perf_counter()
        manifest = build(
            BuildOptions(
                codec=name,
                out=out,
                codec_options=options,
                dataset=source_args["name"],
                workers=args.workers,
                device=build_device,
                encode_batch=batch,
                force=True,
                **source,
            )
        )
        figures[label] = manifest["num_samples"] / (time.perf_counter() - start)
    return figures


def print_result(r: dict) -> None:
    base = r["cpu_one_by_one"]
    print(f"\n== {r['codec']}: {r['samples']} samples, samples/s (x = ratio to the one-by-one CPU encode) ==")
    print(f"  CPU one by one ({torch.get_num_threads()} threads): {base:8.2f}")
    for batch, f in r["batches"].items():
        print(
            f"  batch {batch:3d} on {r['device']}: encode {f['encode']:8.2f} ({f['encode'] / base:5.2f}x) | "
            f"analysis alone {f['analysis_only']:8.2f} ({f['analysis_only'] / base:5.2f}x) | "
            f"CPU entropy coding alone {f['entropy_only_cpu']:8.2f} | "
            f"latent elements differing from CPU {f['latent_disagreement_vs_cpu']:.2e}"
        )
    labels = list(r["builds"])
    print(
        f"  builds: {labels[0]} {r['builds'][labels[0]]:8.2f} | {labels[1]} {r['builds'][labels[1]]:8.2f} "
        f"-> batched/one-by-one {r['builds'][labels[1]] / r['builds'][labels[0]]:5.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--clips", type=int, default=64, help="speech clips for EnCodec")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of every clip")
    parser.add_argument("--batch", default="1,8,32", help="comma-separated --encode-batch values")
    parser.add_argument("--workers", type=int, default=4, help="worker processes of the whole builds")
    parser.add_argument("--sections", default="image,audio")
    parser.add_argument(
        "--weights-dir", type=Path, default=None, help="checkpoints NAME.pth to use instead of test weights"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-batched-encode")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    args.batch = [int(b) for b in args.batch.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    plans = {
        "image": (
            "bmshj2018-hyperprior",
            {"quality": 2},
            {"name": "imagefolder", "root": make_photo_folder(args.workdir / "photos", args.images), "split": "train"},
        ),
        "audio": (
            "encodec",
            {"kbps": 6},
            {
                "name": "audiofolder",
                "root": make_clips(args.workdir / f"clips-{args.clip_seconds:g}s", args.clips, args.clip_seconds),
                "split": None,
            },
        ),
    }
    results = []
    for key, (name, rate, source_args) in plans.items():
        if key not in args.sections.split(","):
            continue
        given = args.weights_dir / f"{name}.pth" if args.weights_dir else None
        weights = given if given and given.exists() else test_weights(args.workdir, name, rate)
        result = section(name, {**rate, "weights": str(weights)}, source_args, args, device)
        print_result(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
