"""ImageNet (ILSVRC2012) in its official layouts.

ROOT is the folder that holds `train/` and `val/` (or the Kaggle download's root, with
`ILSVRC/Data/CLS-LOC/{train,val}` inside):
- train: `train/<wnid>/<wnid>_<n>.JPEG`;
- val: either flat `val/ILSVRC2012_val_<n>.JPEG` with labels from `LOC_val_solution.csv`
  (Kaggle) or from the devkit (`ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`
  and `meta.mat`), or `val/<wnid>/` folders.
Labels follow the standard 0-999 order: sorted wnids (torchvision's order). The wnid and
the human-readable name (from `LOC_synset_mapping.txt` or the devkit's `meta.mat`) go
to metadata. CMYK and grayscale JPEGs and the PNG named `.JPEG` are decoded by content.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UsageError
from .base import Source, SourceRef, safe_key

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


class ImageNetSource(Source):
    name = "imagenet"
    splits = ("train", "val")
    modalities = ("image",)
    license = "other"  # ImageNet terms of access: non-commercial research and education

    def tasks(self) -> list[str]:
        return ["image-classification"]

    def resolve_root(self, root):
        path = super().resolve_root(root)
        kaggle = path / "ILSVRC" / "Data" / "CLS-LOC"
        self.meta_root = path
        return kaggle if kaggle.is_dir() else path

    def _devkit(self) -> Path | None:
        for base in (self.meta_root, self.root):
            for candidate in (base / "ILSVRC2012_devkit_t12", base / "devkit"):
                if (candidate / "data" / "meta.mat").is_file():
                    return candidate
        return None

    def synsets(self) -> tuple[list[str], dict[str, str]]:
        """(sorted wnids, wnid -> human-readable name)."""
        names: dict[str, str] = {}
        for base in (self.meta_root, self.root):
            mapping = base / "LOC_synset_mapping.txt"
            if mapping.is_file():
                for line in mapping.read_text().splitlines():
                    wnid, _, words = line.partition(" ")
                    if wnid:
                        names[wnid] = words.strip()
                break
        devkit = self._devkit()
        if not names and devkit is not None:
            names = {wnid: words for wnid, words in self._devkit_ids(devkit).values()}
        train = self.root / "train"
        wnids = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else sorted(names)
        if not wnids:
            raise UsageError(
                f"{self.root} has neither train/<wnid>/ folders nor LOC_synset_mapping.txt or a devkit: cannot tell the 1000 classes."
            )
        return wnids, names

    @staticmethod
    def _devkit_ids(devkit: Path) -> dict[int, tuple[str, str]]:
        """Devkit ILSVRC2012_ID (1-based, not the sorted order) -> (wnid, words)."""
        from scipy.io import loadmat

        synsets = loadmat(devkit / "data" / "meta.mat", squeeze_me=True)["synsets"]
        return {
            int(row["ILSVRC2012_ID"]): (str(row["WNID"]), str(row["words"]))
            for row in synsets
            if int(row["num_children"]) == 0
        }

    def val_labels(self) -> dict[str, str]:
        """Flat val/: image stem -> wnid."""
        for base in (self.meta_root, self.root):
            solution = base / "LOC_val_solution.csv"
            if solution.is_file():
                with open(solution, newline="") as handle:
                    return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(handle)}
        devkit = self._devkit()
        if devkit is not None:
            ids = self._devkit_ids(devkit)
            truth = (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
            return {f"ILSVRC2012_val_{index:08d}": ids[int(label)][0] for index, label in enumerate(truth, 1)}
        raise UsageError(
            f"flat {self.root / 'val'} needs its labels: put LOC_val_solution.csv or the ILSVRC2012 devkit under {self.meta_root}."
        )

    def refs(self) -> list[SourceRef]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder (ImageNet expects ROOT/{self.split}/).")
        wnids, names = self.synsets()
        index = {wnid: i for i, wnid in enumerate(wnids)}

        def record(path: Path, wnid: str) -> SourceRef:
            if wnid not in index:
                raise UsageError(f"{path} is labelled {wnid!r}, which is not one of the {len(wnids)} classes.")
            targets = {"label": index[wnid], "wnid": wnid, "class_name": names.get(wnid, wnid)}
            return SourceRef(safe_key(path.stem), str(path.relative_to(self.root)), targets)

        class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
        if class_dirs:
            return [
                record(path, d.name)
                for d in class_dirs
                for path in sorted(d.iterdir())
                if path.suffix.lower() in IMAGE_SUFFIXES
            ]
        labels = self.val_labels()
        records = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                if path.stem not in labels:
                    raise UsageError(f"{path.name} has no label in the validation ground truth.")
                records.append(record(path, labels[path.stem]))
        return records
