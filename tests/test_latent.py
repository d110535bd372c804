"""output="latent": the codec's own representation out of the loader, equal to what the
codec libraries' own readers recover, with the true bits; refused for standard codecs."""

from __future__ import annotations

import io
import json

import pytest
import torch

import lossyds
from lossyds import codecs
from lossyds.errors import UsageError


def stored_bitstreams(directory, extension: str) -> dict[str, bytes]:
    import tarfile

    manifest = json.loads((directory / "manifest.json").read_text())
    found = {}
    for shard in manifest["shards"]:
        with tarfile.open(directory / shard["path"]) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if ext == extension:
                    found[key] = tar.extractfile(member).read()
    return found


@pytest.mark.parametrize(
    ("codec", "entropy_lm"), [("encodec", False), ("encodec", True), ("encodec-48khz", False), ("encodec-48khz", True)]
)
def test_encodec_codes_equal_encodecs_own_reader(built, codec, entropy_lm):
    pytest.importorskip("encodec")
    import importlib

    encodec_compress = importlib.import_module("encodec.compress")  # the package re-exports a function of that name

    directory = built(codec, rate={"kbps": 6, "weights": "random:0", "entropy_lm": entropy_lm}, limit=1)
    manifest = json.loads((directory / "manifest.json").read_text())
    model_codec = codecs.from_manifest(manifest["codec"])
    own: dict[str, list] = {}

    class Capture:  # stands in for the model's decode: keeps the frames encodec's reader recovered
        def __call__(self, frames):
            own["frames"] = frames
            return torch.zeros(1, 1, 1)

    model = model_codec.model
    original_decode = model.decode
    model.decode = Capture()
    if entropy_lm:
        model.get_lm_model = lambda: model_codec.lm
    saved = dict(encodec_compress.MODELS)
    encodec_compress.MODELS[model_codec.model_name] = lambda: model
    samples = list(lossyds.open_dataset(directory, output="latent"))
    try:
        for sample in samples:
            data = stored_bitstreams(directory, "ecdc")[sample["key"]]
            encodec_compress.decompress_from_file(io.BytesIO(data))
            frames = own["frames"]
            latent = sample["latent"]
            assert torch.equal(latent["codes"], torch.cat([codes[0] for codes, _ in frames], dim=-1))
            assert latent["segment_frames"].tolist() == [codes.shape[-1] for codes, _ in frames]
            scales = [scale for _, scale in frames if scale is not None]
            assert (codec == "encodec-48khz") == bool(scales)
            if scales:
                assert torch.equal(latent["scales"], torch.cat(scales).float())
            assert sample["payload_bits"] == 8 * len(data)
            assert "audio" not in sample
    finally:
        encodec_compress.MODELS.clear()
        encodec_compress.MODELS.update(saved)
        model.decode = original_decode
    assert len(samples) == 1


class SynthesisCapture(torch.nn.Module):
    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        self.y_hat = y_hat
        return y_hat.new_zeros(y_hat.shape[0], 3, 1, 1)


@pytest.mark.parametrize("codec", ["bmshj2018-hyperprior", "mbt2018-mean"])
def test_compressai_latents_equal_the_models_own(built, codec):
    pytest.importorskip("compressai")
    from lossyds.codecs import lsyn

    directory = built(codec, rate={"quality": 1, "weights": "random:0"}, limit=2)
    manifest = json.loads((directory / "manifest.json").read_text())
    model_codec = codecs.from_manifest(manifest["codec"])
    model = model_codec.model
    for sample in lossyds.open_dataset(directory, output="latent"):
        stream = lsyn.unpack(stored_bitstreams(directory, "lsyn")[sample["key"]])
        capture = SynthesisCapture()
        original = model.g_s
        model.g_s = capture  # the model's own decompress, up to its synthesis network
        try:
            with torch.no_grad():
                model.decompress(stream.strings, stream.latent_shape)
        finally:
            model.g_s = original
        assert torch.equal(sample["latent"]["y_hat"], capture.y_hat[0])
        assert sample["pixels"] == stream.height * stream.width


def test_standard_codecs_refuse_latent_output_in_one_sentence(built):
    with pytest.raises(UsageError, match="output='latent' is for the neural codecs"):
        lossyds.open_dataset(built("webp"), output="latent")
    with pytest.raises(UsageError, match="'decoded' or 'latent'"):
        lossyds.open_dataset(built("jpeg"), output="codes")


def test_jpeg_dct_coefficients_reconstruct_libjpegs_own_luma(built):
    """Dequantised and inverse-transformed by hand (scipy's orthonormal 2-D DCT-III per 8x8
    block), the coefficients give the Y plane libjpeg decodes (Pillow asked for YCbCr, so no
    colour conversion) to within its integer IDCT's rounding."""
    pytest.importorskip("jpeglib")
    import numpy as np
    from PIL import Image
    from scipy.fft import idctn

    directory = built("jpeg")
    bitstreams = stored_bitstreams(directory, "jpg")
    samples = list(lossyds.open_dataset(directory, output="latent"))
    assert len(samples) == len(bitstreams) == 6
    channels = set()
    for sample in samples:
        latent = sample["latent"]
        blocks = latent["dct_y"].numpy().astype(np.float64) * latent["qt_y"].numpy()
        luma = idctn(blocks, type=2, axes=(2, 3), norm="ortho") + 128  # [rows, cols, 8, 8]
        rows, cols = blocks.shape[:2]
        luma = luma.transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8)
        with Image.open(io.BytesIO(bitstreams[sample["key"]])) as image:
            image.draft("YCbCr", image.size)
            own = np.asarray(image.convert("YCbCr") if image.mode != "L" else image, dtype=np.float64)
        own = own[..., 0] if own.ndim == 3 else own
        height, width = own.shape
        assert np.abs(np.clip(np.round(luma[:height, :width]), 0, 255) - own).max() <= 1, sample["key"]
        assert latent["dct_y"].dtype == torch.int16 and latent["qt_y"].dtype == torch.int32
        channels.add("dct_cb" in latent)
        if "dct_cb" in latent:  # 4:2:0: chroma on half the block grid (rounded up to whole MCUs)
            assert latent["dct_cb"].shape[:2] == latent["dct_cr"].shape[:2] == ((rows + 1) // 2, (cols + 1) // 2)
        assert sample["payload_bits"] == len(bitstreams[sample["key"]]) * 8
    assert channels == {True, False}  # the sample photos hold gray and colour images


def test_latents_batch_with_padding_and_masks_in_workers(built):
    pytest.importorskip("encodec")
    directory = built("encodec", rate={"kbps": 6, "weights": "random:0"})
    loader = lossyds.DataLoader(
        lossyds.open_dataset(directory, output="latent"), batch_size=3, num_workers=2, collate_fn=lossyds.collate_padded
    )
    batches = list(loader)
    samples = {s["key"]: s for s in lossyds.open_dataset(directory, output="latent")}
    seen = 0
    for batch in batches:
        codes, mask = batch["latent"]["codes"], batch["latent"]["codes_mask"]
        assert codes.shape == mask.shape and codes.dtype == torch.int64
        for row, key in enumerate(batch["key"]):
            own = samples[key]["latent"]["codes"]
            assert torch.equal(codes[row][mask[row]].reshape(own.shape), own)
            seen += 1
    assert seen == len(samples)
    assert loader.bits.summary()["samples"] == len(samples)
