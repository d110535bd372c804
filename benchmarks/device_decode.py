"""Two-stage neural decode on an accelerator: entropy decoding on CPU, synthesis batched on the device.

For bmshj2018-hyperprior (q2, ImageNet-sized 500x375 photos) and EnCodec 24 kHz (6 kbps,
speech at 16 kHz), with test weights (random init, seed 0: entropy decoding speed depends
on the bitstream, so absolute figures are indicative; the ratios are the point), prints:

  - one-by-one decode on CPU (the `decode` path), and the entropy stage alone in one
    process with one thread (as in a DataLoader worker);
  - the synthesis network alone on DEVICE at batch 1, 8 and 32 (latents already decoded);
  - the loader end to end: lossyds.DataLoader with W workers and `decode_device=DEVICE`,
    against W workers decoding wholly on CPU, and against the device's synthesis limit;
  - how far DEVICE decoding is from CPU decoding (uint8 pixels / float samples), and, for
    the record, how many entropy-coder scale indexes the hyper-synthesis would get wrong
    if it ran on DEVICE instead of CPU (why lossyds keeps that stage on CPU).

    python benchmarks/device_decode.py --device cuda --workers 4,12
    python benchmarks/device_decode.py --device cpu --images 8 --utterances 4 --workers 2   # smoke run

With W workers, the main process runs at cores - W torch threads (--main-threads auto; `keep`
measures torch's default of one per core, which oversubscribes the cores the workers use).

Exit status: 0 when the loader with decode_device reached --target of the best possible
rate, min(device synthesis limit, min(W, batches of 32 per epoch) x one-process entropy rate)
(a worker makes whole batches, so --images below 32 x W leaves workers idle), else 1 (--no-check: 0);
2 when a section could not run.
"""

from __future__ import annotations

import argparse
import json
import os
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

import lossyds  # noqa: E402
from lossyds import codecs  # noqa: E402
from lossyds.builder import BuildOptions, build  # noqa: E402
from lossyds.shards.mapped import MappedShard  # noqa: E402
from lossyds.sources import get as get_builder  # noqa: E402

warnings.filterwarnings("ignore")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIN_SECONDS = 1.0  # how long each per-stage figure is measured (--seconds)


def per_second(function, items: int, device: torch.device) -> float:
    """Items per second of `function` (which processes `items` items), after one warm-up call."""
    function()
    synchronize(device)
    done, start = 0, time.perf_counter()
    while True:
        function()
        synchronize(device)
        done += items
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def make_speech_folder(root: Path, count: int) -> Path:
    """`count` utterances of 4-16 s made by joining the sample's espeak-ng utterances (16 kHz)."""
    speech = get_builder("sample", root=None, split="speech", modality="audio")
    clips = [speech.load(r).audio for r in speech.refs()]
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        target = root / f"utt-{index:04d}.wav"
        if target.exists():
            continue
        seconds = 4 + (index * 7) % 13
        pieces, have, k = [], 0, index
        while have < seconds * 16000:
            pieces.append(clips[k % len(clips)])
            have += clips[k % len(clips)].shape[1]
            k += 1
        soundfile.write(target, np.concatenate(pieces, axis=1)[0, : seconds * 16000], 16000, subtype="PCM_16")
    return root


def payloads(out: Path, limit: int) -> tuple[list[bytes], list[dict]]:
    """The first `limit` bitstreams of a build and their sample metadata."""
    manifest = json.loads((out / "manifest.json").read_text())
    extension = manifest["codec"]["extension"]
    streams, metas = [], []
    for shard in manifest["shards"]:
        mapped = MappedShard(out / shard["path"], shard["path"])
        for entry in mapped.entries:
            streams.append(bytes(mapped.read(entry, extension)))
            metas.append(json.loads(bytes(mapped.read(entry, "json"))))
            if len(streams) == limit:
                return streams, metas
    return streams, metas


MAIN_THREADS = "auto"  # --main-threads


def main_threads(workers: int) -> int:
    """The main process's torch threads while W workers run: `auto` leaves the workers their
    cores (cores - W, at least 1). Torch's default, one thread per core, makes the main
    process's CPU ops (collecting and concatenating latents) spin OpenMP threads on the cores
    the workers entropy-decode on; `keep` measures that default."""
    if MAIN_THREADS == "keep":
        return torch.get_num_threads()
    if MAIN_THREADS == "auto":
        return max(1, (os.cpu_count() or 1) - workers)
    return int(MAIN_THREADS)


