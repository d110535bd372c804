"""Keep freed decode buffers inside the process (glibc malloc tuning).

A decoded ImageNet-sized image is one 0.56 MB block (3 x 375 x 500 uint8). By default glibc
serves blocks that size from the heap only after its dynamic mmap threshold has grown, and
every time a batch of them is freed it trims the heap top back to the OS once more than twice
that threshold lies free there. The next batch then page-faults (and the kernel zeroes) every
page again. Fixing M_MMAP_THRESHOLD at 32 MiB (glibc's ceiling on 64-bit) and M_TRIM_THRESHOLD
at 256 MiB lets the process keep and reuse those blocks instead.
`benchmarks/loader_throughput.py --malloc-ab` measures faults and CPU per sample both ways.

Hand-written because no library does this at run time: jemalloc or tcmalloc via LD_PRELOAD
(PyTorch's own performance guide) do the same job but must be chosen before the process
starts. Nothing is changed when the platform's C library is not glibc, when the user already
tunes malloc (MALLOC_*_ environment variables, or a preloaded allocator), or when
LOSSYDS_TUNE_MALLOC=0.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024  # freed heap top kept for reuse before trimming
_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_state: bool | None = None  # None: not tried in this process yet


def skip_reason() -> str | None:
    """Why this process's malloc is left alone, or None when it can be tuned."""
    if os.environ.get("LOSSYDS_TUNE_MALLOC", "1") == "0":
        return "LOSSYDS_TUNE_MALLOC=0"
    for name in _USER_TUNING:
        if name in os.environ:
            return f"{name} is set: the user's own malloc tuning is kept"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(allocator in preload for allocator in _PRELOADED_ALLOCATORS):
        return f"LD_PRELOAD={preload}: another allocator serves malloc"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the C library is not glibc"
    return None


def keep_freed_buffers() -> bool:
    """Tune glibc malloc once per process (see module docstring); True when it is tuned now.

    Idempotent and thread-safe; called by LossyDataset when iteration starts (in each
    DataLoader worker too) unless the dataset was opened with tune_malloc=False."""
    global _state
    with _lock:
        if _state is None:
            _state = False
            if skip_reason() is None:
                try:
                    mallopt = ctypes.CDLL(None).mallopt
                    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                    # mmap first: setting it fixes the threshold, which also stops glibc raising the trim threshold itself.
                    _state = (
                        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
                    )
                except (OSError, AttributeError):
                    _state = False
        return _state
