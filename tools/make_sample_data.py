"""Regenerate the embedded sample audio (run once by a maintainer; the outputs are committed).

Speech: espeak-ng reads five sentences (several voices), resampled by sox to 16 kHz
16-bit mono FLAC, with LibriSpeech-style transcripts.
Music: a 3-bar MIDI arrangement written with mido, each instrument rendered on its own
by fluidsynth (FluidR3 GM soundfont) at 44.1 kHz stereo, so drums/bass/other/vocals stems
sum exactly to the mixture (all 16-bit FLAC, MUSDB18-HQ naming).

Needs: apt-get install espeak-ng sox fluidsynth fluid-soundfont-gm; pip install mido soundfile numpy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import mido
import numpy as np
import soundfile

OUT = Path(__file__).resolve().parents[1] / "src" / "lossyds" / "sample_data"
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

SPEECH = [
    ("en-us", 150, "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"),
    ("en-us+f3", 140, "PLEASE CALL STELLA AND ASK HER TO BRING THESE THINGS WITH HER FROM THE STORE"),
    ("en", 160, "MACHINES SEE THE WORLD THROUGH COMPRESSED PIXELS AND SOUNDS"),
    ("en-us+m3", 130, "SHE SELLS SEA SHELLS BY THE SEA SHORE"),
    ("en-gb+f2", 150, "A GOOD CODEC KEEPS WHAT THE LISTENER NEEDS AND DROPS THE REST"),
]

MUSIC_SECONDS = 5.0
BPM = 120


def make_speech(tmp: Path) -> None:
    speech_dir = OUT / "speech"
    speech_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (voice, speed, text) in enumerate(SPEECH):
        key = f"sample-speech-{index:04d}"
        wav = tmp / f"{key}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text.lower()], check=True)
        subprocess.run(
            ["sox", str(wav), "-r", "16000", "-b", "16", "-c", "1", str(speech_dir / f"{key}.flac")], check=True
        )
        lines.append(f"{key} {text}")
    (speech_dir / "transcripts.txt").write_text("\n".join(lines) + "\n")


def midi_track(channel: int, program: int | None, notes: list[tuple[float, float, int, int]]) -> mido.MidiFile:
    """notes: (start_beat, length_beats, pitch, velocity)."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BPM)))
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program))
    events = []
    for start, length, pitch, velocity in notes:
        events.append((int(start * 480), mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
        events.append((int((start + length) * 480), mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
    now = 0
    for tick, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    return midi


def make_music(tmp: Path) -> None:
    beats = int(MUSIC_SECONDS * BPM / 60)
    drums = []
    for beat in range(beats):
        drums.append((beat, 0.25, 36 if beat % 2 == 0 else 38, 110))  # kick / snare
        drums += [(beat, 0.25, 42, 70), (beat + 0.5, 0.25, 42, 60)]  # closed hi-hat
    chords = [(45, 48, 52), (41, 45, 48), (43, 47, 50), (40, 43, 47)]  # Am F G Em (bass roots)
    bass, other = [], []
    for bar in range(beats // 4 + 1):
        root = chords[bar % 4][0]
        for beat in range(4):
            if bar * 4 + beat < beats:
                bass.append((bar * 4 + beat, 0.9, root - 12 + (7 if beat == 2 else 0), 100))
        if bar * 4 < beats:
            other += [(bar * 4, min(4, beats - bar * 4), p + 12, 70) for p in chords[bar % 4]]
    melody = [69, 72, 76, 74, 72, 71, 69, 67, 69, 72, 74, 76]
    vocals = [(i * 0.75 + 0.25, 0.7, p, 95) for i, p in enumerate(melody) if i * 0.75 + 0.95 <= beats]
    parts = {
        "drums": midi_track(9, None, drums),
        "bass": midi_track(0, 33, bass),
        "other": midi_track(1, 0, other),
        "vocals": midi_track(2, 54, vocals),
    }
    frames = int(MUSIC_SECONDS * 44100)
    stems = {}
    for name, midi in parts.items():
        mid, wav = tmp / f"{name}.mid", tmp / f"{name}.wav"
        midi.save(mid)
        subprocess.run(
            [
                "fluidsynth",
                "-ni",
                "-q",
                "-g",
                "0.4",
                "-R",
                "0",
                "-C",
                "0",
                "-r",
                "44100",
                "-F",
                str(wav),
                SOUNDFONT,
                str(mid),
            ],
            check=True,
        )
        audio, rate = soundfile.read(wav, dtype="int16", always_2d=True)
        assert rate == 44100
        audio = np.pad(audio, ((0, max(0, frames - len(audio))), (0, 0)))[:frames]
        stems[name] = audio.astype(np.int32)
    mixture = sum(stems.values())
    peak = np.abs(mixture).max()
    if peak > 32000:  # keep the exact-sum property: scale stems, then re-sum
        stems = {k: (v * 32000 // peak) for k, v in stems.items()}
        mixture = sum(stems.values())
    track_dir = OUT / "music" / "sample-track"
    track_dir.mkdir(parents=True, exist_ok=True)
    for name, audio in {**stems, "mixture": mixture}.items():
        soundfile.write(track_dir / f"{name}.flac", audio.astype(np.int16), 44100, subtype="PCM_16")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        make_speech(Path(tmp))
        make_music(Path(tmp))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"sample audio written to {OUT}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
