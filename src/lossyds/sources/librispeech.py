"""LibriSpeech: `LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`
with `<speaker>-<chapter>.trans.txt` beside them.

ROOT is the `LibriSpeech` folder or its parent; `--split` is the subset folder name
(dev-clean, dev-other, test-clean, test-other, train-clean-100, train-clean-360,
train-other-500). Transcript, speaker and chapter ids go to metadata. An utterance
without a transcript line is skipped with that reason.
"""

from __future__ import annotations

from ..errors import SourceError, UsageError
from ..types import SourceSample
from .base import Source, SourceRef

SUBSETS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)


class LibriSpeechSource(Source):
    name = "librispeech"
    splits = SUBSETS
    modalities = ("audio",)
    license = "cc-by-4.0"

    def tasks(self) -> list[str]:
        return ["automatic-speech-recognition"]

    def resolve_root(self, root):
        path = super().resolve_root(root)
        return path / "LibriSpeech" if (path / "LibriSpeech").is_dir() else path

    def refs(self) -> list[SourceRef]:
        subset = self.root / self.split
        if not subset.is_dir():
            raise UsageError(f"{subset} is not a folder (LibriSpeech expects ROOT/LibriSpeech/{self.split}/).")
        records = []
        for transcript_file in sorted(subset.glob("*/*/*.trans.txt")):
            texts = {}
            for line in transcript_file.read_text().splitlines():
                utterance, _, text = line.strip().partition(" ")
                if utterance:
                    texts[utterance] = text
            for audio in sorted(transcript_file.parent.glob("*.flac")):
                speaker, chapter, _ = (
                    audio.stem.split("-", 2)
                    if audio.stem.count("-") >= 2
                    else (audio.parent.parent.name, audio.parent.name, "")
                )
                targets = {"text": texts.get(audio.stem), "speaker_id": int(speaker), "chapter_id": int(chapter)}
                records.append(SourceRef(audio.stem, str(audio.relative_to(self.root)), targets))
        orphans = sorted(
            {str(p.parent.relative_to(self.root)) for p in subset.glob("*/*/*.flac")}
            - {str(t.parent.relative_to(self.root)) for t in subset.glob("*/*/*.trans.txt")}
        )
        for chapter in orphans:  # chapters without a transcript file: still listed, then skipped with the reason
            for audio in sorted((self.root / chapter).glob("*.flac")):
                records.append(SourceRef(audio.stem, str(audio.relative_to(self.root)), {"text": None}))
        return sorted(records, key=lambda r: r.key)

    def load(self, record: SourceRef) -> SourceSample:
        if record.targets.get("text") is None:
            raise SourceError(f"{record.path} has no transcript line in its chapter's .trans.txt")
        return super().load(record)
