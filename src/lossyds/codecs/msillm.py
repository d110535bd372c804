"""MS-ILLM (Muckley et al. 2023): the HiFiC generative autoencoder of Facebook's
`neuralcompression` package, with the MS-ILLM weights at six rates (quality 1..6 =
targets 0.035, 0.07, 0.14, 0.3, 0.45, 0.9 bpp; weights CC-BY-NC 4.0).

Its hyperprior strings (CompressAI entropy models) go into lossyds's `.lsyn` container
like the CompressAI codecs. `neuralcompression` pins scipy<=1.11.1 for parts lossyds does
not use, and no extra of lossyds installs it: `INSTALL` says how.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import UsageError
from .compressai_models import LearnedImageCodec

# `[neural]` brings what neuralcompression imports (fvcore, lpips, torchmetrics); the package
# itself goes in without its own requirements, which would downgrade scipy.
INSTALL = "pip install 'lossyds[neural]', then pip install --no-deps neuralcompression"

TARGETS = {
    1: "target_0.035bpp",
    2: "target_0.07bpp",
    3: "target_0.14bpp",
    4: "target_0.3bpp",
    5: "target_0.45bpp",
    6: "target_0.9bpp",
}


class MsIllmCodec(LearnedImageCodec):
    name = "msillm"
    library: ClassVar[str] = "neuralcompression"
    package = "neuralcompression"
    quality_range = (1, 6)
    synthesis_attribute: ClassVar[str] = "decoder"
    analysis_attribute: ClassVar[str] = "encoder"
    install_hint: ClassVar[str] = INSTALL

    def require_package(self) -> None:
        if not self.package_installed():
            raise UsageError(f"msillm needs the neuralcompression package, which no lossyds extra installs: {INSTALL}.")

    def new_model(self) -> torch.nn.Module:
        from neuralcompression.models import HiFiCAutoencoder

        return HiFiCAutoencoder()

    def model_from_state(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = self.new_model()
        model.load_state_dict(state)
        return model

    def pretrained_source(self) -> tuple[str, str | None]:
        filename = f"msillm_{TARGETS[self.params['quality']]}.ckpt"
        return filename, f"https://dl.fbaipublicfiles.com/NeuralCompression/2023-muckley-msillm/{filename}"

    def prepare(self, model: torch.nn.Module) -> None:
        model.update_tensor_devices("compress")  # builds the entropy-coder tables; likelihood layers on CPU

    def compress_tensor(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[list[list[bytes]], list[int]]:
        out = model.compress(x)
        return [list(out.latent_strings), list(out.hyper_latent_strings)], list(out.padded_size)

    def decompress_tensor(self, model: torch.nn.Module, strings: list[list[bytes]], shape: list[int]) -> None:
        from neuralcompression import HyperpriorCompressedOutput

        packed = HyperpriorCompressedOutput(
            latent_strings=strings[0],
            hyper_latent_strings=strings[1],
            image_size=tuple(shape),
            padded_size=tuple(shape),
        )
        model.decompress(packed)
