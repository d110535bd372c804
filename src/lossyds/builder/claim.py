"""A build's claim on an object-storage URL, so that two builds into one URL never both succeed.

Object stores have no lock that fsspec can take, and builds into one URL may run on different
hosts (or on one host with different staging folders, as two SLURM jobs do). So the claim is an
object in the URL's folder (CLAIM_NAME), created with a conditional put (S3's If-None-Match:
*): of two builds, only one can create it; the other refuses in one sentence naming the holder.
The holder renews the claim's time stamp every quarter of its lease while it runs, checks that
the claim is still its own before every upload, and removes it when it stops.

A claim is stale, and a new build takes it over, when its holder ran on this host and its
process is gone (a killed build, rerun to resume it), or when it was not renewed within its
lease (LOSSYDS_CLAIM_LEASE seconds, default 120), as after a host died. Clocks of the hosts
must agree to well within the lease. A build whose claim was taken over stops at its next
upload; a build paused for longer than its lease (a suspended process) can be taken over that way.
On stores without conditional puts (fsspec's generic check-then-write), two builds started at
the same instant can both create the claim; the one whose claim is overwritten stops at its next
upload, but the guarantee is S3's.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import threading
import time
from typing import Any, Protocol

from ..errors import BuildLockedError

CLAIM_NAME = ".lossyds-claim"


class _ClaimFolder(Protocol):
    label: str

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...

    def remove(self, name: str) -> None: ...

    def create_exclusive(self, name: str, data: bytes) -> bool: ...


def lease_seconds() -> float:
    return float(os.environ.get("LOSSYDS_CLAIM_LEASE") or 120)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _parse(data: bytes | None) -> dict[str, Any] | None:
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    keys = {"token", "host", "pid", "command", "started", "renewed", "lease"}
    return record if isinstance(record, dict) and keys <= set(record) else None


def is_stale(record: dict[str, Any] | None) -> bool:
    """Whether nobody holds this claim any more (see the module's docstring). An unreadable claim is stale."""
    if record is None:
        return True
    if record["host"] == platform.node() and isinstance(record["pid"], int) and not _process_alive(record["pid"]):
        return True
    return time.time() - float(record["renewed"]) > float(record["lease"])


class BuildClaim:
    """`with BuildClaim(folder, "build"):` holds the claim on `folder` for the block."""

    def __init__(self, folder: _ClaimFolder, command: str):
        self.folder = folder
        self.command = command
        self.token = secrets.token_hex(16)
        self.lease = lease_seconds()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        record = {
            "token": self.token,
            "host": platform.node(),
            "pid": os.getpid(),
            "command": self.command,
            "started": self.started,
            "renewed": time.time(),
            "lease": self.lease,
        }
        return json.dumps(record).encode()

    def __enter__(self) -> BuildClaim:
        for _ in range(3):
            if self.folder.create_exclusive(CLAIM_NAME, self._record()):
                self._renewer = threading.Thread(target=self._renew, name="lossyds-claim", daemon=True)
                self._renewer.start()
                return self
            data = self.folder.read(CLAIM_NAME)
            if data is None:
                continue  # released meanwhile: try again
            holder = _parse(data)
            if holder is not None and not is_stale(holder):
                raise BuildLockedError(
                    f"another lossyds {holder['command']} (pid {holder['pid']} on {holder['host']}, started "
                    f"{holder['started']}) is writing to {self.folder.label}; wait for it to finish (or stop it) "
                    "and run this again."
                )
            self.folder.remove(CLAIM_NAME)  # stale: take it over, racing any other taker through the conditional put
        raise BuildLockedError(
            f"another lossyds process is claiming {self.folder.label} at the same time; run this again."
        )

    def _still_ours(self) -> bool:
        holder = _parse(self.folder.read(CLAIM_NAME))
        if holder is None or holder["token"] != self.token:
            self.lost = (
                f"another lossyds process took over {self.folder.label} while this {self.command} ran "
                "(its claim was not renewed in time); nothing more was written."
            )
            return False
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                if not self._still_ours():
                    return
                self.folder.write(CLAIM_NAME, self._record())
            except Exception:  # a failed renewal is retried; the uploads report the store's failure
                continue

    def check(self) -> None:
        """Raise BuildLockedError unless the claim is still this build's."""
        if self.lost is not None or not self._still_ours():
            raise BuildLockedError(self.lost)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost is None and _parse(self.folder.read(CLAIM_NAME)) is not None and self._still_ours():
            self.folder.remove(CLAIM_NAME)
