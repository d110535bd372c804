"""Fixture datasets made in code from the real sample data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lossyds.sources.sample import PHOTOS, SAMPLE_ROOT, skimage_data_dir


def make_image_folder(root: Path, copies: int = 4, split: str = "train") -> Path:
    """ROOT/SPLIT/CLASS/*.png: the sample photos, each in `copies` different crops."""
    for _index, (name, label) in enumerate(PHOTOS):
        with Image.open(skimage_data_dir() / name) as img:
            img.load()
            for copy in range(copies):
                width, height = img.size
                box = (copy * 7, copy * 5, width - copy * 3, height - copy * 11)
                target = root / split / label / f"{Path(name).stem}-{copy}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                img.crop(box).save(target)
    return root


def make_audio_folder(root: Path, split: str = "train") -> Path:
    """ROOT/SPLIT/*.flac with metadata.jsonl: the sample speech clips and transcripts."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (SAMPLE_ROOT / "speech" / "transcripts.txt").read_text().splitlines():
        key, _, text = line.partition(" ")
        shutil.copy(SAMPLE_ROOT / "speech" / f"{key}.flac", folder / f"{key}.flac")
        lines.append(f'{{"file_name": "{key}.flac", "text": "{text}"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def corrupt_jpeg_bytes() -> bytes:
    """A real JPEG cut in half: the header parses, the data does not."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 3]


def sample_photo(name: str) -> Image.Image:
    with Image.open(skimage_data_dir() / name) as img:
        img.load()
        return img.copy()


WNIDS = ["n01440764", "n02123045", "n04266014"]  # tench, tabby cat, space shuttle
WORDS = {"n01440764": "tench, Tinca tinca", "n02123045": "tabby, tabby cat", "n04266014": "space shuttle"}


def make_imagenet(root: Path) -> dict[str, int]:
    """ILSVRC2012 layout: train/<wnid>/*.JPEG (with a CMYK JPEG, a grayscale JPEG and a PNG
    named .JPEG), flat val/ with LOC_val_solution.csv, LOC_synset_mapping.txt and a devkit.
    Returns val image stem -> expected label."""
    photos = {"n01440764": "coffee.png", "n02123045": "chelsea.png", "n04266014": "rocket.jpg"}
    for wnid, name in photos.items():
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        img = sample_photo(name).convert("RGB").resize((200, 150))
        img.save(folder / f"{wnid}_1.JPEG", "JPEG", quality=90)
        img.crop((10, 10, 190, 140)).save(folder / f"{wnid}_2.JPEG", "JPEG", quality=90)
    img = sample_photo("astronaut.png").resize((120, 120))
    img.convert("CMYK").save(root / "train" / "n04266014" / "n04266014_3.JPEG", "JPEG")  # CMYK JPEG
    img.convert("L").save(root / "train" / "n02123045" / "n02123045_3.JPEG", "JPEG")  # grayscale JPEG
    img.save(root / "train" / "n01440764" / "n01440764_3.JPEG", "PNG")  # a PNG named .JPEG
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {WORDS[w]}\n" for w in WNIDS))
    (root / "val").mkdir(exist_ok=True)
    truth = {}
    rows = ["ImageId,PredictionString"]
    for number, wnid in enumerate(["n04266014", "n01440764", "n02123045", "n04266014"], 1):
        stem = f"ILSVRC2012_val_{number:08d}"
        sample_photo(photos[wnid]).convert("RGB").resize((160, 120)).save(root / "val" / f"{stem}.JPEG", "JPEG")
        rows.append(f"{stem},{wnid} 1 2 3 4")
        truth[stem] = WNIDS.index(wnid)
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return truth


def make_imagenet_devkit(root: Path, truth: dict[str, int]) -> None:
    """The devkit's meta.mat (ILSVRC2012_IDs deliberately not in sorted-wnid order) and ground truth."""
    from scipy.io import savemat

    devkit_ids = {"n04266014": 1, "n01440764": 2, "n02123045": 3}
    synsets = np.zeros((3,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    for i, (wnid, ident) in enumerate(devkit_ids.items()):
        synsets[i] = (ident, wnid, WORDS[wnid], 0)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    savemat(data / "meta.mat", {"synsets": synsets})
    lines = [str(devkit_ids[WNIDS[truth[stem]]]) for stem in sorted(truth)]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(lines) + "\n")


def make_cityscapes(root: Path, split: str = "val") -> dict[str, np.ndarray]:
    """leftImg8bit/ + gtFine/ (labelIds and 16-bit instanceIds). Returns key -> label-id array."""
    rng = np.random.default_rng(0)
    labels = {}
    for city, name in (("frankfurt", "coffee.png"), ("lindau", "astronaut.png")):
        for frame in range(2):
            stem = f"{city}_000000_{frame:06d}"
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            sample_photo(name).convert("RGB").resize((256, 128)).save(image_dir / f"{stem}_leftImg8bit.png")
            ids = rng.choice([0, 1, 7, 8, 11, 21, 23, 24, 26, 33], size=(128, 256)).astype(np.uint8)
            Image.fromarray(ids, "L").save(label_dir / f"{stem}_gtFine_labelIds.png")
            instances = ids.astype(np.uint16) * 1000 + rng.integers(0, 3, size=ids.shape, dtype=np.uint16)
            Image.fromarray(instances).save(label_dir / f"{stem}_gtFine_instanceIds.png")
            labels[stem] = ids
    return labels


def make_librispeech(root: Path, subset: str = "dev-clean") -> dict[str, str]:
    """LibriSpeech/<subset>/<speaker>/<chapter>/ with .trans.txt; one utterance lacks its line.
    Returns utterance id -> transcript (None for the one without)."""
    transcripts = dict(
        line.split(" ", 1) for line in (SAMPLE_ROOT / "speech" / "transcripts.txt").read_text().splitlines()
    )
    expected: dict[str, str] = {}
    for number, (key, text) in enumerate(sorted(transcripts.items())):
        speaker, chapter = (84, 121123) if number < 3 else (174, 50561)
        folder = root / "LibriSpeech" / subset / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        utterance = f"{speaker}-{chapter}-{number:04d}"
        shutil.copy(SAMPLE_ROOT / "speech" / f"{key}.flac", folder / f"{utterance}.flac")
        expected[utterance] = None if number == 4 else text
        if number != 4:
            with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as handle:
                handle.write(f"{utterance} {text}\n")
    return expected


MUSDB_STEMS = ("mixture", "drums", "bass", "other", "vocals")


def make_musdb_hq(root: Path, split: str = "test") -> Path:
    """MUSDB18-HQ: <split>/<track>/{mixture,drums,bass,other,vocals}.wav (16-bit, 44.1 kHz stereo)."""
    import soundfile

    track = root / split / "Sample Artist - Sample Track"
    track.mkdir(parents=True, exist_ok=True)
    for stem in MUSDB_STEMS:
        audio, rate = soundfile.read(SAMPLE_ROOT / "music" / "sample-track" / f"{stem}.flac", dtype="int16")
        soundfile.write(track / f"{stem}.wav", audio, rate, subtype="PCM_16")
    return track


def make_musdb_stem_mp4(root: Path, split: str = "train") -> Path:
    """MUSDB18: <split>/<track>.stem.mp4 with five AAC streams (mixture, drums, bass, other, vocals)."""
    import av
    import soundfile

    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Sample Artist - Sample Track.stem.mp4"
    signals = [
        soundfile.read(SAMPLE_ROOT / "music" / "sample-track" / f"{s}.flac", dtype="float32")[0].T for s in MUSDB_STEMS
    ]
    with av.open(str(path), "w", format="mp4") as container:
        streams = []
        for _ in MUSDB_STEMS:
            stream = container.add_stream("aac", rate=44100)
            stream.layout = "stereo"
            stream.bit_rate = 128000
            streams.append(stream)
        for stream, signal in zip(streams, signals):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal), format="fltp", layout="stereo")
            frame.sample_rate = 44100
            frame.pts = 0
            for packet in stream.encode(frame):
                container.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def replace_bitstream(shard: Path, key: str, extension: str, payload: bytes) -> None:
    """Rewrite one sample's bitstream in a shard (.tar or .tar.gz; same length, CRC-32 in its
    metadata updated): a sample whose members all check out but whose bitstream cannot be
    decoded. The manifest's size and sha256 of the shard are not touched."""
    import io
    import json
    import tarfile
    import zlib

    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w:gz" if shard.name.endswith(".gz") else "w", format=tarfile.USTAR_FORMAT
    ) as tar:
        for info, data in members:
            if info.name == f"{key}.{extension}":
                assert len(payload) == len(data)
                data = payload
            elif info.name == f"{key}.json":
                meta = json.loads(data)
                meta["crc32"][extension] = zlib.crc32(payload)
                data = json.dumps(meta).encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard.write_bytes(out.getvalue())


def hf_image_set(
    size: tuple[int, int] | list[tuple[int, int]] = (96, 64),
    label_column: str | None = "label",
    mask_column: str | None = None,
):
    """A Hugging Face `datasets.Dataset` of the sample photos (Image) at `size` (width, height;
    a list of sizes is taken in turn), with a ClassLabel column and/or a segmentation mask
    column (Image, uint8 values 0..150)."""
    import datasets

    sizes = size if isinstance(size, list) else [size]
    images = [
        Image.open(skimage_data_dir() / name).convert("RGB").resize(sizes[index % len(sizes)])
        for index, (name, _) in enumerate(PHOTOS)
    ]
    columns: dict = {"image": images}
    features: dict = {"image": datasets.Image()}
    if label_column:
        columns[label_column] = [index % 2 for index in range(len(images))]
        features[label_column] = datasets.ClassLabel(names=["first", "second"])
    if mask_column:
        rng = np.random.default_rng(0)
        columns[mask_column] = [
            Image.fromarray(rng.integers(0, 151, (image.height, image.width), dtype=np.uint8)) for image in images
        ]
        features[mask_column] = datasets.Image()
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def hf_speech_set():
    """A Hugging Face `datasets.Dataset` like Common Voice's: 48 kHz MP3 files (Audio) with a
    `sentence` transcript: the sample speech, resampled and encoded here."""
    import io

    import datasets
    import soundfile
    import soxr

    rows = []
    for line in (SAMPLE_ROOT / "speech" / "transcripts.txt").read_text().splitlines():
        key, _, text = line.partition(" ")
        audio, rate = soundfile.read(SAMPLE_ROOT / "speech" / f"{key}.flac", dtype="float32")
        buffer = io.BytesIO()
        soundfile.write(buffer, soxr.resample(audio, rate, 48000), 48000, format="MP3")
        rows.append({"audio": {"bytes": buffer.getvalue(), "path": f"{key}.mp3"}, "sentence": text, "age": "thirties"})
    # cast_column, not Features(Audio) at creation: datasets would encode through torchcodec (FFmpeg)
    return datasets.Dataset.from_list(rows).cast_column("audio", datasets.Audio(sampling_rate=48000))
