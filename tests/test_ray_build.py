"""Builds with --distributor ray on a real local Ray runtime (2 CPUs), one for the whole module.

Each Ray build is compared byte for byte with the same build by local worker processes."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lossyds import sources
from lossyds.builder import BuildOptions, build
from lossyds.builder.ray_distributor import check_reachable
from lossyds.errors import BuildLockedError, LossydsError, UsageError
from lossyds.manifest import JOURNAL_NAME

from .conftest import build_sample, file_hashes
from .fixtures import make_image_folder
from .test_object_storage import BUCKET, object_hashes, object_names, s3  # noqa: F401 (s3: the moto server fixture)

ray = pytest.importorskip("ray")

PLUGIN = Path(__file__).parent / "plugin" / "stall_source.py"
SAMPLE_BUILDS = {"photos": ("jpeg", {"quality": 5}), "speech": ("opus", {"kbps": 6})}


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for every test here; builds in this process join it. Its address lets
    a `lossyds build` subprocess join it too."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_samples(tmp_path_factory):
    """The sample photos and speech built by two local worker processes, two samples a shard."""
    outs = {}
    for split, (codec, rate) in SAMPLE_BUILDS.items():
        outs[split] = tmp_path_factory.mktemp(f"local-{split}")
        build_sample(outs[split], codec, split, rate=rate, workers=2, shard_samples=2)
    return outs


def test_a_ray_build_of_the_sample_photos_and_speech_equals_the_local_build(ray_runtime, local_samples, tmp_path):
    for split, (codec, rate) in SAMPLE_BUILDS.items():
        out = tmp_path / split
        build_sample(out, codec, split, rate=rate, workers=2, shard_samples=2, distributor="ray")
        assert file_hashes(out) == file_hashes(local_samples[split])
        assert len(file_hashes(out)) > 2  # several shards, each handed out as its own tasks


def install_stall_source(site: Path) -> object:
    """The `stall-once` dataset as pip leaves a plugin (module + dist-info with its entry point),
    put on this process's sys.path; its class travels to the Ray workers by value."""
    site.mkdir(parents=True)
    shutil.copy(PLUGIN, site / "stall_source.py")
    info = site / "stall_source-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stall-source\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lossyds.sources]\nstall-once = stall_source:StallOnceSource\n")
    sys.path.insert(0, str(site))
    module = importlib.import_module("stall_source")
    ray.cloudpickle.register_pickle_by_value(module)  # the workers' sys.path does not hold the site
    return module


