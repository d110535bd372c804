"""Learned image codecs in lossyds's `.lsyn` container: CompressAI models (Ballé 2018,
Minnen 2018, Cheng 2020, quality 1-8), and (in msillm.py) the HiFiC-architecture MS-ILLM.

Images are padded to a multiple of 64 pixels, the model's total downsampling, and cropped
back on decode: by default with replicated edges at the bottom and right (`padding=replicate`),
or with zeros centred around the image (`padding=zero-centred`: CompressAI's own
`compute_padding` rule, as the MPQ study padded). The two give different bitstreams. Grayscale images are replicated to three
channels for the model and converted back to one channel (ITU-R 601-2 luma) on decode.
The bitstream is lossyds's neural container (`.lsyn`, see lsyn.py): header plus the
model's entropy-coded strings. Entropy decoding (with the hyper-synthesis that gives its
scales and means) runs on CPU: learned entropy coding may not decode across devices
(CompressAI #279, #309), which the manifest records. The synthesis network `g_s` may run
anywhere, batched (`synthesize`), since nothing is entropy-decoded from its output.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CodecError
from ..options import Option
from ..types import SourceSample
from ..weights import WeightsError
from . import lsyn
from ._neural import WEIGHTS_OPTION, NeuralModelMixin, shape_groups, without_tf32
from ._pillow import rgb_to_gray
from .base import ImageCodec, Latent

PAD_MULTIPLE = 64
PADDING_OPTION = Option(
    "padding",
    str,
    "Learned image codecs: padding to a multiple of 64 px, replicate (edges, bottom/right) or zero-centred (the MPQ study's).",
    default="replicate",
    choices=("replicate", "zero-centred"),
)


def padding_box(height: int, width: int, mode: str) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixels of padding that make height and width multiples of 64."""
    pad_h, pad_w = (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE
    if mode == "zero-centred":
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2
    return 0, pad_w, 0, pad_h


class _SynthesisInputCapture(torch.nn.Module):
    """Stands in for a model's synthesis network inside the library's own `decompress`: it
    keeps the latent it is given (per thread) and returns a [N, 3, 1, 1] placeholder. So the
    entropy decoding runs exactly as the library wrote it, and the synthesis is left to
    `synthesize`, which batches it on any device. (The libraries offer no entropy-only
    decode; re-implementing each model's would duplicate five decompress methods.)"""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        self._local.latent = latent
        return latent.new_zeros(latent.shape[0], 3, 1, 1)

    def take(self) -> torch.Tensor:
        latent = self._local.latent
        del self._local.latent
        return latent


class _GivenAnalysis(torch.nn.Module):
    """Stands in for a model's analysis network inside the library's own `compress`: it returns
    the latent that `analyse` computed (batched, on any device) whatever it is given. So the
    rest of the encoder (hyper-analysis, hyper-synthesis, entropy coding) runs exactly as the
    library wrote it, on CPU, for one sample, as the decoder recomputes it."""

    def __init__(self, latent: torch.Tensor) -> None:
        super().__init__()
        self.latent = latent

    def forward(self, _image: torch.Tensor) -> torch.Tensor:
        return self.latent


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`batch` (on CPU) on `device`. To CUDA, through pinned memory and without blocking: a copy
    from pageable memory makes the host wait for the device, so the loader could not prepare
    the next batch while this one is synthesised."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


class LearnedImageCodec(NeuralModelMixin, ImageCodec):
    """A learned image codec whose model turns a padded [N, 3, H, W] batch into entropy-coded
    strings (`compress_tensor`) and back (`decompress_tensor`); the bitstream is `.lsyn`."""

    extension: ClassVar[str] = "lsyn"
    options: ClassVar[tuple[Option, ...]] = (WEIGHTS_OPTION, PADDING_OPTION)
    batched_synthesis: ClassVar[bool] = True
    takes_bpp: ClassVar[bool] = False  # bpp targeting covers the Pillow codecs only
    synthesis_attribute: ClassVar[str] = "g_s"  # the model's synthesis network
    analysis_attribute: ClassVar[str] = "g_a"  # the model's analysis network

    def compress_tensor(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[list[list[bytes]], list[int]]:
        """Run `model`'s own compress on [N, 3, Hp, Wp] in [0, 1] -> (string groups, each a
        list of N strings; latent shape)."""
        raise NotImplementedError

    def decompress_tensor(self, model: torch.nn.Module, strings: list[list[bytes]], shape: list[int]) -> None:
        """Run `model`'s own decompress on one sample's strings (its synthesis network is
        captured, see _SynthesisInputCapture)."""
        raise NotImplementedError

    def __init__(self, **settings: Any):
        self.require_package()
        super().__init__(**settings)

    @classmethod
    def library_version(cls) -> str:
        from importlib.metadata import version

        return version(cls.package)

    def manifest_entry(self) -> dict[str, Any]:
        entry = super().manifest_entry()
        entry["weights"] = self.weights_info().to_manifest()
        entry["decode_portability"] = (
            "entropy decoding (with the hyper-synthesis) on CPU float32 only: on another device type it may fail (CompressAI #279, #309); "
            "the synthesis network may run on any device (decode_device), within float rounding of the CPU result"
        )
        return entry

    # -- encode / decode -------------------------------------------------------------------

    def _to_model_input(self, image: np.ndarray) -> torch.Tensor:
        x = torch.tensor(image).permute(2, 0, 1).float().div_(255.0)  # a copy: source arrays may be read-only
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        height, width = x.shape[1:]
        box = padding_box(height, width, self.params["padding"])
        if self.params["padding"] == "zero-centred":
            return F.pad(x[None], box, mode="constant", value=0.0)[0]
        return F.pad(x[None], box, mode="replicate")[0]

    def encode_batch(self, images: list[np.ndarray], device: str | torch.device = "cpu") -> list[bytes]:
        """Encode uint8 [H, W, C] images: the analysis batched on `device` (images of one padded
        size together), the rest per image on CPU (see `entropy_code`)."""
        return self.encode_batch_samples([SourceSample(key=str(i), image=im) for i, im in enumerate(images)], device)

    def encode(self, sample: SourceSample) -> bytes:
        return self.encode_batch_samples([sample])[0]

    def analysis_input(self, sample: SourceSample) -> torch.Tensor:
        """[3, Hp, Wp] float32 in [0, 1]: the image padded to a multiple of 64 (as `encode` pads it)."""
        if sample.image is None:
            raise CodecError(f"{self.name} encodes images; sample {sample.key!r} has none")
        return self._to_model_input(sample.image)

    def analyse(self, inputs: list[torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Latents y, float32 [1, M, Hp/16, Wp/16] on CPU, of padded inputs [3, Hp, Wp]; inputs
        of one shape run as one batch through the analysis network on `device`."""
        network = self.module_on(device, self.analysis_attribute)
        latents: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
        with torch.no_grad(), without_tf32():
            for indexes in shape_groups(inputs):
                batch = torch.stack([inputs[i] for i in indexes]).to(device)
                output = network(batch).to("cpu", torch.float32)
                for row, index in enumerate(indexes):
                    latents[index] = output[row : row + 1].clone()  # its own storage: pickled alone to a worker
        return latents

    def entropy_code(self, sample: SourceSample, analysis: torch.Tensor) -> bytes:
        """The `.lsyn` bitstream of one image from its latent y [1, M, h, w]: the library's own
        compress runs on CPU with its analysis network standing in (`_GivenAnalysis`)."""
        if sample.image is None:
            raise CodecError(f"{self.name} encodes images; sample {sample.key!r} has none")
        height, width, channels = sample.image.shape
        left, right, top, bottom = padding_box(height, width, self.params["padding"])
        model = copy.copy(self.model)
        model._modules = type(model._modules)(model._modules)  # its own module table, the same modules
        model._modules[self.analysis_attribute] = _GivenAnalysis(analysis)
        placeholder = torch.zeros(()).expand(1, 3, height + top + bottom, width + left + right)  # shape only
        with torch.no_grad():
            groups, shape = self.compress_tensor(model, placeholder)
        prefix = bytes.fromhex(self.weights_info().sha256[:16])
        strings = [[group[0]] for group in groups]
        stream = lsyn.NeuralBitstream(
            self.name, self.params["quality"], prefix, height, width, channels, [int(d) for d in shape], strings
        )
        return lsyn.pack(stream)

    def _entropy_view(self) -> tuple[torch.nn.Module, _SynthesisInputCapture]:
        """A view of `self.model` that shares every part but the synthesis network, which is a capture."""
        view = self.__dict__.get("_entropy_view_cache")
        if view is None:
            capture = _SynthesisInputCapture()
            model = copy.copy(self.model)
            model._modules = type(model._modules)(model._modules)  # its own module table, the same modules
            model._modules[self.synthesis_attribute] = capture
            view = self.__dict__["_entropy_view_cache"] = (model, capture)
        return view

    # Decode side only: hand out the padded image uncropped (set by lossyds eval's padded_output,
    # which reproduces a study whose task models saw the padded output); never changes a bitstream.
    output_padded: bool = False

    def decode_latent(self, data: bytes, meta: dict[str, Any]) -> Latent:
        """Bitstream -> Latent: parts [y_hat [1, M, Hp/16, Wp/16]], finish {height, width, channels}."""
        stream = lsyn.unpack(bytes(data))
        if stream.codec != self.name or stream.quality != self.params["quality"]:
            raise CodecError(
                f"bitstream is {stream.codec} quality {stream.quality}, not {self.name} quality {self.params['quality']}"
            )
        have = self.weights_info().sha256[:16]
        if stream.weights_prefix.hex() != have:
            raise WeightsError(
                f"{self.name}: this bitstream was made with weights {stream.weights_prefix.hex()}..., but the weights given are {have}...; decoding would be wrong."
            )
        model, capture = self._entropy_view()
        with torch.no_grad():
            self.decompress_tensor(model, stream.strings, stream.latent_shape)
        left, right, top, bottom = padding_box(stream.height, stream.width, self.params["padding"])
        finish = {"height": stream.height, "width": stream.width, "channels": stream.channels, "top": top, "left": left}
        if self.output_padded:  # the whole image the model coded, padding included
            finish.update(height=stream.height + top + bottom, width=stream.width + left + right, top=0, left=0)
        return Latent(self.name, [capture.take()], finish)

    latent_fields: ClassVar[tuple[str, ...]] = ("y_hat",)

    def latent_output(self, data: bytes, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"y_hat": float32 [C, Hp/16, Wp/16]}: the quantised latent the model's own
        `decompress` hands its synthesis network (of the padded image)."""
        return {"y_hat": self.decode_latent(data, meta).parts[0][0]}

    def synthesize(self, latents: list[Latent], device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Latents -> uint8 [C, H, W] images on `device`; latents of one shape run as one batch."""
        device = torch.device(device)
        synthesis, layout = self.synthesis_on(device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, latent in enumerate(latents):
            groups.setdefault(tuple(latent.parts[0].shape[1:]), []).append(index)
        images: list[torch.Tensor] = [torch.empty(0)] * len(latents)
        with torch.no_grad():
            for indices in groups.values():
                x_hat = synthesis(
                    to_device(torch.cat([latents[i].parts[0] for i in indices]), device).contiguous(
                        memory_format=layout
                    )
                )
                x_hat = (
                    x_hat.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
                )  # the whole batch: 4 kernels, not 4 per image
                for row, index in zip(x_hat, indices):
                    finish = latents[index].finish
                    top, left = finish.get("top", 0), finish.get("left", 0)
                    x = row[:, top : top + finish["height"], left : left + finish["width"]]
                    images[index] = rgb_to_gray(x) if finish["channels"] == 1 else x.contiguous()
        return images

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        return self.synthesize([self.decode_latent(data, meta)])[0]

    _layout_lock: ClassVar[threading.Lock] = threading.Lock()

    def synthesis_on(self, device: str | torch.device) -> tuple[torch.nn.Module, torch.memory_format]:
        """The synthesis network for `device` and the memory layout to feed it. On CPU, the
        model's own network, converted once to channels-last: oneDNN's convolutions are faster
        on it, and the synthesis is not part of entropy coding, so a rounding difference cannot
        derail decoding (benchmarks/neural_decode.py compares the two layouts; the tests bound
        the pixel difference). Other devices keep their NCHW copy."""
        device = torch.device(device)
        if device.type != "cpu":
            return self.module_on(device, self.synthesis_attribute), torch.contiguous_format
        module = getattr(self.model, self.synthesis_attribute)
        with self._layout_lock:
            if not self.__dict__.get("_synthesis_channels_last"):
                module.to(memory_format=torch.channels_last)
                self.__dict__["_synthesis_channels_last"] = True
        return module, torch.channels_last


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

    def compress_tensor(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[list[list[bytes]], list[int]]:
        out = model.compress(x)
        return out["strings"], list(out["shape"])

    def decompress_tensor(self, model: torch.nn.Module, strings: list[list[bytes]], shape: list[int]) -> None:
        model.decompress(strings, shape)


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
