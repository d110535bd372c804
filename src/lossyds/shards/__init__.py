"""Tar shards: keys, extensions and bytes only.

Shards follow the WebDataset conventions: one sample = consecutive members sharing a
key (`KEY.jpg`, `KEY.json`, `KEY.cls`, ...). What the members mean is lossyds.record's
business; where shards live and what they are called, lossyds.manifest's.

- writer: the deterministic, atomic shard writer (`ShardWriter`).
- tar: the tar member scanner and sample index (`scan_tar`, `index_tar`, `SampleEntry`).
- stream: stream decompression of `.tar.gz` / `.tar.zst` shards, keeping what precedes damage.
- mapped: a shard opened for reading from a local path or a URL (`MappedShard`).
"""
