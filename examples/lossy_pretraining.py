"""Lossy pretraining, the 2x2 of the reference study's third finding: train one model on lossy
shards and one on the lossless reference, then evaluate both on clean and on lossy test sets.

Small run (CPU, a minute; builds its own data from the sample photos):
    python examples/lossy_pretraining.py --epochs 2
Full scale (GPU), on builds you made, e.g. ImageNet train/val at JPEG q5 and PNG:
    python examples/lossy_pretraining.py --train-lossy out/in-train-q5 --train-clean out/in-train-png \
        --test-lossy out/in-val-q5 --test-clean out/in-val-png --model resnet18 --classes 1000 --device cuda --epochs 30
Every epoch prints the bits per sample and bpp the loader actually fed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import lossyds


def make_small_data(workdir: Path) -> dict[str, Path]:
    """Train/test imagefolders of 64x64 crops of the sample photos (one class per photo), built lossless and lossy."""
    from PIL import Image

    from lossyds.build import BuildOptions, build
    from lossyds.sources.sample import PHOTOS, skimage_data_dir

    source = workdir / "crops"
    for index, (name, _) in enumerate(PHOTOS):
        image = Image.open(skimage_data_dir() / name).convert("RGB").resize((256, 256))
        for split, offset in (("train", 0), ("test", 3)):
            folder = source / split / f"c{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(12 if split == "train" else 4):
                x, y = ((n * 37 + offset * 11) % 192), ((n * 53 + offset * 7) % 192)
                image.crop((x, y, x + 64, y + 64)).save(folder / f"{n}.png")
    builds = {}
    for split in ("train", "test"):
        for kind, codec, rate in (("clean", "png", {}), ("lossy", "jpeg", {"quality": 5})):
            out = workdir / f"{split}-{kind}"
            if not (out / "manifest.json").exists():
                build(
                    BuildOptions(
                        codec=codec,
                        out=out,
                        codec_options=rate,
                        dataset="imagefolder",
                        root=source,
                        split=split,
                        workers=1,
                    )
                )
            builds[f"{split}_{kind}"] = out
    return builds


class TinyNet(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def to_input(size: int):
    def transform(sample: dict) -> dict:
        image = sample["image"].expand(3, -1, -1) if sample["image"].shape[0] == 1 else sample["image"]
        image = F.interpolate(image[None].float() / 255, size=(size, size), mode="bilinear", align_corners=False)[0]
        return {
            "image": image,
            "label": sample["label"],
            "payload_bits": sample["payload_bits"],
            "pixels": sample["pixels"],
        }

    return transform


def make_model(name: str, classes: int) -> nn.Module:
    if name == "tiny":
        return TinyNet(classes)
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=classes)


def train(directory: Path, args: argparse.Namespace, label: str) -> nn.Module:
    torch.manual_seed(args.seed)
    model = make_model(args.model, args.classes).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    dataset = lossyds.open_dataset(
        directory, shuffle=True, seed=args.seed, shuffle_buffer=256, transform=to_input(args.size)
    )
    loader = lossyds.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        model.train()
        for step, batch in enumerate(loader):
            if args.steps and step >= args.steps:
                break
            loss = F.cross_entropy(model(batch["image"].to(args.device)), batch["label"].to(args.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        fed = loader.bits.summary()
        print(
            f"[{label}] epoch {epoch}: loss {loss.item():.3f}; fed {fed['samples']} samples so far, {fed['mean_bits_per_sample']:.0f} bits/sample, {fed.get('bpp', float('nan')):.4f} bpp"
        )
    return model


def accuracy(model: nn.Module, directory: Path, args: argparse.Namespace) -> float:
    model.eval()
    correct = total = 0
    loader = torch.utils.data.DataLoader(
        lossyds.open_dataset(directory, transform=to_input(args.size)), batch_size=args.batch, num_workers=args.workers
    )
    with torch.no_grad():
        for batch in loader:
            prediction = model(batch["image"].to(args.device)).argmax(1).cpu()
            correct += int((prediction == batch["label"]).sum())
            total += len(prediction)
    return correct / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("train_lossy", "train_clean", "test_lossy", "test_clean"):
        parser.add_argument("--" + name.replace("_", "-"), type=Path)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-pretraining")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="stop each epoch after this many steps (0: whole epoch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    given = {k: getattr(args, k) for k in ("train_lossy", "train_clean", "test_lossy", "test_clean")}
    builds = given if all(given.values()) else make_small_data(args.workdir)
    models = {kind: train(builds[f"train_{kind}"], args, f"train {kind}") for kind in ("lossy", "clean")}
    print("\naccuracy      test clean   test lossy")
    for kind, model in models.items():
        print(
            f"train {kind:<6}  {accuracy(model, builds['test_clean'], args):10.3f}   {accuracy(model, builds['test_lossy'], args):10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
