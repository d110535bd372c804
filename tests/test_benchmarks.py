"""The benchmark scripts run end to end on tiny inputs (their figures are not asserted: timing is noisy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script, args, expect",
    [
        (
            "loader_throughput.py",
            [
                "--images",
                "16",
                "--epochs",
                "1",
                "--rounds",
                "2",
                "--seconds",
                "0.05",
                "--malloc-ab",
                "--codecs",
                "jpeg:50,webp:10",
                "--no-check",
            ],
            "threads/limit",
        ),
        (
            "decode_chunk.py",
            ["--images", "16", "--pairs", "2", "--chunks", "4,16", "--collate", "channels-last"],
            "median pair",
        ),
        ("audio_loader.py", ["--copies", "1", "--no-check"], "loader/codec"),
        ("container_overhead.py", ["--copies", "1", "--no-check"], "payload/tar.gz"),
        ("build_speed.py", ["--images", "8", "--copies", "1", "--no-check"], "peak RSS"),
        (
            "scaling.py",
            [
                "--base",
                "4",
                "--scales",
                "1,2",
                "--repeat",
                "1",
                "--kinds",
                "image",
                "--shard-samples",
                "2",
                "--no-check",
            ],
            "ray/local",
        ),
        ("neural_decode.py", ["--batch", "2"], "batched/one-by-one"),
        ("latent_throughput.py", ["--copies", "1", "--images", "4", "--rounds", "1", "--no-check"], "latent/decoded"),
        ("loader_memory.py", ["--images", "16", "--no-check"], "late/early"),
        ("report_page.py", ["--small", "4", "--large", "8", "--no-check"], "large/small"),
        (
            "device_decode.py",
            [
                "--device",
                "cpu",
                "--images",
                "4",
                "--utterances",
                "2",
                "--sample",
                "2",
                "--workers",
                "1",
                "--build-workers",
                "1",
                "--seconds",
                "0.2",
                "--no-check",
            ],
            "of best",
        ),
        (
            "batched_encode.py",
            [
                "--device",
                "cpu",
                "--images",
                "2",
                "--clips",
                "2",
                "--clip-seconds",
                "0.5",
                "--batch",
                "2",
                "--workers",
                "1",
            ],
            "batched/one-by-one",
        ),
        (
            "nvjpeg_decode.py",
            ["--device", "cpu", "--images", "16", "--batch", "8", "--qualities", "5", "--threads", "1"],
            "device_batch_8_vs_cpu_loader",
        ),
    ],
)
def test_benchmark_script_runs(tmp_path, script, args, expect):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert expect in result.stdout
