"""The study-exact switches (issue 28): each does what the MPQ study's code did, shown against
that code's own steps run by hand, and each default is unchanged.

Task models and metric networks here have random weights from fixed seeds (a tiny SegFormer
and Whisper; mbt2018 with random:0; piq's LPIPS on a random VGG-16 and random layer weights
saved under a temporary TORCH_HOME); CDPAM uses the weights its wheel ships. The figures are
therefore not the study's; what is checked is that lossyds computes what the study's code
computes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lossyds
from lossyds import codecs, metrics
from lossyds.builder import BuildOptions, build
from lossyds.cli import main
from lossyds.codecs._audio import pyav_decode
from lossyds.errors import UsageError
from lossyds.eval import evaluate
from lossyds.types import SourceSample

from .fixtures import hf_image_set
from .test_study_metrics import records


def tone(rate: int, seconds: float, hertz: float) -> np.ndarray:
    """float32 [1, frames]: a sine at `hertz`, amplitude 0.5."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)[None]


def peak_hertz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio[0] * np.hanning(audio.shape[1])))
    return float(np.fft.rfftfreq(audio.shape[1], 1 / rate)[spectrum.argmax()])


# -- e. Opus: relabelling instead of resampling ------------------------------------------------


def test_opus_relabel_hands_44100_samples_a_second_to_the_encoder_as_48000():
    source = SourceSample(key="a", audio=tone(44100, 1.0, 1000.0), sample_rate=44100)
    meta = {"sample_rate": 44100, "num_frames": 44100, "channels": 1}
    relabel = codecs.get("opus", kbps=24, rate_conversion="relabel")
    data = relabel.encode(source)
    stream, rate = pyav_decode(data, "ogg")
    # The Ogg stream holds the 44,100 input samples as 48 kHz audio: 0.919 s, the tone at 1088 Hz.
    assert rate == 48000 and stream.shape[1] == 44100
    assert peak_hertz(stream, 48000) == pytest.approx(1000 * 48000 / 44100, abs=2)
    # Decoded, the samples are labelled back to 44.1 kHz: the source's length and pitch.
    decoded = relabel.decode(data, meta).numpy()
    assert decoded.shape == (1, 44100) and peak_hertz(decoded, 44100) == pytest.approx(1000, abs=2)
    assert float(np.mean((decoded - source.audio) ** 2)) < 0.01

    default = codecs.get("opus", kbps=24)  # resamples to 48 kHz: 48,000 samples for the second
    assert "rate_conversion" not in default.params  # unset: manifests stay as they were
    resampled, _ = pyav_decode(default.encode(source), "ogg")
    assert resampled.shape[1] == 48000 and peak_hertz(resampled, 48000) == pytest.approx(1000, abs=2)
    assert default.decode(default.encode(source), meta).shape == (1, 44100)
    # At a rate libopus takes there is nothing to convert: both give the same bytes.
    speech = SourceSample(key="b", audio=tone(48000, 0.5, 440.0), sample_rate=48000)
    assert relabel.encode(speech) == default.encode(speech)


# -- d. leaving named samples out ------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_mp3(tmp_path_factory):
    out = tmp_path_factory.mktemp("switches") / "speech-mp3"
    build(BuildOptions(codec="mp3", codec_options={"kbps": 32}, out=out, workers=1))
    return out


