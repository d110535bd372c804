"""A dataset from outside lossyds (tests/test_ray_build.py): an image folder whose reader, in
the first process that reads one chosen sample, reports that process's pid and waits to be killed.

`stall-once` reads ROOT/SPLIT/CLASS/*.png exactly as `imagefolder` does. Loading the sample
`stall_key` first creates the file `stall_marker` holding the loading process's pid, atomically
(a hard link, which fails when the file exists); the process that created it then waits. A
process that finds the marker already there (the retry, in another process) loads the sample
as usual. So the kill of an encoding worker happens at one known sample, not by timing luck."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from lossyds.errors import SourceError
from lossyds.options import Option
from lossyds.sources.base import SourceRef
from lossyds.sources.folder import ImageFolderSource
from lossyds.types import SourceSample

STALL_SECONDS = 120  # then the reader gives up and the sample is skipped, so a test that never kills fails


class StallOnceSource(ImageFolderSource):
    name = "stall-once"
    options = ImageFolderSource.options + (
        Option("stall_key", str, "Stall test: the sample whose first reader waits to be killed."),
        Option("stall_marker", str, "Stall test: the file that sample's first reader creates, holding its pid."),
    )

    def load(self, record: SourceRef) -> SourceSample:
        if record.key == self.options["stall_key"]:
            self.stall_if_first(Path(self.options["stall_marker"]))
        return super().load(record)

    @staticmethod
    def stall_if_first(marker: Path) -> None:
        with tempfile.NamedTemporaryFile("w", dir=marker.parent, delete=False) as pid_file:
            pid_file.write(str(os.getpid()))
        try:
            os.link(pid_file.name, marker)
        except FileExistsError:
            return  # read before: this process runs the retry
        finally:
            os.unlink(pid_file.name)
        time.sleep(STALL_SECONDS)
        raise SourceError(f"{marker}'s reader (pid {os.getpid()}) was not killed within {STALL_SECONDS} s")
