"""Builds into and out of a real S3 server: moto's server mode on loopback, reached through s3fs.

No network: every request goes to 127.0.0.1 through AWS_ENDPOINT_URL, and the fixture checks
that the S3 client really uses that endpoint before any test runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lossyds
from lossyds.builder import BuildOptions, build, merge
from lossyds.builder.lock import hold_folder
from lossyds.builder.remote import staging_folder
from lossyds.errors import BuildLockedError
from lossyds.manifest import JOURNAL_NAME

from .conftest import build_sample, file_hashes
from .fixtures import make_image_folder

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "lossyds-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, with credentials in the environment (as users set them)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "LOSSYDSKEY" + secrets.token_hex(6).upper(),
        "AWS_SECRET_ACCESS_KEY": "lossyds-secret-" + secrets.token_hex(12),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if not fs.exists(BUCKET):  # moto's state is per process: another module's server may have made it
        fs.mkdir(BUCKET)
    assert fs.s3.meta.endpoint_url == env["AWS_ENDPOINT_URL"], "the S3 client would leave loopback"
    yield fs, env
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    fsspec.filesystem("s3").clear_instance_cache()


def object_hashes(fs, prefix: str) -> dict[str, str]:
    """Like conftest.file_hashes, for the objects under s3://BUCKET/PREFIX."""
    fs.invalidate_cache()
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/{prefix}", detail=False)]
    wanted = sorted(n for n in names if n.startswith("shard-") or n == "manifest.json")
    return {n: hashlib.sha256(fs.cat_file(f"{BUCKET}/{prefix}/{n}")).hexdigest() for n in wanted}


