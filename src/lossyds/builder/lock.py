"""One writer per output folder: an exclusive lock held for the whole build (or merge).

The lock is `fcntl.flock` on OUT/.lossyds-lock, a file holding the holder's pid, host,
command and start time, so a second build into the same folder refuses at once in one
sentence naming the first instead of interleaving shards with it. The kernel releases a
flock when its process dies, so a killed build never leaves a stale lock. The file is
removed when the holder finishes; a process that locked a file that was removed meanwhile
notices (the path no longer names the file it holds) and takes the new one instead.

flock is advisory and local: two hosts writing one network folder are not kept apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import BuildLockedError, LossydsError

LOCK_NAME = ".lossyds-lock"


def is_lock_record(data: bytes) -> bool:
    """Whether `data` is what `hold_folder` writes into a lock file."""
    try:
        record = json.loads(data)
    except ValueError:
        return False
    return isinstance(record, dict) and set(record) == {"pid", "host", "command", "started"}


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return (
            f"pid {holder['pid']} on {holder['host']}, a {holder['command']} started {holder['started']}"
            if isinstance(holder, dict)
            else "unknown"
        )
    except (OSError, ValueError, KeyError):
        return "pid unknown"


@contextlib.contextmanager
def hold_folder(out: Path, command: str) -> Iterator[None]:
    """Hold OUT's lock while the block runs (OUT must exist); raises BuildLockedError naming the holder when another process has it."""
    path = Path(out) / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LossydsError(f"cannot write to {out} (its lock file): {exc.strerror or exc}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BuildLockedError(
                f"another lossyds process ({_holder_text(path)}) is writing to {out}; "
                "wait for it to finish (or stop it) and run this again."
            ) from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder before us removed the file we locked: lock the new one
    try:
        record = {
            "pid": os.getpid(),
            "host": platform.node(),
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it: a waiter that locked this inode sees it gone
        os.close(fd)
