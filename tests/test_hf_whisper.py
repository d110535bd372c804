"""`lossyds eval --task asr --model hf:PATH`: a tiny Whisper built from a config (random weights,
its own small tokenizer and spelling map, saved to a temporary folder), scored on an Opus build
of the sample speech and checked against the same model run by hand on the same decoded audio."""

from __future__ import annotations

import json
import shutil

import jiwer
import numpy as np
import pytest
import soundfile
import torch
import transformers
from click.testing import CliRunner
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.cli import main
from lossyds.codecs._audio import resample
from lossyds.errors import UsageError
from lossyds.eval import evaluate
from lossyds.eval.asr import normalize_text
from lossyds.eval.hf import HFSpeechRecognizer
from lossyds.sources.sample import SAMPLE_ROOT

SPELLING = {"colour": "color"}
# The model's words: mixed case, punctuation and both spellings, so that the three normalisations
# (none, lossyds', Whisper's with the spelling map) give three different texts.
WORDS = ["ĠThe", "Ġcolour", "Ġcolor", "Ġquick,", "ĠFOX", "Ġdog.", "ĠMr", "Ġsea"]
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",  # the language tokens follow <|startoftranscript|> (the tokenizer's prefix relies on it)
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]
IDS = {token: i for i, token in enumerate(WORDS + SPECIALS)}
# Transcripts for the five sample clips (the random model cannot recognise them; what matters is
# that the normalisers treat them differently): case, punctuation, "colour" and "Mr.".
TRANSCRIPTS = [
    "The colour of the quick brown fox.",
    "Please call Mr. Stella: ask her to bring these things.",
    "Machines see the world through compressed pixels, and sounds!",
    "She sells sea shells by the SEA shore.",
    "A good codec keeps the colour the listener needs.",
]


def tiny_whisper(folder, spelling: dict[str, str] | None = SPELLING):
    """A two-layer Whisper with random weights, saved with its processor to `folder`.

    Its weights are drawn large (init_std 1) so that its greedy output varies with the audio,
    and every special token but <|endoftext|> is suppressed (<|endoftext|> only at the first
    step), so it always writes words: up to 12 tokens of WORDS per 30 s window."""
    folder.mkdir(parents=True, exist_ok=True)
    normalizer_file = None
    if spelling is not None:
        normalizer_file = folder / "normalizer.json"
        normalizer_file.write_text(json.dumps(spelling))
    tokenizer = transformers.WhisperTokenizer(
        vocab=dict(IDS),
        merges=[],
        normalizer_file=None if normalizer_file is None else str(normalizer_file),
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    suppress = [IDS[token] for token in SPECIALS[1:]]
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=len(IDS),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,  # 30 s of 10 ms frames, halved by the encoder's strided convolution
        max_target_positions=32,
        init_std=1.0,
        decoder_start_token_id=IDS["<|startoftranscript|>"],
        eos_token_id=IDS["<|endoftext|>"],
        pad_token_id=IDS["<|endoftext|>"],
        bos_token_id=IDS["<|endoftext|>"],
        suppress_tokens=suppress,
        begin_suppress_tokens=[IDS["<|endoftext|>"]],
    )
    model = transformers.WhisperForConditionalGeneration(config).eval()
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=IDS["<|startoftranscript|>"],
        eos_token_id=IDS["<|endoftext|>"],
        pad_token_id=IDS["<|endoftext|>"],
        bos_token_id=IDS["<|endoftext|>"],
        max_length=12,
        suppress_tokens=suppress,
        begin_suppress_tokens=[IDS["<|endoftext|>"]],
        is_multilingual=True,
        lang_to_id={"<|en|>": IDS["<|en|>"]},
        task_to_id={"translate": IDS["<|translate|>"], "transcribe": IDS["<|transcribe|>"]},
        no_timestamps_token_id=IDS["<|notimestamps|>"],
    )
    model.save_pretrained(folder)
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return model, processor