def object_names(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/{prefix}", detail=False))
    except FileNotFoundError:
        return []


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lossyds.cli", *args]


def avif_build(out: str | Path, source: Path) -> list[str]:
    return cli(
        "build",
        *("--codec", "avif", "--quality", "30", "--dataset", "imagefolder", "--root", str(source)),
        *("--split", "train", "--shard-samples", "3", "--workers", "2", "--out", str(out)),
    )


def assert_no_credentials(env: dict[str, str], *texts: str | bytes) -> None:
    for text in texts:
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        assert env["AWS_SECRET_ACCESS_KEY"] not in text
        assert env["AWS_ACCESS_KEY_ID"] not in text


def test_a_killed_build_into_s3_resumes_to_the_objects_of_a_local_build(s3, tmp_path):
    fs, env = s3
    photos = make_image_folder(tmp_path / "src", copies=5)  # 30 images, 10 shards
    local = tmp_path / "local"
    subprocess.run(avif_build(local, photos), check=True, capture_output=True)
    url = f"s3://{BUCKET}/killed"
    process = subprocess.Popen(avif_build(url, photos), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if sum(n.startswith("shard-") for n in object_names(fs, "killed")) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the build finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    killed_output = process.communicate()[0]
    left = object_names(fs, "killed")
    assert JOURNAL_NAME in left and "manifest.json" not in left  # a reader sees no finished build
    resumed = subprocess.run(avif_build(url, photos), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert object_hashes(fs, "killed") == file_hashes(local)
    assert JOURNAL_NAME not in object_names(fs, "killed")
    assert not staging_folder(url).exists()
    assert_no_credentials(env, killed_output, resumed.stdout, resumed.stderr)
    for name in object_names(fs, "killed"):
        assert_no_credentials(env, fs.cat_file(f"{BUCKET}/killed/{name}"))


@pytest.fixture(scope="module")
def remote_jpeg(s3):
    """The sample photos as JPEG in s3://BUCKET/jpeg (2 samples a shard), and the same build locally."""
    options = dict(codec="jpeg", codec_options={"quality": 10}, shard_samples=2, workers=1)
    build(BuildOptions(out=f"s3://{BUCKET}/jpeg", **options))
    return f"s3://{BUCKET}/jpeg", options


def test_open_dataset_streams_an_s3_build_with_two_workers_each_key_once(remote_jpeg, tmp_path):
    url, options = remote_jpeg
    local = tmp_path / "local"
    build(BuildOptions(out=local, **options))
    expected = {s["key"]: s["image"] for s in lossyds.open_dataset(local)}
    loader = lossyds.DataLoader(lossyds.open_dataset(url), batch_size=None, num_workers=2)
    keys = []
    for sample in loader:
        keys.append(sample["key"])
        assert torch.equal(sample["image"], expected[sample["key"]])
    assert sorted(keys) == sorted(expected) and len(expected) == 6
    assert loader.bits.samples == 6


def test_verify_and_info_take_s3_urls_and_name_a_damaged_object(s3, remote_jpeg):
    fs, env = s3
    url, _ = remote_jpeg
    checked = subprocess.run(cli("verify", "--decode", url), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "ok: 3 shard(s), 6 samples, 6 decoded" in checked.stdout
    info = subprocess.run(cli("info", url), capture_output=True, text=True)
    assert info.returncode == 0 and "6 in 3 shard(s)" in info.stdout
    for name in object_names(fs, "jpeg"):
        fs.copy(f"{BUCKET}/jpeg/{name}", f"{BUCKET}/damaged/{name}")
    shard = bytearray(fs.cat_file(f"{BUCKET}/damaged/shard-000001.tar"))
    shard[1000] ^= 0xFF
    fs.pipe_file(f"{BUCKET}/damaged/shard-000001.tar", bytes(shard))
    damaged = subprocess.run(cli("verify", f"s3://{BUCKET}/damaged"), capture_output=True, text=True)
    assert damaged.returncode == 1
    assert "shard-000001.tar does not match its sha256" in damaged.stderr
    fs.rm_file(f"{BUCKET}/damaged/shard-000002.tar")
    fs.pipe_file(f"{BUCKET}/damaged/shard-000001.tar", fs.cat_file(f"{BUCKET}/jpeg/shard-000001.tar"))
    missing = subprocess.run(cli("verify", f"s3://{BUCKET}/damaged"), capture_output=True, text=True)
    assert missing.returncode == 1 and "shard shard-000002.tar is missing" in missing.stderr
    assert_no_credentials(env, checked.stdout, checked.stderr, damaged.stderr, missing.stderr)


def test_info_html_shows_an_s3_build_as_it_shows_the_same_build_here(s3, remote_jpeg, tmp_path):
    """`info URL --html`: the page of the build in S3 has the same decoded images, byte for
    byte, as the page of the same build made here."""
    fs, env = s3
    url, options = remote_jpeg
    local = tmp_path / "jpeg"
    build(BuildOptions(out=local, **options))
    manifest = json.loads(fs.cat_file(f"{BUCKET}/jpeg/manifest.json"))
    keys = [s["key"] for s in lossyds.open_dataset(local)]
    assert manifest["num_samples"] == len(keys) == 6 and len(manifest["shards"]) == 3  # the last key: the last shard
    pages = {}
    for name, where in (("remote", url), ("local", str(local))):
        pages[name] = tmp_path / f"page-{name}"
        shown = subprocess.run(
            cli("info", where, "--html", str(pages[name]), "--samples", f"{keys[0]},{keys[-1]}"),
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr
        assert_no_credentials(env, shown.stdout, shown.stderr, (pages[name] / "index.html").read_text())
    images = {name: sorted((page / "images").iterdir()) for name, page in pages.items()}
    assert [p.name for p in images["remote"]] == [p.name for p in images["local"]] and len(images["local"]) == 4
    for remote, here in zip(images["remote"], images["local"]):
        assert remote.read_bytes() == here.read_bytes(), remote.name


def test_a_finished_s3_build_is_refused_then_rebuilt_with_force(s3, remote_jpeg):
    fs, _ = s3
    url, options = remote_jpeg
    before = object_hashes(fs, "jpeg")
    again = subprocess.run(
        cli("build", "--codec", "jpeg", "--quality", "10", "--shard-samples", "2", "--out", url),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "already holds a finished build; pass --force" in again.stderr
    build(BuildOptions(out=url, force=True, **options))
    assert object_hashes(fs, "jpeg") == before


def test_a_second_build_into_the_same_url_on_this_host_is_refused(s3):
    url = f"s3://{BUCKET}/locked"
    staging = staging_folder(url)
    staging.mkdir(parents=True)
    with hold_folder(staging, "build"), pytest.raises(BuildLockedError, match="is writing to"):
        build(BuildOptions(out=url, codec="jpeg", codec_options={"quality": 10}, workers=1))
    staging.rmdir()
    assert object_names(s3[0], "locked") == []


def test_partitioned_build_into_s3_merges_to_the_objects_of_a_local_merge(s3, tmp_path):
    fs, _ = s3
    options = dict(codec="jpeg", codec_options={"quality": 10}, shard_samples=2, workers=1)
    for index in range(2):
        build(BuildOptions(out=tmp_path / "local", part=(index, 2), **options))
        build(BuildOptions(out=f"s3://{BUCKET}/parts-demo", part=(index, 2), **options))
    assert object_names(fs, "parts-demo") == [
        ".lossyds-folder",
        "parts",
    ]  # the marker; parts live under parts/ until merged
    merge(tmp_path / "local")
    merged = subprocess.run(cli("merge", f"s3://{BUCKET}/parts-demo"), capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    assert object_hashes(fs, "parts-demo") == file_hashes(tmp_path / "local")
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/parts-demo/parts")


def test_a_file_url_builds_the_local_build_into_a_new_folder(tmp_path, monkeypatch):
    """file:// goes through the object-storage path (staged, uploaded shard by shard) into a
    folder that does not exist yet, and ends byte for byte as the same build written locally."""
    monkeypatch.setenv("LOSSYDS_STAGING", str(tmp_path / "staging"))
    target = tmp_path / "not" / "yet" / "there"
    build_sample(f"file://{target}", "jpeg")
    build_sample(tmp_path / "local", "jpeg")
    remote, local = file_hashes(target), file_hashes(tmp_path / "local")
    assert remote == local and any(name.startswith("shard-") for name in remote)
