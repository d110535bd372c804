"""Learned image codecs in lossyds's `.lsyn` container: CompressAI models (Ballé 2018,
Minnen 2018, Cheng 2020, quality 1-8), and (in _msillm.py) the HiFiC-architecture MS-ILLM.

Images are padded (edge replication) to a multiple of 64 pixels, the model's total
downsampling, and cropped back on decode. Grayscale images are replicated to three
channels for the model and converted back to one channel (ITU-R 601-2 luma) on decode.
The bitstream is lossyds's neural container (`.lsyn`, see _container.py): header plus the
model's entropy-coded strings. Decoding runs on CPU; learned entropy coding may not
decode across devices (CompressAI #279, #309), which the manifest records.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CodecError, UsageError
from ..types import SourceSample
from ..weights import WeightsError
from . import _container
from ._neural import NeuralModelMixin
from ._pillow import rgb_to_gray
from .base import ImageCodec

PAD_MULTIPLE = 64


class LearnedImageCodec(NeuralModelMixin, ImageCodec):
    """A learned image codec whose model turns a padded [N, 3, H, W] batch into entropy-coded
    strings (`compress_tensor`) and back (`decompress_tensor`); the bitstream is `.lsyn`."""

    extension: ClassVar[str] = "lsyn"

    def compress_tensor(self, x: torch.Tensor) -> tuple[list[list[bytes]], list[int]]:
        """[N, 3, Hp, Wp] in [0, 1] -> (string groups, each a list of N strings; latent shape)."""
        raise NotImplementedError

    def decompress_tensor(self, strings: list[list[bytes]], shape: list[int]) -> torch.Tensor:
        """One sample's strings -> x_hat [1, 3, Hp, Wp] in [0, 1]."""
        raise NotImplementedError

    def __init__(self, *, quality: int | None = None, weights: str | None = None, **rate: Any):
        self.require_package()
        if rate.get("bpp") is not None:
            raise UsageError(f"{self.name} takes --quality 1..{self.quality_range[1]}; --bpp targeting covers the Pillow codecs only.")
        super().__init__(quality=quality, weights=weights, **rate)

    @classmethod
    def library_version(cls) -> str:
        from importlib.metadata import version

        return version(cls.package)

    def manifest_entry(self) -> dict[str, Any]:
        entry = super().manifest_entry()
        entry["weights"] = self.weights_info().to_manifest()
        entry["decode_portability"] = "CPU float32; decoding on another device type may fail (CompressAI #279, #309): decode on CPU"
        return entry

    # -- encode / decode -------------------------------------------------------------------

    def _to_model_input(self, image: np.ndarray) -> torch.Tensor:
        x = torch.tensor(image).permute(2, 0, 1).float().div_(255.0)  # a copy: source arrays may be read-only
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        height, width = x.shape[1:]
        pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
        return F.pad(x[None], (0, pad_w, 0, pad_h), mode="replicate")[0]

    def encode_batch(self, images: list[np.ndarray]) -> list[bytes]:
        """Encode same-size uint8 [H, W, C] images in one model call (used to check batch invariance)."""
        if len({im.shape for im in images}) != 1:
            raise CodecError("encode_batch needs images of one size")
        x = torch.stack([self._to_model_input(im) for im in images])
        with torch.no_grad():
            groups, shape = self.compress_tensor(x)
        height, width, channels = images[0].shape
        prefix = bytes.fromhex(self.weights_info().sha256[:16])
        streams = []
        for index in range(len(images)):
            strings = [[group[index]] for group in groups]
            streams.append(_container.pack(_container.NeuralBitstream(self.name, self.params["quality"], prefix, height, width, channels, [int(d) for d in shape], strings)))
        return streams

    def encode(self, sample: SourceSample) -> bytes:
        if sample.image is None:
            raise CodecError(f"{self.name} encodes images; sample {sample.key!r} has none")
        return self.encode_batch([sample.image])[0]

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        stream = _container.unpack(bytes(data))
        if stream.codec != self.name or stream.quality != self.params["quality"]:
            raise CodecError(f"bitstream is {stream.codec} quality {stream.quality}, not {self.name} quality {self.params['quality']}")
        have = self.weights_info().sha256[:16]
        if stream.weights_prefix.hex() != have:
            raise WeightsError(f"{self.name}: this bitstream was made with weights {stream.weights_prefix.hex()}..., but the weights given are {have}...; decoding would be wrong.")
        with torch.no_grad():
            x_hat = self.decompress_tensor(stream.strings, stream.latent_shape)
        x = x_hat[0, :, : stream.height, : stream.width].clamp(0, 1).mul_(255).round_().to(torch.uint8)
        return rgb_to_gray(x) if stream.channels == 1 else x.contiguous()


class CompressAICodec(LearnedImageCodec):
    library: ClassVar[str] = "CompressAI"
    architecture: ClassVar[str]  # CompressAI zoo name
    quality_range = (1, 8)
    package = "compressai"

    def new_model(self) -> torch.nn.Module:
        from compressai.zoo.image import cfgs, model_architectures

        return model_architectures[self.architecture](*cfgs[self.architecture][self.params["quality"]])

    def model_from_state(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        from compressai.zoo.image import load_pretrained, model_architectures

        return model_architectures[self.architecture].from_state_dict(load_pretrained(state))

    def pretrained_source(self) -> tuple[str, str | None]:
        from compressai.zoo.image import model_urls

        url = model_urls[self.architecture]["mse"][self.params["quality"]]
        return url.rsplit("/", 1)[-1], url

    def prepare(self, model: torch.nn.Module) -> None:
        model.update(force=True)  # entropy-coder tables from the (possibly random) parameters

    def compress_tensor(self, x: torch.Tensor) -> tuple[list[list[bytes]], list[int]]:
        out = self.model.compress(x)
        return out["strings"], list(out["shape"])

    def decompress_tensor(self, strings: list[list[bytes]], shape: list[int]) -> torch.Tensor:
        return self.model.decompress(strings, shape)["x_hat"]


class Bmshj2018FactorizedCodec(CompressAICodec):
    name = "bmshj2018-factorized"
    architecture = "bmshj2018-factorized"


class Bmshj2018HyperpriorCodec(CompressAICodec):
    name = "bmshj2018-hyperprior"
    architecture = "bmshj2018-hyperprior"


class Mbt2018MeanCodec(CompressAICodec):
    name = "mbt2018-mean"
    architecture = "mbt2018-mean"


class Mbt2018Codec(CompressAICodec):
    name = "mbt2018"
    architecture = "mbt2018"


class Cheng2020AnchorCodec(CompressAICodec):
    name = "cheng2020-anchor"
    architecture = "cheng2020-anchor"
    quality_range = (1, 6)
