"""Lossy pretraining, then fine-tuning: the reference study's third finding, as an experiment.

Three models share one schedule: pretrained on a lossy build, pretrained on its lossless
reference, and not pretrained (from scratch); each is then fine-tuned on a small clean set
and evaluated on clean and on lossy test sets. Every phase prints the bits per sample (and
bpp) that the loader fed it.

Small run (CPU, about a minute; builds its own data from the sample photos, 32x32 inputs):
    python examples/lossy_pretraining.py
Full scale (GPU) on builds you made, e.g. ImageNet train at JPEG q5 and PNG, a clean
fine-tuning subset, and ImageNet val at JPEG q5 and PNG, at ImageNet's 224x224:
    python examples/lossy_pretraining.py --pretrain-lossy out/in-train-q5 --pretrain-clean out/in-train-png \
        --finetune out/in-train-10pct-png --test-lossy out/in-val-q5 --test-clean out/in-val-png \
        --model resnet18 --classes 1000 --size 224 --batch 256 --workers 8 --device cuda \
        --pretrain-epochs 30 --finetune-epochs 5 --lr 1e-3
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
    """64x64 crops of the sample photos (one class per photo), built lossless (PNG) and lossy
    (JPEG q5): pretraining sets (12 per class), a clean fine-tuning set (3 per class) and
    test sets (4 per class), each from its own crops."""
    from sample_crops import write_photo_crops

    from lossyds.builder import BuildOptions, build

    source = write_photo_crops(workdir / "crops", {"pretrain": (12, 0), "finetune": (3, 5), "test": (4, 9)})
    wanted = {
        "pretrain_lossy": ("pretrain", "jpeg", {"quality": 5}),
        "pretrain_clean": ("pretrain", "png", {}),
        "finetune": ("finetune", "png", {}),
        "test_lossy": ("test", "jpeg", {"quality": 5}),
        "test_clean": ("test", "png", {}),
    }
    builds = {}
    for name, (split, codec, rate) in wanted.items():
        out = workdir / name
        if not (out / "manifest.json").exists():
            build(
                BuildOptions(
                    codec=codec, out=out, codec_options=rate, dataset="imagefolder", root=source, split=split, workers=1
                )
            )
        builds[name] = out
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
    """Loader transform: uint8 [C, H, W] -> float [3, size, size] in [0, 1]; bits kept for the meter."""

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


def fit(model: nn.Module, directory: Path, epochs: int, args: argparse.Namespace, label: str) -> list[float]:
    """Train `model` on a build; returns each epoch's mean loss. Prints what the loader fed."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    dataset = lossyds.open_dataset(
        directory, shuffle=True, seed=args.seed, shuffle_buffer=256, transform=to_input(args.size)
    )
    loader = lossyds.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)
    losses = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        model.train()
        total, steps = 0.0, 0
        for batch in loader:
            loss = F.cross_entropy(model(batch["image"].to(args.device)), batch["label"].to(args.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / max(1, steps))
        fed = loader.bits.summary()
        print(
            f"[{label}] epoch {epoch}: loss {losses[-1]:.3f}; fed {fed['samples']} samples, "
            f"{fed['mean_bits_per_sample']:.0f} bits/sample, {fed.get('bpp', float('nan')):.4f} bpp"
        )
    return losses


def accuracy(model: nn.Module, directory: Path, args: argparse.Namespace) -> float:
    model.eval()
    correct = total = 0
    loader = lossyds.DataLoader(
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
    names = ("pretrain_lossy", "pretrain_clean", "finetune", "test_lossy", "test_clean")
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), type=Path, help="a lossyds build folder")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lossyds-pretraining")
    parser.add_argument("--model", default="tiny", help="tiny, or a torchvision model name (resnet18, ...)")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--size", type=int, default=32, help="input side in pixels (224 for ImageNet)")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    given = {name: getattr(args, name) for name in names}
    builds = given if all(given.values()) else make_small_data(args.workdir)
    results = {}
    for start in ("lossy", "clean", "scratch"):
        torch.manual_seed(args.seed)
        model = make_model(args.model, args.classes).to(args.device)
        if start != "scratch":
            losses = fit(model, builds[f"pretrain_{start}"], args.pretrain_epochs, args, f"pretrain {start}")
            print(f"[pretrain {start}] loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        fit(model, builds["finetune"], args.finetune_epochs, args, f"fine-tune after {start}")
        results[start] = (accuracy(model, builds["test_clean"], args), accuracy(model, builds["test_lossy"], args))
    print(f"\nchance {1 / args.classes:.3f}")
    print("pretrained on   test clean   test lossy")
    for start, (clean, lossy) in results.items():
        print(f"{start:<14} {clean:11.3f} {lossy:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