def kill_the_stalled_reader(marker: Path, killed: list[int]) -> None:
    """Wait for the worker stalled on the marked sample, then SIGKILL it by its pid."""
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    pid = int(marker.read_text())
    assert pid != os.getpid()  # a Ray worker process, not this test's
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def test_a_ray_worker_killed_mid_build_is_retried_and_the_build_is_unchanged(ray_runtime, tmp_path):
    module = install_stall_source(tmp_path / "site")
    try:
        photos = make_image_folder(tmp_path / "photos", copies=3)  # 18 images, 5 shards
        refs = sources.get("imagefolder", root=photos, split="train", modality="image").refs()
        marker = tmp_path / "stalled-pid"
        options = {"stall_key": refs[len(refs) // 2].key, "stall_marker": str(marker)}  # a sample mid-build

        def stall_build(out: Path, distributor: str) -> None:
            build(
                BuildOptions(
                    codec="jpeg",
                    out=out,
                    codec_options={"quality": 5},
                    dataset="stall-once",
                    root=photos,
                    split="train",
                    source_options=options,
                    shard_samples=4,
                    workers=2,
                    distributor=distributor,
                )
            )

        marker.write_text("0")  # read before: the local build does not stall
        stall_build(tmp_path / "local", "local")
        marker.unlink()
        killed: list[int] = []
        killer = threading.Thread(target=kill_the_stalled_reader, args=(marker, killed))
        killer.start()
        stall_build(tmp_path / "ray", "ray")
        killer.join()
        assert killed and killed[0] == int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(killed[0], 0)  # that worker is gone; another one encoded its sample
        assert file_hashes(tmp_path / "ray") == file_hashes(tmp_path / "local")
    finally:
        sys.path.remove(str(tmp_path / "site"))
        ray.cloudpickle.unregister_pickle_by_value(module)
        sys.modules.pop("stall_source", None)


def test_an_interrupted_ray_build_into_s3_refuses_a_second_build_and_resumes_to_the_local_objects(
    ray_runtime, local_samples, request
):
    fs, _ = request.getfixturevalue("s3")
    url = f"s3://{BUCKET}/ray-photos"
    photo = BuildOptions(
        codec="jpeg", out=url, codec_options={"quality": 5}, split="photos", shard_samples=2, distributor="ray"
    )
    refused: list[BuildLockedError] = []

    class Interrupted(Exception):
        pass

    def second_build_then_stop(done: int, total: int) -> None:
        if done >= 3:  # after the first shard went up
            with pytest.raises(BuildLockedError) as second:
                build(BuildOptions(codec="jpeg", out=url, codec_options={"quality": 5}, split="photos", workers=1))
            refused.append(second.value)
            raise Interrupted

    with pytest.raises(Interrupted):
        build(photo, progress=second_build_then_stop)
    assert refused and "another lossyds" in str(refused[0])
    left = object_names(fs, "ray-photos")
    assert JOURNAL_NAME in left and "manifest.json" not in left and any(n.startswith("shard-") for n in left)
    build(photo)  # resumes after the uploaded shards
    assert object_hashes(fs, "ray-photos") == file_hashes(local_samples["photos"])


def test_cli_spec_runs_join_a_ray_cluster_by_address(ray_runtime, local_samples, tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "defaults: {shard_samples: 2}\n"
        "runs:\n"
        "  - {name: photos, dataset: sample, split: photos, codec: jpeg, quality: 5}\n"
        "  - {name: speech, dataset: sample, split: speech, codec: opus, kbps: 6}\n"
    )
    command = [sys.executable, "-m", "lossyds.cli", "build", "--spec", str(spec), "--out", str(tmp_path / "grid")]
    command += ["--workers", "2", "--distributor", "ray", "--ray-address", ray_runtime]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for split in SAMPLE_BUILDS:
        assert file_hashes(tmp_path / "grid" / split) == file_hashes(local_samples[split])


def test_an_unknown_distributor_and_an_unreachable_cluster_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(UsageError, match="distributor must be one of local, ray"):
        build_sample(tmp_path / "x", "jpeg", "photos", distributor="spark")
    assert not (tmp_path / "x").exists()
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(LossydsError, match=f"cannot connect to the Ray cluster at {address} .*ray start --head"):
        check_reachable(address)


@pytest.mark.slow
def test_a_batched_neural_ray_build_equals_the_local_build_and_cuda_needs_a_gpu_on_the_cluster(ray_runtime, tmp_path):
    """bmshj2018-hyperprior with test weights (random:0, seed 0): tasks cut where local batches are cut."""
    pytest.importorskip("compressai")
    hyperprior = {"quality": 2, "weights": "random:0"}
    for distributor, workers in (("local", 1), ("ray", 2)):  # one local process: no worker start-up to wait for
        build_sample(
            tmp_path / distributor,
            "bmshj2018-hyperprior",
            "photos",
            rate=hyperprior,
            workers=workers,
            shard_samples=2,
            encode_batch=2,
            limit=3,
            distributor=distributor,
        )
    assert file_hashes(tmp_path / "ray") == file_hashes(tmp_path / "local")
    with pytest.raises(UsageError, match="--device cuda: the Ray cluster has no GPU to encode on"):
        build_sample(
            tmp_path / "cuda", "bmshj2018-hyperprior", "photos", rate=hyperprior, device="cuda", distributor="ray"
        )
    assert not (tmp_path / "cuda").exists()