def test_exclude_leaves_the_named_samples_out(speech_mp3):
    model = "tests.task_models:duration_words"
    everything = evaluate(speech_mp3, "asr", model, cores=0)
    keys = [s["key"] for s in everything["samples"]]
    left_out = [keys[1], keys[3]]
    result = evaluate(speech_mp3, "asr", model, cores=0, exclude=",".join(left_out))
    assert [s["key"] for s in result["samples"]] == [k for k in keys if k not in left_out]
    assert result["num_evaluated"] == len(keys) - 2 and result["options"] == {"exclude": ",".join(left_out)}
    assert "options" not in everything  # a default evaluation records no options
    as_list = evaluate(speech_mp3, "asr", model, cores=0, exclude=left_out)  # a study file's list
    assert as_list["wer"] == result["wer"]
    with pytest.raises(UsageError, match="does not hold: no-such-key"):
        evaluate(speech_mp3, "asr", model, cores=0, exclude=f"{keys[0]},no-such-key")
    with pytest.raises(UsageError, match="--language applies to asr, not classification"):
        evaluate(speech_mp3, "classification", "tests.task_models:brightness_classifier", language="detect")
    with pytest.raises(UsageError, match="--native-size applies to hf: models, not module"):
        evaluate(speech_mp3, "segmentation", "tests.task_models:road_everywhere", native_size=True)

    ran = CliRunner().invoke(main, ["eval", str(speech_mp3), "--task", "asr", "--model", model, "--exclude", keys[0]])
    assert ran.exit_code == 0, ran.output
    written = json.loads((speech_mp3 / "eval-asr.json").read_text())
    assert keys[0] not in [s["key"] for s in written["samples"]] and written["num_evaluated"] == len(keys) - 1


# -- a + b. uncropped mbt2018 output, native-size segmentation ---------------------------------


def study_mean_iou(predictions, annotations, num_labels: int = 150) -> float:
    """Hugging Face `evaluate`'s mean_iou(num_labels, ignore_index=255, reduce_labels=True), as
    its code computes it (it is not installed here): labels 0 -> 255, the rest minus 1; areas of
    intersection and union summed per class over all images; the mean of their ratio over the
    classes whose union is not empty."""
    intersect, union = np.zeros(num_labels), np.zeros(num_labels)
    for prediction, annotation in zip(predictions, annotations):
        label = annotation.astype(np.int64)
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
        keep = label != 255
        prediction, label = prediction[keep], label[keep]
        both = np.histogram(prediction[prediction == label], bins=num_labels, range=(0, num_labels - 1))[0]
        area_prediction = np.histogram(prediction, bins=num_labels, range=(0, num_labels - 1))[0]
        area_label = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
        intersect += both
        union += area_prediction + area_label - both
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union))


def tiny_segformer_150(folder):
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_labels=150,
        num_encoder_blocks=1,
        depths=[1],
        sr_ratios=[1],
        hidden_sizes=[16],
        patch_sizes=[7],
        strides=[4],
        num_attention_heads=[1],
        mlp_ratios=[2],
        decoder_hidden_size=16,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(folder)
    transformers.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return model, transformers.SegformerImageProcessor.from_pretrained(folder)


def ade_like_build(root, codec: str, side: int, count: int):
    """`count` side x side ADE20k-like images (label maps 0..150) coded by `codec` at quality 1
    (random:0 weights, zero-centred padding as the study padded)."""
    (root / "ade" / "data").mkdir(parents=True, exist_ok=True)
    hf_image_set(size=(side, side), label_column=None, mask_column="annotation").to_parquet(
        str(root / "ade" / "data" / "validation-00000-of-00001.parquet")
    )
    out = root / f"ade-{codec}"
    build(
        BuildOptions(
            codec=codec,
            codec_options={"quality": 1, "weights": "random:0", "padding": "zero-centred"},
            dataset=f"hf:{root / 'ade'}",
            split=f"validation[:{count}]",
            out=out,
            workers=1,
        )
    )
    return out


@pytest.fixture(scope="module")
def ade_500(tmp_path_factory, request):
    """Two 500x500 ADE20k-like images coded by bmshj2018-factorized (the learned codecs share
    their padding and crop; this one decodes in a fraction of a second where mbt2018's
    autoregressive decoding takes most of a minute a 512 px image on a CPU), and a tiny
    SegFormer with 150 classes."""
    root = tmp_path_factory.mktemp("ade")
    monkeypatch = pytest.MonkeyPatch()
    request.addfinalizer(monkeypatch.undo)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = ade_like_build(root, "bmshj2018-factorized", 500, 2)
    model, processor = tiny_segformer_150(root / "seg")
    return out, root / "seg", model, processor


