"""EnCodec (Défossez et al. 2022): `encodec` at 24 kHz mono (1.5, 3, 6, 12, 24 kbps) and
`encodec-48khz` stereo (3, 6, 12, 24 kbps).

Bitstreams are `.ecdc` files in the encodec package's own format (its `compress`
writes them), so `encodec.compress.decompress` reads them given the same weights.
Audio is resampled to the model rate with libsoxr; channels are mixed down (24 kHz model)
or duplicated (48 kHz model on mono); decoded audio comes back at the source rate,
channel count and exact length. lossyds reads the files itself (lossyds.codecs.ecdc) and
runs the model's decoder, so it never asks encodec to fetch weights.

`--entropy-lm` codes the codes with EnCodec's small transformer LM and its arithmetic
coder (encodec's own `compress`, so its `decompress` reads the files). The LM's weights
follow the codec's: `random:SEED` gives a random LM with that seed (test weights, labelled);
otherwise the pretrained LM checkpoint is looked up like any pretrained weights. Its
fingerprint is recorded and checked beside the model's.

Two-stage decode (`decode_latent` on CPU, `synthesize` batched on any device): reading
the codes is the whole entropy stage (bit-unpacking, or the LM's arithmetic decoding,
which runs step by step on CPU), so without the LM the decoder network is the cost. The
24 kHz model is causal, so shorter code sequences are right-padded to batch with longer
ones without changing their output; the 48 kHz model's 1 s segments batch with segments
of the same length.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import CodecError
from ..options import Option
from ..types import SourceSample
from ..weights import WeightsError, WeightsInfo, parse_spec
from . import ecdc
from ._audio import fit_length, resample
from ._neural import WEIGHTS_OPTION, NeuralModelMixin, resolve_weights, shape_groups, without_tf32
from .base import AudioCodec, Latent


class EncodecCodec(NeuralModelMixin, AudioCodec):
    library: ClassVar[str] = "encodec"
    extension: ClassVar[str] = "ecdc"
    model_name: ClassVar[str]  # encodec's own name, written in the .ecdc header
    checkpoint: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = (
        WEIGHTS_OPTION,
        Option(
            "entropy_lm",
            bool,
            "EnCodec: entropy-code the codes with its LM (random:SEED weights give a random LM).",
            default=False,
        ),
    )
    causal: ClassVar[bool]  # the model's output at step t depends on codes up to t only
    lm_checkpoint: ClassVar[str]  # encodec's pretrained entropy-LM file
    _lm: torch.nn.Module | None = None
    _lm_info: WeightsInfo | None = None
    batched_synthesis: ClassVar[bool] = True

    package = "encodec"

    def __init__(self, **settings: Any):
        self.require_package()
        super().__init__(**settings)

    @classmethod
    def library_version(cls) -> str:
        from importlib.metadata import version

        return version("encodec")

    def _constructor(self):
        from encodec import EncodecModel

        return (
            EncodecModel.encodec_model_24khz if self.model_name == "encodec_24khz" else EncodecModel.encodec_model_48khz
        )

    def new_model(self) -> torch.nn.Module:
        model = self._constructor()(pretrained=False)
        model.name = self.model_name  # encodec names only its pretrained models; the .ecdc header needs the name
        return model

    def model_from_state(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = self.new_model()
        model.load_state_dict(state)
        return model

    def pretrained_source(self) -> tuple[str, str | None]:
        return self.checkpoint, f"https://dl.fbaipublicfiles.com/encodec/v0/{self.checkpoint}"

    def prepare(self, model: torch.nn.Module) -> None:
        model.set_target_bandwidth(self.params["kbps"])

    def manifest_entry(self) -> dict[str, Any]:
        entry = super().manifest_entry()
        entry["weights"] = self.weights_info().to_manifest()
        if self.params["entropy_lm"]:
            entry["weights"]["lm"] = self.lm_info().to_manifest()
            entry["decode_portability"] = (
                "entropy-LM arithmetic decoding on CPU float32 only (the LM's probabilities must match the encoder's bit for bit); "
                "the decoder network may run on any device (decode_device)"
            )
        else:
            entry["decode_portability"] = (
                "codes are bit-packed: decodable anywhere; the decoder network may run on any device (decode_device)"
            )
        entry["model_sample_rate"] = self.model.sample_rate
        return entry

    # -- entropy LM ------------------------------------------------------------------------

    def _load_lm(self) -> None:
        from encodec.model import LMModel

        model = self.model

        def new_lm() -> torch.nn.Module:  # encodec's get_lm_model architecture
            return LMModel(
                model.quantizer.n_q,
                model.quantizer.bins,
                num_layers=5,
                dim=200,
                past_context=int(3.5 * model.frame_rate),
            )

        def lm_from_state(state: dict[str, torch.Tensor]) -> torch.nn.Module:
            lm = new_lm()
            lm.load_state_dict(state)
            return lm

        kind, value = parse_spec(self.params.get("weights"))
        kind = (
            "random" if kind == "random" else "pretrained"
        )  # with a model checkpoint file, the LM is still encodec's pretrained one
        url = f"https://dl.fbaipublicfiles.com/encodec/v0/{self.lm_checkpoint}"
        self._lm, self._lm_info = resolve_weights(
            kind, value, new_lm, lm_from_state, lambda: (self.lm_checkpoint, url), f"{self.name}'s entropy LM"
        )

    @property
    def lm(self) -> torch.nn.Module:
        """EnCodec's entropy LM (built on first use, see module docstring)."""
        if self._lm is None:
            self._load_lm()
        assert self._lm is not None
        return self._lm

    def lm_info(self) -> WeightsInfo:
        if self._lm_info is None:
            self._load_lm()
        assert self._lm_info is not None
        return self._lm_info

    def check_weights(self, recorded: dict[str, Any]) -> None:
        """The model's weights, and the entropy LM's when the dataset recorded one."""
        super().check_weights(recorded)
        expected_lm_sha256 = (recorded.get("lm") or {}).get("sha256")
        if expected_lm_sha256 is not None and self.lm_info().sha256 != expected_lm_sha256:
            raise WeightsError(
                f"{self.name}: the dataset's entropy LM has weights sha256 {expected_lm_sha256[:16]}..., but the LM given ({self.lm_info().name}) is {self.lm_info().sha256[:16]}...; pass the weights it was built with."
            )

    def _to_model(self, audio: np.ndarray, rate: int) -> torch.Tensor:
        channels = self.model.channels
        if audio.shape[0] != channels:
            audio = (
                audio.mean(axis=0, keepdims=True)
                if channels == 1
                else np.repeat(audio[:1], channels, axis=0)
                if audio.shape[0] == 1
                else None
            )
            if audio is None:
                raise CodecError(f"{self.name} takes mono or stereo audio")
        return torch.from_numpy(
            np.ascontiguousarray(resample(np.asarray(audio, np.float32), rate, self.model.sample_rate))
        )

    def encode(self, sample: SourceSample) -> bytes:
        return self.encode_batch_samples([sample])[0]

    def analysis_input(self, sample: SourceSample) -> torch.Tensor:
        """float32 [model channels, frames at the model rate]: the audio as encodec's compress gets it."""
        if sample.audio is None or sample.sample_rate is None:
            raise CodecError(f"{self.name} encodes audio; sample {sample.key!r} has none")
        return self._to_model(sample.audio, sample.sample_rate)

    def analyse(self, inputs: list[torch.Tensor], device: str | torch.device = "cpu") -> list[EncodecAnalysis]:
        """Each input's frames as the model's own `encode` makes them: the input cut into the
        model's segments (the 48 kHz model's 1 s segments; one segment for the 24 kHz model),
        each normalised and run through the encoder and quantizer (encodec's `_encode_frame`).
        Segments of one length, of any inputs, run through the encoder and quantizer as one
        batch on `device`. Each segment's scale (the 48 kHz model normalises) is computed on
        CPU from the segment itself, as `_encode_frame` computes it: it is written into the
        file as float32, and a batched or contiguous copy would sum in another order. Segments
        are never padded to batch with longer ones: encodec's convolutions reflect-pad at the
        end, so padding changes the last codes (tests/test_batched_encode.py shows it)."""
        model = self.module_on(device)
        segments: list[torch.Tensor] = []  # normalised segments [channels, frames]
        scales: list[torch.Tensor | None] = []
        owners: list[int] = []
        for index, audio in enumerate(inputs):
            length = audio.shape[-1]
            segment = model.segment_length or length
            for offset in range(0, length, model.segment_stride or length):
                frame = audio[None, :, offset : offset + segment]  # as encodec's `encode` slices it
                scale = None
                if model.normalize:
                    volume = frame.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
                    scale = 1e-8 + volume
                    frame = frame / scale
                    scale = scale.view(-1, 1)
                segments.append(frame[0])
                scales.append(scale)
                owners.append(index)
        frames: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = [[] for _ in inputs]
        codes: list[torch.Tensor] = [torch.empty(0)] * len(segments)
        with torch.no_grad(), without_tf32():
            for indexes in shape_groups(segments):
                embedding = model.encoder(torch.stack([segments[i] for i in indexes]).to(device))
                batch = model.quantizer.encode(embedding, model.frame_rate, model.bandwidth).transpose(0, 1).cpu()
                for row, index in enumerate(indexes):
                    codes[index] = batch[row : row + 1].clone()
        for index, code, scale in zip(owners, codes, scales):  # segments are in order within each input
            frames[index].append((code, scale))
        return [EncodecAnalysis(frames[i], inputs[i].shape[-1]) for i in range(len(inputs))]

    def entropy_code(self, sample: SourceSample, analysis: EncodecAnalysis) -> bytes:
        """The `.ecdc` file from one input's frames: encodec's own compress writes it on CPU
        (bit-packing, or the LM's arithmetic coding), its `encode` standing in with the frames."""
        from encodec.compress import compress

        model = copy.copy(self.model)  # a view: the same modules, its own attributes
        model.encode = _GivenFrames(analysis.frames)
        if self.params["entropy_lm"]:
            # encodec's compress asks the model for its LM (a download); give it ours, whose
            # weights follow lossyds's rules. A picklable callable, not a lambda.
            model.get_lm_model = _GivenLM(self.lm)
        placeholder = torch.zeros(()).expand(self.model.channels, analysis.length)  # its length is written
        return compress(model, placeholder, use_lm=self.params["entropy_lm"])

    def read_frames(self, data: bytes) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], int]:
        """.ecdc bytes -> (frames as (codes [1, codebooks, steps] int64, scale [1] or None), length in model-rate frames)."""
        reader = ecdc.EcdcReader(data)
        header = reader.header
        if header.model != self.model_name:
            raise CodecError(f".ecdc bitstream is for model {header.model!r}, not {self.model_name!r}")
        if header.use_lm and not self.params["entropy_lm"]:
            raise CodecError(
                f"{self.name}: this bitstream is coded with the entropy LM but the codec was set up without it"
            )
        length, codebooks = header.length, header.codebooks
        model = self.model
        segment = model.segment_length or length
        stride = model.segment_stride or length
        frames = []
        for offset in range(0, length, stride):
            steps = int(math.ceil(min(length - offset, segment) / model.sample_rate * model.frame_rate))
            scale = torch.tensor(reader.scale()).view(1) if model.normalize else None
            if header.use_lm:
                codes = self._pull_lm_codes(reader.handle, steps, codebooks)
            else:
                packed = reader.packed_codes(model.bits_per_codebook, steps, codebooks)
                codes = torch.from_numpy(packed).T[None]
            frames.append((codes, scale))
        return frames, length

    def _pull_lm_codes(self, handle: io.BytesIO, steps: int, codebooks: int) -> torch.Tensor:
        """Arithmetic-coded codes -> [1, codebooks, steps] int64, step by step as encodec's
        decompress does (it would load its own pretrained LM, so lossyds drives the loop)."""
        from encodec.quantization.ac import ArithmeticDecoder, build_stable_quantized_cdf

        decoder = ArithmeticDecoder(handle)
        states, offset = None, 0
        codes = torch.zeros(1, codebooks, steps, dtype=torch.long)
        previous = torch.zeros(1, codebooks, 1, dtype=torch.long)
        with torch.no_grad():
            for step in range(steps):
                probabilities, states, offset = self.lm(previous, states, offset)
                for book in range(codebooks):
                    code = decoder.pull(
                        build_stable_quantized_cdf(probabilities[0, :, book, 0], decoder.total_range_bits, check=False)
                    )
                    if code is None:
                        raise CodecError(".ecdc bitstream ended sooner than expected")
                    codes[0, book, step] = code
                previous = 1 + codes[:, :, step : step + 1]
        return codes

    def decode_codes(self, data: bytes) -> torch.Tensor:
        """.ecdc bytes (bit-packed or LM-coded) -> waveform [channels, frames] at the model
        rate, through the model's own `decode`: equal to what encodec's `decompress` returns."""
        frames, length = self.read_frames(data)
        with torch.no_grad():
            return self.model.decode(frames)[0, :, :length]

    def _to_source(self, audio: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
        """Model-rate float32 [C', T'] -> the source's channels, rate and exact length (CPU)."""
        audio_np = audio.cpu().numpy()
        channels = int(meta.get("channels", audio_np.shape[0]))
        if audio_np.shape[0] != channels:
            audio_np = (
                np.repeat(audio_np, channels, axis=0)
                if audio_np.shape[0] == 1
                else audio_np.mean(axis=0, keepdims=True)
            )
        audio_np = resample(
            np.ascontiguousarray(audio_np, dtype=np.float32), self.model.sample_rate, int(meta["sample_rate"])
        )
        return torch.from_numpy(np.ascontiguousarray(fit_length(audio_np, int(meta["num_frames"]))))

    def decode(self, data: bytes, meta: dict[str, Any]) -> torch.Tensor:
        return self._to_source(self.decode_codes(bytes(data)), meta)

    def decode_latent(self, data: bytes, meta: dict[str, Any]) -> Latent:
        """Bitstream -> Latent: parts are read_frames' frames; finish holds length and the source's grid."""
        frames, length = self.read_frames(bytes(data))
        finish = {"length": length, "sample_rate": int(meta["sample_rate"]), "num_frames": int(meta["num_frames"])}
        if "channels" in meta:
            finish["channels"] = int(meta["channels"])
        return Latent(self.name, frames, finish)

    latent_fields: ClassVar[tuple[str, ...]] = ("codes", "segment_frames", "scales")

    def latent_output(self, data: bytes, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The .ecdc file's codes, as encodec's own reader recovers them: `codes` int64
        [codebooks, frames] (every segment's frames in order), `segment_frames` int64
        [segments] (frames per segment: one segment for the 24 kHz model, 1 s segments with
        overlap for the 48 kHz one), `scales` float32 [segments] (the 48 kHz model's
        per-segment scales; empty for 24 kHz)."""
        frames, _length = self.read_frames(bytes(data))
        scales = [scale for _, scale in frames if scale is not None]
        return {
            "codes": torch.cat([codes[0] for codes, _ in frames], dim=-1),
            "segment_frames": torch.tensor([codes.shape[-1] for codes, _ in frames], dtype=torch.int64),
            "scales": torch.cat(scales).float() if scales else torch.zeros(0),
        }

    def synthesize(self, latents: list[Latent], device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """Latents -> float32 [channels, frames] at the source rate and length, on `device`.

        Every frame of every latent goes through the decoder in batches on `device`; the
        overlap-add of segments and resampling to the source rate (libsoxr) run on CPU, as
        in `decode`, and the result moves to `device`."""
        from encodec.utils import _linear_overlap_add  # encodec's own overlap-add of segments, as its decode uses

        model = self.module_on(device)
        jobs = [
            (index, position, codes, scale)
            for index, latent in enumerate(latents)
            for position, (codes, scale) in enumerate(latent.parts)
        ]
        groups: dict[int, list[tuple[int, int, torch.Tensor, torch.Tensor | None]]] = {}
        for job in jobs:
            groups.setdefault(0 if self.causal else job[2].shape[-1], []).append(job)
        decoded: dict[tuple[int, int], torch.Tensor] = {}
        with torch.no_grad():
            for group in groups.values():
                longest = max(codes.shape[-1] for _, _, codes, _ in group)
                codes = torch.cat([torch.nn.functional.pad(c, (0, longest - c.shape[-1])) for _, _, c, _ in group]).to(
                    device
                )
                out = model.decoder(model.quantizer.decode(codes.transpose(0, 1)))
                if group[0][3] is not None:
                    out = out * torch.cat([s for _, _, _, s in group]).to(device).view(-1, 1, 1)
                hop = out.shape[-1] // longest
                out = out.cpu()  # one transfer per group: overlap-add and resampling run on CPU
                for row, (index, position, c, _) in enumerate(group):
                    decoded[(index, position)] = out[row : row + 1, :, : c.shape[-1] * hop]
        results = []
        for index, latent in enumerate(latents):
            frames = [decoded[(index, position)] for position in range(len(latent.parts))]
            wave = frames[0] if len(frames) == 1 else _linear_overlap_add(frames, model.segment_stride or 1)
            results.append(self._to_source(wave[0, :, : latent.finish["length"]], latent.finish).to(device))
        return results


@dataclass
class EncodecAnalysis:
    """One input's analysis: frames as the model's `encode` returns them, (codes int64
    [1, codebooks, steps], scale float32 [1, 1] or None) per segment, and its length in
    model-rate frames."""

    frames: list[tuple[torch.Tensor, torch.Tensor | None]]
    length: int


class _GivenFrames:
    """Stands in for EncodecModel.encode inside encodec's compress: returns the frames `analyse` made."""

    def __init__(self, frames: list[tuple[torch.Tensor, torch.Tensor | None]]):
        self.frames = frames

    def __call__(self, _audio: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.frames


class _GivenLM:
    """Stands in for EncodecModel.get_lm_model: returns the LM lossyds resolved."""

    def __init__(self, lm: torch.nn.Module):
        self.lm = lm

    def __call__(self) -> torch.nn.Module:
        return self.lm


class Encodec24Codec(EncodecCodec):
    name = "encodec"
    model_name = "encodec_24khz"
    causal = True
    kbps_choices = (1.5, 3.0, 6.0, 12.0, 24.0)
    checkpoint = "encodec_24khz-d7cc33bc.th"
    lm_checkpoint = "encodec_lm_24khz-1608e3c0.th"


class Encodec48Codec(EncodecCodec):
    name = "encodec-48khz"
    model_name = "encodec_48khz"
    causal = False
    kbps_choices = (3.0, 6.0, 12.0, 24.0)
    checkpoint = "encodec_48khz-7e698e3e.th"
    lm_checkpoint = "encodec_lm_48khz-7add9fc3.th"
