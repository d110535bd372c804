"""Which samples each reader takes: contiguous, equal (+-1) ranges, one per (DDP rank x DataLoader
worker), over the shards in order (shuffled per epoch when asked), so every sample is read
exactly once per epoch, whatever the number of shards."""

from __future__ import annotations

import os
import random
from typing import Any

import torch

from ..errors import UsageError


def process_group_rank() -> tuple[int | None, int | None]:
    """(rank, world size) of an initialised torch.distributed process group, else (None, None).
    Captured when a dataset is created, in the rank's own process: DataLoader workers do not
    see the process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None, None


def rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): given explicitly, else the process group's now, else torchrun's
    RANK / WORLD_SIZE environment variables, else (0, 1)."""
    if rank is not None or world_size is not None:
        rank, world = rank or 0, world_size or 1
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    else:
        rank, world = 0, 1
    if not 0 <= rank < world:
        raise UsageError(f"rank {rank} is outside world size {world}.")
    return rank, world


def shard_order(num_shards: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """Shard indices in reading order: the same seed and epoch give the same order on every rank."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def ranges(shards: list[dict[str, Any]], order: list[int], part: int, parts: int) -> list[tuple[int, int, int]]:
    """(shard index, first sample, end sample) ranges of global part `part` of `parts`."""
    total = sum(shard["num_samples"] for shard in shards)
    start, stop = part * total // parts, (part + 1) * total // parts
    found, position = [], 0
    for shard_index in order:
        count = shards[shard_index]["num_samples"]
        low, high = max(start, position), min(stop, position + count)
        if low < high:
            found.append((shard_index, low - position, high - position))
        position += count
    return found


def part_size(total: int, part: int, parts: int) -> int:
    return (part + 1) * total // parts - part * total // parts