def decoded_images(build_dir, padded: bool) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(image, annotation) of each sample, the codec's output cropped or not."""
    dataset = lossyds.open_dataset(build_dir, weights="random:0")
    dataset.codec.output_padded = padded
    return [(sample["image"], sample["mask"][0].numpy()) for sample in dataset]


def test_padded_output_hands_the_model_the_512px_image_of_a_500px_source(ade_500):
    out, *_ = ade_500
    cropped, padded = decoded_images(out, False), decoded_images(out, True)
    for (small, annotation), (large, _) in zip(cropped, padded):
        assert small.shape == (3, 500, 500) and annotation.shape == (500, 500)
        assert large.shape == (3, 512, 512)  # 500 padded to a multiple of 64, 6 px each side
        assert torch.equal(large[:, 6:506, 6:506], small)  # the crop the default takes


def test_padded_output_of_mbt2018(tmp_path, monkeypatch):
    """mbt2018 itself, on a 60x60 image (64x64 coded, 2 px of padding each side) to keep its
    autoregressive decoding short."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = ade_like_build(tmp_path, "mbt2018", 60, 1)
    (small, _), (large, _) = decoded_images(out, False)[0], decoded_images(out, True)[0]
    assert small.shape == (3, 60, 60) and large.shape == (3, 64, 64)
    assert torch.equal(large[:, 2:62, 2:62], small)


def test_native_size_segmentation_of_padded_output_scores_as_the_study(ade_500):
    """The study's ADE20k mbt2018 cell (notebook 681195d, before the crop fix): the padded
    output through the processor at its own size, the argmax at 1/4, the label map resized by
    transforms.Resize, mean_iou(num_labels=150, reduce_labels=True)."""
    from torchvision import transforms

    out, folder, model, processor = ade_500
    result = evaluate(
        out, "segmentation", f"hf:{folder}", cores=0, weights="random:0", padded_output=True, native_size=True
    )
    predictions, annotations, blended = [], [], False
    for image, annotation in decoded_images(out, True):
        inputs = processor(images=image, return_tensors="pt", do_resize=False)  # the study's lines, by hand
        with torch.no_grad():
            logits = model(**inputs).logits
        assert logits.shape[-2:] == (128, 128)  # 1/4 of the padded 512x512
        low = logits.argmax(dim=1)[0]
        resize = transforms.Resize(annotation.shape, antialias=True)
        prediction = resize(low.unsqueeze(0).unsqueeze(0))[0][0]
        blended |= bool(set(prediction.unique().tolist()) - set(low.unique().tolist()))
        predictions.append(prediction.numpy())
        annotations.append(annotation)
    assert blended  # class ids interpolated between neighbours: ids the model never predicted
    assert result["miou"] == pytest.approx(study_mean_iou(predictions, annotations), rel=1e-6)
    assert result["options"] == {"padded_output": True, "native_size": True}
    default = evaluate(out, "segmentation", f"hf:{folder}", cores=0, weights="random:0")
    assert default["miou"] != result["miou"] and "options" not in default


# -- c. language detection for Whisper --------------------------------------------------------

LANGUAGE_WORDS = ["ĠThe", "Ġcolour", "Ġquick", "ĠFOX", "Ġdog", "Ġsea"]
LANGUAGE_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


def two_language_whisper(folder):
    """A one-layer Whisper (random weights, seed 0) that knows English and German, whose
    decoder's last layer norm outputs the embedding of <|de|> at every step: language
    detection picks German every time, and forced English differs from it."""
    import transformers

    ids = {token: i for i, token in enumerate(LANGUAGE_WORDS + LANGUAGE_SPECIALS)}
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = transformers.WhisperTokenizer(
        vocab=dict(ids), merges=[], pad_token="<|endoftext|>", additional_special_tokens=LANGUAGE_SPECIALS[1:]
    )
    suppress = [ids[token] for token in LANGUAGE_SPECIALS[1:]]
    torch.manual_seed(0)
    common = dict(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        suppress_tokens=suppress,
        begin_suppress_tokens=[ids["<|endoftext|>"]],
    )
    config = transformers.WhisperConfig(
        vocab_size=len(ids),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
        **common,
    )
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        norm = model.model.decoder.layer_norm
        norm.weight.zero_()
        norm.bias.copy_(model.model.decoder.embed_tokens.weight[ids["<|de|>"]] * 5)
    model.generation_config = transformers.GenerationConfig(
        max_length=10,
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        **common,
    )
    model.save_pretrained(folder)
    processor = transformers.WhisperProcessor(
        feature_extractor=transformers.WhisperFeatureExtractor(), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return model, processor, ids


def test_language_detect_lets_whisper_choose_the_language_as_the_pipeline_did(tmp_path):
    from lossyds.eval.hf import load

    model, processor, ids = two_language_whisper(tmp_path / "whisper")
    clip = tone(16000, 1.0, 300.0)
    features = processor(clip[0], sampling_rate=16000, return_tensors="pt").input_features
    prompts = []

    def seen(module, args, kwargs):  # the first step of generation: the whole prompt
        given = kwargs.get("decoder_input_ids")
        if given is not None and given.shape[1] > 1 and not prompts:
            prompts.append(given[0].tolist())

    detecting = load(str(tmp_path / "whisper"), "asr", torch.device("cpu"), 1, language="detect")
    assert detecting.whisper.generate_kwargs == {}  # no language, no task: as the ASR pipeline got
    hook = detecting.whisper.model.register_forward_pre_hook(seen, with_kwargs=True)
    text = detecting.transcribe([(clip, 16000)])[0]
    hook.remove()
    assert prompts[0][1] == ids["<|de|>"]  # the model's own choice, not English
    with torch.no_grad():
        by_hand = model.generate(features)  # the pipeline's call: no generate_kwargs
    assert text == processor.batch_decode(by_hand, skip_special_tokens=True)[0].strip()

    prompts.clear()
    english = load(str(tmp_path / "whisper"), "asr", torch.device("cpu"), 1)
    hook = english.whisper.model.register_forward_pre_hook(seen, with_kwargs=True)
    english.transcribe([(clip, 16000)])
    hook.remove()
    assert prompts[0][1] == ids["<|en|>"]  # the default: English, fixed


# -- f. the study's metric definitions --------------------------------------------------------


def test_chunked_mse_and_its_db_of_mean_are_the_studys_audio_psnr(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.uniform(-0.5, 0.5, (2, 250_000)).astype(np.float32)
    decoded = torch.from_numpy(source + rng.normal(0, 0.01, source.shape).astype(np.float32))
    found = metrics.compute(["mse", "mse@2x100000"], source, decoded, 44100)
    d = decoded.numpy()
    chunks = [
        torch.nn.MSELoss()(torch.from_numpy(source[:, i : i + 100000]), decoded[:, i : i + 100000]).item()
        for i in (0, 100000)
    ]
    assert found["mse@2x100000"] == pytest.approx(np.mean(chunks), rel=1e-6)
    assert found["mse"] == pytest.approx(float(np.mean((source.astype(np.float64) - d) ** 2)), rel=1e-9)
    with pytest.raises(UsageError, match="NAME@CHUNKSxFRAMES"):
        metrics.check_metrics(["mse@50"], "audio")

    out = tmp_path / "speech-opus"
    build(BuildOptions(codec="opus", codec_options={"kbps": 6}, out=out, workers=1, metrics=["mse", "psnr"]))
    manifest = json.loads((out / "manifest.json").read_text())
    values = [meta["metrics"]["mse"] for meta in records(out).values()]
    study_psnr = -10 * np.log10(np.mean(values))  # the notebook: -10 log10(np.mean(mse_distance))
    assert manifest["metrics"]["mse"]["db_of_mean"] == pytest.approx(study_psnr, rel=1e-9)
    assert "db_of_mean" not in manifest["metrics"]["psnr"]
    # lossyds's standard psnr is the mean of per-sample PSNRs, which differs from it
    assert manifest["metrics"]["psnr"]["mean"] != pytest.approx(study_psnr, rel=1e-3)


def test_cdpam_raw_feeds_the_network_the_raw_waveforms():
    from lossyds import audio_metrics

    rng = np.random.default_rng(0)
    source = (0.3 * rng.standard_normal((1, 4096))).astype(np.float32)
    decoded = source + (0.05 * rng.standard_normal(source.shape)).astype(np.float32)
    value = audio_metrics.cdpam_raw(source, decoded, 44100)
    network = audio_metrics.load_cdpam()
    with torch.no_grad():  # cdpam.CDPAM.forward's lines on the study's float tensors
        _, a1, _ = network.base_encoder.forward(torch.from_numpy(source).unsqueeze(1))
        _, a2, _ = network.base_encoder.forward(torch.from_numpy(decoded).unsqueeze(1))
        by_hand = network.model_dist.forward(
            torch.nn.functional.normalize(a1, dim=1), torch.nn.functional.normalize(a2, dim=1)
        )
    assert value == pytest.approx(float(by_hand.mean()), rel=1e-5)
    assert value != pytest.approx(audio_metrics.cdpam(source, decoded, 44100), rel=1e-3)  # the standard input
    assert metrics.summaries("cdpam-raw", 0.01) == {"db_of_mean": pytest.approx(20.0)}


@pytest.fixture(scope="module")
def piq_torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a random VGG-16 (seed 0) and random piq LPIPS layer
    weights under the file names piq and torchvision look for."""
    import torchvision

    from lossyds import image_metrics

    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), checkpoints / "vgg16-397923af.pth")
    torch.save([torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)], checkpoints / "lpips_weights.pt")
    patch = pytest.MonkeyPatch()
    patch.setenv("TORCH_HOME", str(home))
    patch.setattr(image_metrics, "_piq_lpips_model", None)
    yield home
    patch.undo()
    image_metrics._piq_lpips_model = None


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # piq's own vgg16(pretrained=True)
def test_lpips_piq_db_is_the_studys_negative_log_of_piq_lpips_on_0_255(piq_torch_home):
    pytest.importorskip("piq")
    from piq import LPIPS

    from lossyds import image_metrics

    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    decoded = np.clip(source.astype(int) + rng.integers(-20, 21, source.shape), 0, 255).astype(np.uint8)
    value = image_metrics.lpips_piq_db(source, decoded)
    to = lambda a: torch.tensor(a).to(torch.float32).permute(2, 0, 1).unsqueeze(0)  # noqa: E731  (the notebook's steps)
    with torch.no_grad():
        by_hand = LPIPS()(to(source), to(decoded)).item()
    assert value == pytest.approx(-10 * np.log10(by_hand), rel=1e-6)
    grey = image_metrics.lpips_piq_db(source[:, :, :1], decoded[:, :, :1])  # one channel, as the study passed it
    assert math.isfinite(grey) and grey != pytest.approx(value)
    assert metrics.find("lpips-piq-db", "image").higher_is_better


def test_lpips_piq_db_without_its_files_names_each(tmp_path, monkeypatch):
    from lossyds import image_metrics

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    monkeypatch.setattr(image_metrics, "_piq_lpips_model", None)
    checkpoints = tmp_path / "hub" / "checkpoints"
    with pytest.raises(UsageError, match=r"vgg16-397923af\.pth .* at " + str(checkpoints)):
        metrics.check_metrics(["lpips-piq-db"], "image")
    checkpoints.mkdir(parents=True)
    (checkpoints / "vgg16-397923af.pth").write_bytes(b"")  # present: the next file is asked for
    with pytest.raises(UsageError, match=r"lpips_weights\.pt .* at " + str(checkpoints / "lpips_weights.pt")):
        metrics.check_metrics(["lpips-piq-db"], "image")