def loader_rate(out: Path, workers: int, batch: int, device: torch.device | None, unit) -> float:
    """Units (images or audio seconds) per second through lossyds.DataLoader, one epoch after a
    warm one, with the main process at `main_threads(workers)` torch threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(main_threads(workers))
    try:
        return _loader_rate(out, workers, batch, device, unit)
    finally:
        torch.set_num_threads(threads)


def _loader_rate(out: Path, workers: int, batch: int, device: torch.device | None, unit) -> float:
    dataset = lossyds.open_dataset(out, decode_device=device)
    loader = lossyds.DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=lambda samples: samples,
    )
    for _ in loader:  # warm: workers started, models loaded, device copies made
        pass
    start, units = time.perf_counter(), 0.0
    for samples in loader:
        units += sum(unit(s) for s in samples)
    synchronize(device or torch.device("cpu"))
    return units / (time.perf_counter() - start)


def hyper_index_mismatch(codec, streams: list[bytes], device: torch.device) -> tuple[int, int]:
    """(differing, total) Gaussian-conditional indexes when h_s runs on `device` instead of CPU."""
    from lossyds.codecs import lsyn

    model = codec.model
    h_s = codec.module_on(device, "h_s")
    differing = total = 0
    with torch.no_grad():
        for data in streams:
            stream = lsyn.unpack(data)
            z_hat = model.entropy_bottleneck.decompress(stream.strings[1], stream.latent_shape)
            on_cpu = model.gaussian_conditional.build_indexes(model.h_s(z_hat))
            on_device = model.gaussian_conditional.build_indexes(h_s(z_hat.to(device)).cpu())
            differing += int((on_cpu != on_device).sum())
            total += on_cpu.numel()
    return differing, total


def figures(
    name: str,
    codec,
    streams,
    metas,
    out: Path,
    device: torch.device,
    workers: list[int],
    unit_name: str,
    unit,
    per_item: list[float],
) -> dict:
    """One codec's figures; `per_item[i]` is item i's units (1 image, or its seconds)."""
    result: dict = {"codec": name, "device": str(device), "unit": unit_name}
    units = sum(per_item)
    result["cpu_one_by_one"] = (
        per_second(lambda: [codec.decode(s, m) for s, m in zip(streams, metas)], 1, torch.device("cpu")) * units
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    entropy = (
        per_second(lambda: [codec.decode_latent(s, m) for s, m in zip(streams, metas)], 1, torch.device("cpu")) * units
    )
    torch.set_num_threads(threads)
    result["entropy_stage_one_process"] = entropy
    latents = [codec.decode_latent(s, m) for s, m in zip(streams, metas)]
    synthesis = {}
    for batch in (1, 8, 32):
        groups = [latents[i : i + batch] for i in range(0, len(latents), batch)]
        synthesis[batch] = (
            per_second(lambda groups=groups: [codec.synthesize(g, device) for g in groups], 1, device) * units
        )
    result["synthesis_on_device"] = synthesis
    cpu_decoded = [codec.decode(s, m) for s, m in zip(streams, metas)]
    device_decoded = codec.synthesize(latents, device)
    diffs = [(a.float() - b.cpu().float()).abs() for a, b in zip(cpu_decoded, device_decoded)]
    result["max_abs_diff_device_vs_cpu"] = max(float(d.max()) for d in diffs)
    result["fraction_differing"] = sum(int((d > 0).sum()) for d in diffs) / sum(d.numel() for d in diffs)
    result["loader"] = {}
    for w in workers:
        two_stage = loader_rate(out, w, 32, device, unit)
        on_cpu = loader_rate(out, w, 32, None, unit)
        # each worker makes whole batches of 32: an epoch of B batches keeps at most B workers busy
        batches = -(-json.loads((out / "manifest.json").read_text())["num_samples"] // 32)
        best = min(max(synthesis.values()), min(w, batches) * entropy)
        result["loader"][w] = {
            "decode_device": two_stage,
            "cpu_only": on_cpu,
            "best_possible": best,
            "fraction_of_best": two_stage / best,
            "main_threads": main_threads(w),
        }
    return result


def print_result(r: dict) -> None:
    u = r["unit"]
    print(f"\n== {r['codec']} on {r['device']} ({u}/s) ==")
    print(f"  CPU decode one by one (main process, {torch.get_num_threads()} threads): {r['cpu_one_by_one']:9.1f}")
    print(f"  entropy stage alone, one process, 1 thread:      {r['entropy_stage_one_process']:9.1f}")
    for batch, value in r["synthesis_on_device"].items():
        print(f"  synthesis on {r['device']}, batch {batch:2d}:                     {value:9.1f}")
    print(
        f"  device vs CPU decode: max |diff| {r['max_abs_diff_device_vs_cpu']:.3g}, fraction of values differing {r['fraction_differing']:.4f}"
    )
    for w, f in r["loader"].items():
        print(
            f"  loader, {w:2d} workers, main {f['main_threads']} threads: decode_device {f['decode_device']:9.1f} | all on CPU {f['cpu_only']:9.1f} | "
            f"best possible {f['best_possible']:9.1f} -> {f['fraction_of_best']:.2f} of best, {f['decode_device'] / f['cpu_only']:.2f}x CPU-only"
        )


def image_section(args, device: torch.device, workers: list[int]) -> dict:
    start = time.perf_counter()
    photos = make_photo_folder(args.workdir / "photos", args.images)
    out = args.workdir / f"hyperprior-{args.images}"
    if not (out / "manifest.json").exists():
        build(
            BuildOptions(
                codec="bmshj2018-hyperprior",
                out=out,
                codec_options={"quality": 2, "weights": "random:0"},
                dataset="imagefolder",
                root=photos,
                split="train",
                shard_samples=64,
                workers=args.build_workers,
            )
        )
    print(f"built {args.images} images in {time.perf_counter() - start:.0f} s")
    codec = codecs.get("bmshj2018-hyperprior", quality=2, weights="random:0")
    streams, metas = payloads(out, args.sample)
    r = figures(
        "bmshj2018-hyperprior q2, 500x375",
        codec,
        streams,
        metas,
        out,
        device,
        workers,
        "images",
        lambda s: 1,
        [1.0] * len(streams),
    )
    differing, total = hyper_index_mismatch(codec, streams[:8], device)
    r["hyper_synthesis_on_device_index_mismatch"] = [differing, total]
    print_result(r)
    print(
        f"  h_s on {device} instead of CPU: {differing} of {total} scale indexes differ (each one would derail the entropy decoder)"
    )
    return r


def audio_section(args, device: torch.device, workers: list[int]) -> dict:
    start = time.perf_counter()
    speech = make_speech_folder(args.workdir / "speech", args.utterances)
    out = args.workdir / f"encodec-{args.utterances}"
    if not (out / "manifest.json").exists():
        build(
            BuildOptions(
                codec="encodec",
                out=out,
                codec_options={"kbps": 6, "weights": "random:0"},
                dataset="audiofolder",
                root=speech,
                shard_samples=32,
                workers=args.build_workers,
            )
        )
    print(f"built {args.utterances} utterances in {time.perf_counter() - start:.0f} s")
    codec = codecs.get("encodec", kbps=6, weights="random:0")
    streams, metas = payloads(out, args.sample)
    seconds = [m["num_frames"] / m["sample_rate"] for m in metas]
    r = figures(
        "EnCodec 24 kHz 6 kbps, speech",
        codec,
        streams,
        metas,
        out,
        device,
        workers,
        "audio seconds",
        lambda s: s["num_frames"] / s["sample_rate"],
        seconds,
    )
    print_result(r)
    return r


def main() -> int:
    global MIN_SECONDS, MAIN_THREADS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--workers", default="4,12", help="comma-separated DataLoader worker counts")
    parser.add_argument("--build-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--sample", type=int, default=32, help="bitstreams used for the per-stage figures")
    parser.add_argument("--target", type=float, default=0.75)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-device-bench")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-check", action="store_true", help="exit 0 whether or not the target is met")
    parser.add_argument("--sections", default="image,audio", help="which of image,audio to run")
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time of each per-stage figure")
    parser.add_argument(
        "--main-threads", default="auto", help="the main process's torch threads in the loader figures: auto, keep or N"
    )
    args = parser.parse_args()
    MIN_SECONDS = args.seconds
    MAIN_THREADS = args.main_threads
    device = torch.device(args.device)
    workers = [int(w) for w in args.workers.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        print(
            f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
        )
    print(f"CPU cores: {os.cpu_count()}, build workers: {args.build_workers}")
    results, failed, broken = [], False, False

    sections = {
        "image": lambda: image_section(args, device, workers),
        "audio": lambda: audio_section(args, device, workers),
    }
    for name, section in sections.items():
        if name not in args.sections.split(","):
            continue
        try:
            results.append(section())
        except (
            Exception
        ):  # one section's failure (a missing package on a fresh machine) must not hide the other's figures
            import traceback

            traceback.print_exc()
            print(f"{name} section FAILED")
            broken = True

    for r in results:
        for _w, f in r["loader"].items():
            failed |= f["fraction_of_best"] < args.target
    print(
        f"\ntarget: the loader with decode_device reaches {args.target:.2f} of the best possible rate -> {'met' if not failed else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 2 if broken else 1 if failed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
