"""The loader's decode stage: sample records -> codec -> sample dicts.

`Decoder.decode` turns a chunk of (shard, entry) references into sample dicts: the record's
metadata and payload checked (lossyds.record), the bitstreams decoded together (the
codec's `decode_many`), targets and attachments placed. With a decode cache, decoded
samples are kept losslessly and served again; with a decode device, the bitstream is
only entropy-decoded here (a Latent) and `finish` runs the synthesis on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import record
from ..codecs import Codec
from ..codecs._pillow import decoder_messages
from ..codecs.base import Latent
from ..errors import CodecError, LossydsError, ShardError, reason_text
from ..sources.base import libsndfile_reason
from .reader import Reference

DECODE_ERRORS = (LossydsError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, OSError)


_TEMPORARY_PATH = re.compile(rf"(?:/dev/shm|{re.escape(tempfile.gettempdir())})/\S+")


def undecodable(shard_name: str, key: str, exc: BaseException) -> ShardError:
    """The ShardError naming shard and sample for a decode failure (`exc` kept as its cause), in
    one sentence: the decoder's reason without object addresses or the names of temporary
    files (which are gone by the time anyone reads the message)."""
    reason = _TEMPORARY_PATH.sub("the bitstream", reason_text(exc))
    reason = "; ".join(line.strip() for line in reason.splitlines() if line.strip()).rstrip(".") or type(exc).__name__
    error = ShardError(f"shard {shard_name}: sample {key!r} cannot be decoded: {reason}", shard=shard_name, key=key)
    error.__cause__ = exc
    return error


def cache_folder(base: str | Path, manifest: dict[str, Any]) -> Path:
    """One folder per (dataset fingerprint, codec settings, weights, shards): a cache never serves another build."""
    identity = json.dumps(
        [
            manifest["dataset"].get("source_root_fingerprint"),
            manifest["codec"],
            [s["sha256"] for s in manifest["shards"]],
        ],
        sort_keys=True,
    )
    folder = Path(base) / hashlib.sha256(identity.encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Decoder:
    """Decodes records of one build with its codec (see module docstring)."""

    def __init__(
        self, codec: Codec, modality: str, cache: Path | None, device: torch.device | None, output: str = "decoded"
    ):
        self.codec = codec
        self.modality = modality
        self.cache = cache
        self.device = device
        self.output = output  # "decoded", or "latent": the codec's latent_output, no synthesis

    def decode(self, references: list[Reference]) -> list[dict[str, Any] | ShardError]:
        """One sample dict or ShardError per reference, in order. The bitstreams go to the
        codec's `decode_many` together (one GIL release for the whole chunk where the codec
        has a native batch path); with a cache or device, each goes on its own."""
        one_by_one = self.cache is not None or self.device is not None or self.output == "latent"
        stored_records: list[record.StoredRecord | ShardError] = []
        bitstreams: list[tuple[bytes, dict[str, Any]]] = []
        decoded: list[Any] = []
        for shard, entry in references:
            try:
                stored = record.read(shard, entry, self.codec.extension)
                if one_by_one:
                    try:
                        decoded.append(self.decode_one(stored))
                    except Exception as exc:  # named below, with the sample, like decode_many's
                        decoded.append(exc)
                else:
                    bitstreams.append((stored.read(self.codec.extension), stored.meta))
                stored_records.append(stored)
            except ShardError as exc:
                stored_records.append(exc)
            except DECODE_ERRORS as exc:
                stored_records.append(undecodable(shard.name, entry.key, exc))
        values = iter(decoded if one_by_one else self.codec.decode_many(bitstreams))
        results: list[dict[str, Any] | ShardError] = []
        for stored in stored_records:
            if isinstance(stored, ShardError):
                results.append(stored)
                continue
            value = next(values)
            try:
                if isinstance(value, BaseException):
                    raise value
                results.append(self.sample(stored, value))
            except ShardError as exc:
                results.append(exc)
            except DECODE_ERRORS as exc:
                results.append(undecodable(stored.shard.name, stored.key, exc))
        return results

    def decode_one(self, stored: record.StoredRecord) -> torch.Tensor | Latent:
        """The codec's decode (its entropy stage only, with a device), or its result from the
        decode cache (lossless .npy files, written atomically)."""
        codec = self.codec
        if self.output == "latent":
            return self.latent(stored)  # type: ignore[return-value]
        if self.device is not None:
            return codec.decode_latent(stored.read(codec.extension), stored.meta)
        if self.cache is None:
            return codec.decode(stored.read(codec.extension), stored.meta)
        path = self.cache / f"{stored.key}.npy"
        if path.is_file():
            try:
                return torch.from_numpy(np.load(path, allow_pickle=False))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a damaged cache entry is decoded again
        value = codec.decode(stored.read(codec.extension), stored.meta)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, value.numpy(), allow_pickle=False)
        os.replace(partial, path)
        return value

    def latent(self, stored: record.StoredRecord) -> Any:
        """The codec's latent_output; a failure carries what the native reader printed (jpeglib's
        libjpeg prints its reason and raises an error naming only its temporary file)."""
        bitstream = stored.read(self.codec.extension)
        with decoder_messages() as printed:
            try:
                return self.codec.latent_output(bitstream, stored.meta)
            except LossydsError:
                raise
            except DECODE_ERRORS as exc:
                failure = exc
        if not printed:
            raise failure
        reason = "; ".join(line.rstrip(".") for line in printed)
        raise CodecError(f"{self.codec.name} decoder: {reason}") from failure

    def sample(self, stored: record.StoredRecord, decoded: Any) -> dict[str, Any]:
        """The sample dict around a decoded payload: targets, attachments, encoded extras."""
        meta = stored.meta
        sample: dict[str, Any] = {"key": stored.key, "payload_bits": meta["payload_bits"]}
        if self.modality == "image":
            sample["latent" if self.output == "latent" else "image"] = decoded
            sample["pixels"] = meta["height"] * meta["width"]
        else:
            sample["latent" if self.output == "latent" else "audio"] = decoded
            sample["sample_rate"] = meta["sample_rate"]
            sample["num_frames"] = meta["num_frames"]
        sample.update(meta.get("targets", {}))
        for member in stored.attachments(self.codec.extension):
            data = stored.read(member)
            if member not in stored.payload_members:
                value = decoded_attachment(member, data)
            elif self.output == "latent":
                value = self.codec.latent_output(data, meta)
            elif self.device is not None:  # a codec-encoded extra (e.g. a separation stem)
                value = self.codec.decode_latent(data, meta)
            else:
                value = self.codec.decode(data, meta)
            record.place_attachment(sample, member, value)
        return sample


def decoded_attachment(member: str, data: bytes) -> Any:
    """record.decode_attachment, with the reason a lossless member (a mask PNG, a FLAC stem) fails
    to decode in one sentence: what libpng printed, or libsndfile's own words."""
    with decoder_messages() as printed:
        try:
            return record.decode_attachment(member, data)
        except DECODE_ERRORS as exc:
            failure = exc
    reasons = dict.fromkeys([*printed, libsndfile_reason(failure)])
    raise CodecError(f".{member} member does not decode: {'; '.join(reasons)}") from failure


def find_latents(node: Any, found: list[tuple[dict[str, Any], str, Latent]]) -> None:
    """Append (holding dict, key, latent) for every Latent in a sample dict, nested dicts included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, Latent):
                found.append((node, key, value))
            elif isinstance(value, dict):
                find_latents(value, found)