def by_hand(model, processor, audio: np.ndarray, rate: int) -> str:
    """The model's text for one clip of at most 30 s, float32 [C, T] at `rate`: mono, 16 kHz,
    the processor's features, greedy generate in English."""
    mono = resample(audio.mean(axis=0, keepdims=True).astype(np.float32), rate, 16000)[0]
    features = processor(mono, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, language="en", task="transcribe")
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper") / "tiny"
    model, processor = tiny_whisper(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def speech_opus(tmp_path_factory):
    """An Opus 12 kbps build (48 kHz decoded) of the sample speech with TRANSCRIPTS as text."""
    root = tmp_path_factory.mktemp("speech")
    folder = root / "in" / "train"
    folder.mkdir(parents=True)
    lines = []
    for index, text in enumerate(TRANSCRIPTS):
        shutil.copy(SAMPLE_ROOT / "speech" / f"sample-speech-{index:04d}.flac", folder / f"clip-{index}.flac")
        lines.append(json.dumps({"file_name": f"clip-{index}.flac", "text": text}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "opus"
    build(
        BuildOptions(
            codec="opus",
            out=out,
            codec_options={"kbps": 12},
            dataset="audiofolder",
            root=root / "in",
            split="train",
            workers=1,
        )
    )
    return out


@pytest.fixture(scope="module")
def scored(whisper, speech_opus):
    return evaluate(speech_opus, "asr", f"hf:{whisper[0]}", cores=0)


def test_hf_whisper_transcribes_as_the_model_run_by_hand(whisper, speech_opus, scored):
    _, model, processor = whisper
    expected = {
        sample["key"]: (by_hand(model, processor, sample["audio"].numpy(), sample["sample_rate"]), sample["text"])
        for sample in lossyds.open_dataset(speech_opus)
    }
    assert {s["key"] for s in scored["samples"]} == set(expected) and len(expected) == 5
    for sample in scored["samples"]:
        hypothesis, text = expected[sample["key"]]
        assert hypothesis, "the tiny model wrote nothing"
        assert sample["hypothesis_raw"] == hypothesis and sample["reference_raw"] == text
        assert sample["hypothesis"] == normalize_text(hypothesis) and sample["reference"] == normalize_text(text)
    assert len({s["hypothesis_raw"] for s in scored["samples"]}) > 1, "the model's text does not depend on the audio"
    assert scored["model"] == f"hf:{whisper[0]}" and scored["num_evaluated"] == 5


def test_hf_whisper_reports_three_word_error_rates(whisper, scored):
    samples = scored["samples"]
    raw_refs, raw_hyps = [s["reference_raw"] for s in samples], [s["hypothesis_raw"] for s in samples]
    assert scored["wer"] == pytest.approx(
        jiwer.wer([s["reference"] for s in samples], [s["hypothesis"] for s in samples])
    )
    assert scored["wer_raw"] == pytest.approx(jiwer.wer(raw_refs, raw_hyps))
    whisper_norm = EnglishTextNormalizer(SPELLING)
    assert scored["wer_whisper"] == pytest.approx(
        jiwer.wer([whisper_norm(t) for t in raw_refs], [whisper_norm(t) for t in raw_hyps])
    )
    assert scored["whisper_normalizer_spelling_map"] is True
    # three normalisations, three different numbers: case and punctuation count only in wer_raw
    assert scored["wer_raw"] > scored["wer"]
    assert len({scored["wer"], scored["wer_raw"], scored["wer_whisper"]}) == 3
    # the spelling map is the tokenizer's: the reference's "colour" is "color" and so scores
    # against the model's "color" and "colour" alike, which Whisper's normaliser without it does not
    assert whisper_norm(TRANSCRIPTS[0]) == "the color of the quick brown fox"
    assert any("color" in s["hypothesis_raw"] or "colour" in s["hypothesis_raw"] for s in samples)
    unmapped = EnglishTextNormalizer({})
    assert scored["wer_whisper"] < jiwer.wer([unmapped(t) for t in raw_refs], [unmapped(t) for t in raw_hyps])
    recogniser = HFSpeechRecognizer(str(whisper[0]), torch.device("cpu"))
    assert recogniser.normalize("The colour, Mr. Smith!") == "the color mister smith"


def test_without_a_spelling_map_whisper_normalises_with_an_empty_one(whisper, speech_opus, tmp_path):
    folder = shutil.copytree(whisper[0], tmp_path / "tiny")
    (folder / "normalizer.json").unlink()
    recogniser = HFSpeechRecognizer(str(folder), torch.device("cpu"))
    assert recogniser.spelling_map is False
    assert recogniser.normalize("The colour, Mr. Smith!") == "the colour mister smith"
    result = evaluate(speech_opus, "asr", f"hf:{folder}", cores=0, limit=2)
    assert result["whisper_normalizer_spelling_map"] is False and result["num_evaluated"] == 2


def test_long_audio_is_transcribed_in_30_second_windows(whisper):
    """65 s of stereo 48 kHz speech: three equal windows (of 21.7 s: no short tail), each the model's own text."""
    _, model, processor = whisper
    clips = [
        soundfile.read(SAMPLE_ROOT / "speech" / f"sample-speech-{i:04d}.flac", dtype="float32")[0] for i in range(5)
    ]
    speech = np.concatenate([np.pad(clip, (0, 8000)) for clip in clips])  # ~22 s at 16 kHz
    mono16 = np.resize(speech, 65 * 16000) * np.linspace(0.3, 1.0, 65 * 16000, dtype=np.float32)
    stereo48 = resample(np.stack([mono16, 0.5 * mono16]), 16000, 48000)  # [2, 65 s at 48 kHz]
    recogniser = HFSpeechRecognizer(str(whisper[0]), torch.device("cpu"), batch_size=2)
    windows = recogniser.windows(stereo48, 48000)
    size = len(windows[0])
    assert (
        len(windows) == 3
        and size == -(-65 * 16000 // 3)
        and [len(w) for w in windows] == [size, size, 65 * 16000 - 2 * size]
    )
    mono = resample(stereo48.mean(axis=0, keepdims=True), 48000, 16000)
    texts = [by_hand(model, processor, mono[:, start : start + size], 16000) for start in (0, size, 2 * size)]
    assert len(set(texts)) > 1, "the windows' texts do not differ: nothing shows they are separate"
    assert recogniser(stereo48, 48000) == " ".join(texts)
    # one frame over a window is two windows of half the audio, not a window and a one-frame sliver
    assert [len(w) for w in recogniser.windows(np.zeros((1, 480001), np.float32), 16000)] == [240001, 240000]
    # batched with a short clip, windows of different clips in one generate call: the same texts
    short = mono[:, :80000]
    assert recogniser.transcribe([(stereo48, 48000), (short, 16000)]) == [
        " ".join(texts),
        by_hand(model, processor, short, 16000),
    ]


def test_missing_or_wrong_model_is_one_sentence(tmp_path, speech_opus):
    with pytest.raises(UsageError, match="neither a model folder nor in the Hugging Face cache") as missing:
        HFSpeechRecognizer(str(tmp_path / "absent"), torch.device("cpu"))
    with pytest.raises(UsageError, match="neither a model folder nor in the Hugging Face cache"):
        evaluate(speech_opus, "asr", f"hf:{tmp_path / 'absent'}", cores=0)
    vit = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=1, hidden_size=16)
    vit.num_attention_heads, vit.intermediate_size = 2, 16
    transformers.ViTForImageClassification(vit).save_pretrained(tmp_path / "vit")
    with pytest.raises(UsageError, match="is not a model AutoModelForSpeechSeq2Seq loads") as wrong:
        HFSpeechRecognizer(str(tmp_path / "vit"), torch.device("cpu"))
    for error in (missing, wrong):
        message = str(error.value)
        assert "\n" not in message and message.endswith(".") and message.count(". ") == 0


def test_an_english_only_model_takes_no_language_prompt(whisper, tmp_path):
    folder = shutil.copytree(whisper[0], tmp_path / "tiny-en")
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(config | {"is_multilingual": False}))
    recogniser = HFSpeechRecognizer(str(folder), torch.device("cpu"))
    assert recogniser.generate_kwargs == {}
    audio = soundfile.read(SAMPLE_ROOT / "speech" / "sample-speech-0000.flac", dtype="float32")[0][None]
    english_only = transformers.WhisperForConditionalGeneration.from_pretrained(folder)
    features = recogniser.processor(audio[0], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = english_only.generate(features)  # no language, no task: what an English-only model takes
    expected = recogniser.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    assert expected and recogniser(audio, 16000) == expected
    with pytest.raises(UsageError, match="English-only model: it cannot transcribe fr speech"):
        HFSpeechRecognizer(str(folder), torch.device("cpu"), language="fr")


def test_cli_prints_the_three_word_error_rates(whisper, speech_opus):
    result = CliRunner().invoke(
        main, ["eval", str(speech_opus), "--task", "asr", "--model", f"hf:{whisper[0]}", "--cores", "0"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((speech_opus / "eval-asr.json").read_text())
    assert written["model"] == f"hf:{whisper[0]}"
    line = " ".join(result.output.split())
    for key in ("wer", "wer_whisper", "wer_raw"):
        assert f"{key}={written[key]:.4f}" in line
