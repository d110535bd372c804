"""glibc malloc tuning (lossyds.allocator), checked in fresh processes: it is process-wide state."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap

import pytest

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc tuning is glibc-only"
)

# Two threads each decode-sized block into a batch the main thread then frees, as the loader's
# decode threads and its consumer do; prints the minor page faults of each of 6 rounds.
FAULTS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from concurrent.futures import ThreadPoolExecutor
    import torch
    from lossyds import allocator

    tuned = allocator.keep_freed_buffers()
    pool = ThreadPoolExecutor(2)

    def make(count):
        return [torch.empty(3, 375, 500, dtype=torch.uint8).fill_(1) for _ in range(count)]

    def one_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            batch = [image for future in [pool.submit(make, 8) for _ in range(4)] for image in future.result()]
            del batch
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    print(json.dumps({"tuned": tuned, "reason": allocator.skip_reason(), "faults": [one_round() for _ in range(6)]}))
    """
)


def run_python(code: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LOSSYDS_TUNE_MALLOC"}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environment, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_malloc_stops_refaulting_freed_decode_buffers():
    tuned = run_python(FAULTS_SCRIPT)
    assert tuned["tuned"] is True and tuned["reason"] is None
    # Each round allocates 128 blocks of 0.56 MB (137 pages each). Tuned, glibc reuses the freed
    # blocks: in a typical steady round (the median of rounds 3-6) fewer faults than one block's
    # pages. (Now and then a thread lands in a fresh arena and one round faults its blocks in.)
    assert steady_faults(tuned) < 137, tuned
    # Left alone, glibc hands the freed blocks back to the OS and faults them in again (2-9
    # thousand faults a round; in about 1 run in 16 here the arenas happen to line up and it does not).
    untuned = [run_python(FAULTS_SCRIPT, LOSSYDS_TUNE_MALLOC="0") for _ in range(3)]
    assert all(run["tuned"] is False and run["reason"] == "LOSSYDS_TUNE_MALLOC=0" for run in untuned)
    assert max(steady_faults(run) for run in untuned) > 1000, untuned


def steady_faults(run: dict) -> float:
    return statistics.median(run["faults"][2:])


@glibc_only
def test_user_malloc_settings_are_left_alone():
    code = "import json; from lossyds import allocator; print(json.dumps({'tuned': allocator.keep_freed_buffers(), 'reason': allocator.skip_reason()}))"
    result = run_python(code, MALLOC_TRIM_THRESHOLD_="1000000")
    assert result["tuned"] is False and "MALLOC_TRIM_THRESHOLD_" in result["reason"]
    result = run_python(code, LD_PRELOAD="/nonexistent/libjemalloc.so.2")
    assert result["tuned"] is False and "jemalloc" in result["reason"]


@glibc_only
def test_iterating_a_dataset_tunes_malloc_unless_told_not_to(built):
    directory = built("jpeg")
    code = textwrap.dedent(
        f"""
        import json, lossyds
        from lossyds import allocator
        untouched = list(lossyds.open_dataset({str(directory)!r}, tune_malloc=False))
        before = allocator._state
        tuned = list(lossyds.open_dataset({str(directory)!r}, decode_threads=2))
        print(json.dumps({{"before": before, "after": allocator._state, "samples": [len(untouched), len(tuned)]}}))
        """
    )
    result = run_python(code)
    assert result == {"before": None, "after": True, "samples": [6, 6]}
