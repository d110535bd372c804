"""The sample dataset that ships with lossyds.

Splits:
- `photos`: six photographs bundled with scikit-image (RGB and grayscale, 300x451 to
  512x512, PNG and JPEG sources), each with a class label;
- `speech`: five English utterances (espeak-ng, 16 kHz FLAC) with transcripts;
- `music`: one 5 s multi-instrument clip (fluidsynth, 44.1 kHz stereo): the mixture
  is compressed, the drums/bass/other/vocals stems are stored losslessly beside it.
Image codecs default to `photos`, audio codecs to `speech`.
"""

from __future__ import annotations

from pathlib import Path

from .base import Source, SourceRef

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "sample_data"

# (scikit-image file, class name)
PHOTOS = [
    ("astronaut.png", "person"),
    ("chelsea.png", "cat"),
    ("coffee.png", "cup"),
    ("rocket.jpg", "rocket"),
    ("camera.png", "person"),
    ("moon.png", "moon"),
]
PHOTO_CLASSES = sorted({label for _, label in PHOTOS})
STEMS = ("drums", "bass", "other", "vocals")


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


class SampleSource(Source):
    name = "sample"
    splits = ("photos", "speech", "music")
    license = "other"  # scikit-image's photos under their own terms; the speech and music were made for lossyds

    def tasks(self) -> list[str]:
        return {
            "photos": ["image-classification"],
            "speech": ["automatic-speech-recognition"],
            "music": ["audio-to-audio"],
        }[self.split]

    def resolve_root(self, root):  # the sample ships with the package; --root is ignored
        return SAMPLE_ROOT

    def default_split(self, modality: str) -> str:
        return "photos" if modality == "image" else "speech"

    def __init__(self, *, root, split, modality, **options):
        super().__init__(root=root, split=split, modality=modality, **options)
        if (self.split == "photos") != (modality == "image"):
            from ..errors import UsageError

            raise UsageError(
                f"sample split {self.split!r} holds {'images' if self.split == 'photos' else 'audio'}; a {modality} codec cannot encode it."
            )
        if self.split == "photos":
            self.root = skimage_data_dir()

    def refs(self) -> list[SourceRef]:
        if self.split == "photos":
            return [
                SourceRef(f"sample-photo-{index:04d}", name, {"label": PHOTO_CLASSES.index(label), "class_name": label})
                for index, (name, label) in enumerate(PHOTOS)
            ]
        if self.split == "speech":
            records = []
            for line in (self.root / "speech" / "transcripts.txt").read_text().splitlines():
                key, _, text = line.partition(" ")
                records.append(SourceRef(key, f"speech/{key}.flac", {"text": text}))
            return records
        track = "sample-track"
        return [
            SourceRef(
                f"sample-music-{track}",
                f"music/{track}/mixture.flac",
                {"track": track},
                tuple((f"stems.{stem}.flac", f"music/{track}/{stem}.flac") for stem in STEMS),
            )
        ]
