"""JPEG (libjpeg-turbo through Pillow); decoded with torchvision.io.decode_jpeg."""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import UsageError
from ..options import Option
from ._pillow import PillowImageCodec

# jpeglib reads a JPEG only from a file path, so the bitstream goes through a temporary file,
# in memory where /dev/shm exists.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


class JpegCodec(PillowImageCodec):
    name = "jpeg"
    extension = "jpg"
    pil_format = "JPEG"
    torchvision_function = "decode_jpeg"
    quality_range = (1, 100)
    chroma_options = ("subsampling",)
    options = (
        Option(
            "optimize",
            bool,
            "JPEG: optimal Huffman tables (smaller files, same pixels; baseline, not progressive).",
            default=True,
        ),
        Option(
            "subsampling", str, "JPEG/AVIF chroma subsampling.", default="4:2:0", choices=("4:4:4", "4:2:2", "4:2:0")
        ),
    )

    # output="latent": the quantised DCT coefficients and quantisation tables, per component.
    latent_fields: ClassVar[tuple[str, ...]] = ("dct_y", "qt_y", "dct_cb", "qt_cb", "dct_cr", "qt_cr")

    def latent_output(self, data: bytes, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{"dct_y": int16 [blocks down, blocks across, 8, 8] (the quantised coefficients of each
        8x8 block, row-major frequencies), "qt_y": int32 [8, 8] (the table they were quantised
        with: coefficient x table = DCT value)}, and the same for "cb" and "cr" (at their
        subsampled block grid) unless the image is gray; read by libjpeg through jpeglib."""
        try:
            import jpeglib
        except ImportError:
            raise UsageError(
                "output='latent' for JPEG reads the DCT coefficients with jpeglib, which is not installed: "
                "pip install 'lossyds[dct]' (or jpeglib)."
            ) from None
        with tempfile.NamedTemporaryFile(suffix=".jpg", dir=_SCRATCH) as handle:
            handle.write(data)
            handle.flush()
            jpeg = jpeglib.read_dct(handle.name)
            jpeg.load()
        components = [("y", jpeg.Y)] + ([("cb", jpeg.Cb), ("cr", jpeg.Cr)] if jpeg.has_chrominance else [])
        out = {}
        for index, (name, coefficients) in enumerate(components):
            out[f"dct_{name}"] = torch.from_numpy(np.ascontiguousarray(coefficients, dtype=np.int16))
            table = jpeg.qt[int(jpeg.quant_tbl_no[index])]
            out[f"qt_{name}"] = torch.from_numpy(table.astype(np.int32))
        return out
