"""The self-describing bitstream file of lossyds's neural image codecs.

Layout (every integer an unsigned LEB128 varint unless noted):
    magic b"LSYN" | format version (1 byte) | codec id | quality | weights sha256 prefix (8 bytes)
    | height | width | channels | number of latent dims, dims...
    | number of string groups, then per group: number of strings, then per string: length, bytes

The payload bits of a sample are the size of this file: everything needed to decode
(given the weights the prefix names), nothing more. Readers raise CodecError on a wrong
magic, an unknown version, a truncated file, or lengths that run past the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CodecError

MAGIC = b"LSYN"
VERSION = 1
MAX_DIM = 1 << 20  # refuse absurd sizes from a damaged header before allocating anything

# Stable codec ids: append only.
CODEC_IDS = {
    "bmshj2018-factorized": 1,
    "bmshj2018-hyperprior": 2,
    "mbt2018-mean": 3,
    "mbt2018": 4,
    "cheng2020-anchor": 5,
    "msillm": 6,
}


@dataclass
class NeuralBitstream:
    codec: str
    quality: int
    weights_prefix: bytes  # first 8 bytes of the weights' sha256
    height: int
    width: int
    channels: int
    latent_shape: list[int]
    strings: list[list[bytes]]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.position + count > len(self.data):
            raise CodecError(
                f"neural bitstream is truncated (needs {count} bytes at offset {self.position} of {len(self.data)})"
            )
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def varint(self, limit: int = 1 << 32) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise CodecError("neural bitstream holds an over-long integer")
        if value > limit:
            raise CodecError(f"neural bitstream holds an out-of-range value {value} (limit {limit})")
        return value


def pack(stream: NeuralBitstream) -> bytes:
    out = bytearray(MAGIC)
    out.append(VERSION)
    out += _varint(CODEC_IDS[stream.codec]) + _varint(stream.quality)
    if len(stream.weights_prefix) != 8:
        raise ValueError("weights prefix must be 8 bytes")
    out += stream.weights_prefix
    out += _varint(stream.height) + _varint(stream.width) + _varint(stream.channels)
    out += _varint(len(stream.latent_shape)) + b"".join(_varint(d) for d in stream.latent_shape)
    out += _varint(len(stream.strings))
    for group in stream.strings:
        out += _varint(len(group))
        for string in group:
            out += _varint(len(string)) + string
    return bytes(out)


def unpack(data: bytes) -> NeuralBitstream:
    if data[:4] != MAGIC:
        raise CodecError(f"not a lossyds neural bitstream (magic {data[:4]!r}, expected {MAGIC!r})")
    reader = _Reader(data)
    reader.take(4)
    version = reader.take(1)[0]
    if version != VERSION:
        raise CodecError(f"neural bitstream format version {version} is not supported (this lossyds reads {VERSION})")
    codec_id = reader.varint(255)
    names = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in names:
        raise CodecError(f"neural bitstream names unknown codec id {codec_id}")
    quality = reader.varint(255)
    prefix = reader.take(8)
    height, width, channels = reader.varint(MAX_DIM), reader.varint(MAX_DIM), reader.varint(4)
    latent = [reader.varint(MAX_DIM) for _ in range(reader.varint(8))]
    groups = []
    for _ in range(reader.varint(16)):
        groups.append([reader.take(reader.varint(len(data))) for _ in range(reader.varint(64))])
    if reader.position != len(data):
        raise CodecError(f"neural bitstream has {len(data) - reader.position} unexpected trailing bytes")
    return NeuralBitstream(names[codec_id], quality, prefix, height, width, channels, latent, groups)
