"""Classify straight from a learned codec's latents, against the same classifier on decoded pixels, at equal bits.

Both models read the same builds, so the same bitstreams and the same bits per sample: one
through `open_dataset(..., output="latent")` (CompressAI's quantised latent y_hat
[C, H/16, W/16]: entropy decoding only, no synthesis network), the other decoded to pixels.
The two share one trunk (input BatchNorm, two 3x3 conv layers, global pooling, a linear
head); the pixel model puts a stem of four stride-2 convolutions in front of it, which
brings [3, H, W] to the latent's grid. Every epoch prints the bits per sample the loader fed
and its samples per second.

Small run (CPU, about a minute): crops of the sample photos (6 classes), and a small
bmshj2018-factorized codec trained here for a few steps (no pretrained weights are
reachable offline; its checkpoint is a real file, recorded as such in the manifest):
    python examples/latent_classification.py
Full scale, on builds made with the pretrained weights (images cut to one size, e.g. 256):
    python examples/latent_classification.py --train out/in-train-256-hyper3 --test out/in-val-256-hyper3 \
        --classes 1000 --size 256 --epochs 30 --batch 128 --workers 8 --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import lossyds

CODEC = "bmshj2018-factorized"


def train_small_codec(checkpoint: Path, crops: Path, steps: int, seed: int) -> Path:
    """A few rate-distortion steps of a quality-1 bmshj2018-factorized model on the crops,
    saved as a state dict with its entropy tables updated (what `--weights PATH` reads)."""
    import numpy as np
    from PIL import Image

    from lossyds import codecs

    torch.manual_seed(seed)
    model = codecs.get(CODEC, quality=1, weights=f"random:{seed}").new_model()
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255 for p in sorted(crops.rglob("*.png"))]
    )
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-4), torch.optim.Adam(aux, lr=1e-3)
    for step in range(steps):
        batch = images[torch.randint(0, len(images), (8,))]
        out = model(batch)
        bpp = sum(torch.log(p).sum() for p in out["likelihoods"].values()) / (-math.log(2) * batch[:, 0].numel())
        mse = F.mse_loss(out["x_hat"], batch)
        loss = 0.01 * 255**2 * mse + bpp
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        aux_optimizer.zero_grad()
        model.aux_loss().backward()
        aux_optimizer.step()
        if step in (0, steps - 1):
            print(f"[codec] step {step}: mse {mse.item():.4f}, {bpp.item():.3f} bpp (training estimate)")
    model.update(force=True)
    torch.save(model.state_dict(), checkpoint)
    return checkpoint


def make_small_data(workdir: Path, codec_steps: int, seed: int) -> tuple[Path, Path]:
    from sample_crops import write_photo_crops

    from lossyds.builder import BuildOptions, build

    crops = write_photo_crops(workdir / "crops", {"train": (12, 0), "test": (4, 9)})
    weights = workdir / "small-factorized.pth"
    if not weights.exists():
        train_small_codec(weights, crops / "train", codec_steps, seed)
    builds = []
    for split in ("train", "test"):
        out = workdir / split
        if not (out / "manifest.json").exists():
            options = {"quality": 1, "weights": str(weights)}
            build(BuildOptions(CODEC, out, options, dataset="imagefolder", root=crops, split=split, workers=1))
        builds.append(out)
    return builds[0], builds[1]


class Trunk(nn.Module):
    """What both classifiers share: [B, channels, h, w] -> [B, classes]."""

    def __init__(self, channels: int, classes: int, width: int = 64):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(self.norm(x)))))
        return self.head(x.mean(dim=(2, 3)))


def pixel_model(classes: int) -> nn.Module:
    """Four stride-2 convolutions ([3, H, W] -> [32, H/16, W/16]), then the trunk."""
    layers: list[nn.Module] = []
    for index in range(4):
        layers += [nn.Conv2d(3 if index == 0 else 32, 32, 5, stride=2, padding=2), nn.ReLU()]
    return nn.Sequential(*layers, Trunk(32, classes))


def transform_for(kind: str, size: int):
    """Loader transform: the model's input (float), its label, and what the bit meter reads."""

    def transform(sample: dict) -> dict:
        if kind == "latent":
            x = sample["latent"]["y_hat"]
            side = size // 16
        else:
            x = sample["image"].float() / 255
            x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
            side = size
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x[None], size=(side, side), mode="bilinear", align_corners=False)[0]
        return {"x": x, "label": sample["label"], "payload_bits": sample["payload_bits"], "pixels": sample["pixels"]}

    return transform


def loader_for(directory: Path, kind: str, args: argparse.Namespace, shuffle: bool) -> lossyds.DataLoader:
    output = "latent" if kind == "latent" else "decoded"
    dataset = lossyds.open_dataset(
        directory, output=output, shuffle=shuffle, seed=args.seed, transform=transform_for(kind, args.size)
    )
    return lossyds.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)


def train(kind: str, args: argparse.Namespace) -> tuple[nn.Module, list[float]]:
    torch.manual_seed(args.seed)
    model = (Trunk(args.latent_channels, args.classes) if kind == "latent" else pixel_model(args.classes)).to(
        args.device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = loader_for(args.train, kind, args, shuffle=True)
    losses = []
    for epoch in range(args.epochs):
        loader.dataset.set_epoch(epoch)
        model.train()
        total, steps, seen, started = 0.0, 0, 0, time.perf_counter()
        for batch in loader:
            loss = F.cross_entropy(model(batch["x"].to(args.device)), batch["label"].to(args.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps, seen = total + loss.item(), steps + 1, seen + len(batch["label"])
        losses.append(total / max(1, steps))
        fed = loader.bits.summary()
        rate = seen / (time.perf_counter() - started)
        print(
            f"[{kind}] epoch {epoch}: loss {losses[-1]:.3f}; fed {fed['samples']} samples, "
            f"{fed['mean_bits_per_sample']:.0f} bits/sample, {fed.get('bpp', float('nan')):.4f} bpp, "
            f"{rate:.0f} samples/s (training included)"
        )
    return model, losses


def accuracy(model: nn.Module, kind: str, args: argparse.Namespace) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader_for(args.test, kind, args, shuffle=False):
            correct += int((model(batch["x"].to(args.device)).argmax(1).cpu() == batch["label"]).sum())
            total += len(batch["label"])
    return correct / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, help="a CompressAI build (lossyds build --codec bmshj2018-...)")
    parser.add_argument("--test", type=Path, help="a build of the test split, same codec and weights")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-latent")
    parser.add_argument("--codec-steps", type=int, default=100, help="small run: training steps of its codec")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (a multiple of 16)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.train and args.test):
        args.train, args.test = make_small_data(args.workdir, args.codec_steps, args.seed)
    first = next(iter(lossyds.open_dataset(args.train, output="latent")))
    args.latent_channels = first["latent"]["y_hat"].shape[0]
    results = {}
    for kind in ("latent", "pixels"):
        model, losses = train(kind, args)
        print(f"[{kind}] loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        results[kind] = accuracy(model, kind, args)
    print(f"\nchance {1 / args.classes:.3f}")
    print("input      test accuracy")
    for kind, value in results.items():
        print(f"{kind:<10} {value:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
