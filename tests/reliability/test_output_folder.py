"""The output folder belongs to the user until lossyds has claimed it: a build never overwrites or
removes a file it did not write, locally or under an object-storage prefix, and two builds into
one URL never both succeed (docs/reliability.md, "The output folder")."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossyds.builder.claim import CLAIM_NAME
from lossyds.builder.folder import MARKER_NAME

from ..fixtures import make_image_folder
from .test_attacks import assert_one_sentence

# Every kind of name lossyds itself writes, held by a user: its card and manifest, shard-style
# names of each shard format, a half-written shard, its journal and lock, and plain archives.
USER_NAMES = [
    "README.md",
    "manifest.json",
    "build-info.json",
    "shard-000000.tar",
    "shard-000001.tar.gz",
    "shard-000000.tar.zst",
    "shard-000000.tar.partial",
    "backup.tar",
    "photos.tar.gz",
    "audio.tar.zst",
    ".lossyds-build.json",
    ".lossyds-lock",
]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lossyds.cli", *args]


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256 of its bytes)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def user_file(folder: Path, name: str) -> bytes:
    content = f"the user's own {name}, not lossyds's\n".encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return content


@pytest.mark.parametrize("name", USER_NAMES)
@pytest.mark.parametrize("force", [False, True])
def test_a_folder_of_the_users_is_refused_before_anything_is_written(tmp_path, name, force, tally):
    out = tmp_path / "project"
    user_file(out, name)
    (out / "notes").mkdir()
    before = snapshot(out)
    result = run("build", "--codec", "jpeg", "--quality", "5", "--out", str(out), *(["--force"] if force else []))
    assert result.returncode == 2, result.stderr
    assert_one_sentence(result, str(out), "did not write")
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "notes"])
    tally["bad inputs tried"] += 1


def test_out_dot_in_a_project_keeps_its_readme(tmp_path):
    """The attack as reported: `--out .` in a folder holding the user's README.md."""
    readme = user_file(tmp_path, "README.md")
    result = run("build", "--codec", "jpeg", "--quality", "5", "--out", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert (tmp_path / "README.md").read_bytes() == readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_force_and_resume_remove_only_what_the_records_name(tmp_path):
    out = tmp_path / "out"
    first = run("build", "--codec", "jpeg", "--quality", "5", "--shard-samples", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert (out / MARKER_NAME).is_file()
    # The user adds files of their own to the finished build's folder, some with lossyds-like names.
    kept = {name: user_file(out, name) for name in ("notes.txt", "backup.tar", "old.tar.gz")}
    user_file(out / "extra", "shard-000009.tar")
    rebuilt = run("build", "--codec", "webp", "--quality", "10", "--shard-samples", "2", "--out", str(out), "--force")
    assert rebuilt.returncode == 0, rebuilt.stderr
    for name, content in kept.items():
        assert (out / name).read_bytes() == content
    assert (out / "extra" / "shard-000009.tar").is_file()
    assert not list(out.glob("*.jpg")) and (out / "manifest.json").read_text().count('"webp"') >= 1
    verified = run("verify", str(out))
    assert verified.returncode == 0, verified.stderr


def test_a_file_the_build_would_overwrite_is_refused_inside_a_build_folder(tmp_path):
    """A finished build rebuilt with --force into fewer shards than a user file's name: the
    stranger is named, and neither it nor the old build is touched."""
    out = tmp_path / "out"
    assert run("build", "--codec", "jpeg", "--quality", "5", "--shard-samples", "2", "--out", str(out)).returncode == 0
    stranger = user_file(out, "shard-000007.tar")
    before = snapshot(out)
    result = run("build", "--codec", "jpeg", "--quality", "30", "--shard-samples", "1", "--out", str(out), "--force")
    assert result.returncode == 2
    assert_one_sentence(result, "shard-000007.tar", "records do not name")
    assert (out / "shard-000007.tar").read_bytes() == stranger
    # --force discarded the old build's recorded files before the refusal; the user's file stays.
    assert set(snapshot(out)) <= set(before)


def test_an_interrupted_build_resumes_around_the_users_files(tmp_path, tally):
    source = tmp_path / "photos"
    make_image_folder(source, copies=2)
    out = tmp_path / "out"
    args = cli(
        "build", "--codec", "avif", "--quality", "30", "--dataset", "imagefolder", "--root", str(source), "--split", "train",
        "--shard-samples", "1", "--workers", "1", "--out", str(out),
    )  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.tar"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be interrupted"
    tally["kills survived"] += 1
    notes = user_file(out, "notes.txt")
    resumed = subprocess.run(args, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "notes.txt").read_bytes() == notes
    assert run("verify", str(out)).returncode == 0


# ---- object storage: the same rules under a prefix, and one build per URL --------------------------


def free_port() -> int:
    """A loopback port nothing listens on once the probe closes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def s3_settings(port: int, **extra: str) -> dict[str, str]:
    """The environment a user sets for an S3-compatible server on this machine's loopback port."""
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "LOSSYDSTESTKEY",
        "AWS_SECRET_ACCESS_KEY": "lossyds-test-secret",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }


def start_moto(env: dict[str, str]) -> tuple[subprocess.Popen, object]:
    """moto's S3 server in a process of its own on the loopback port of `env`, so that a test
    can stop it, with a client and a bucket "user" on it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import boto3

    port = env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    assert client.meta.endpoint_url.startswith("http://127.0.0.1:"), "the S3 client would leave loopback"
    deadline = time.time() + 60
    while True:
        try:
            client.create_bucket(Bucket="user")
            return server, client
        except Exception:
            if time.time() > deadline:
                server.kill()
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def s3_env():
    env = s3_settings(free_port())
    server, client = start_moto(env)
    yield env, client
    server.terminate()
    server.wait()


def objects(client, prefix: str) -> dict[str, bytes]:
    listing = client.list_objects_v2(Bucket="user", Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1 :]: client.get_object(Bucket="user", Key=o["Key"])["Body"].read() for o in listing}


@pytest.mark.parametrize("name", ["README.md", "manifest.json", "shard-000000.tar", "data.tar.zst", "sub/file.txt"])
def test_a_prefix_of_the_users_is_refused(s3_env, tmp_path, name, tally):
    env, client = s3_env
    prefix = f"mine-{name.replace('/', '-')}"
    client.put_object(Bucket="user", Key=f"{prefix}/{name}", Body=b"the user's own object")
    env = {**env, "LOSSYDS_STAGING": str(tmp_path / "staging")}
    for force in ([], ["--force"]):
        result = run("build", "--codec", "jpeg", "--quality", "5", "--out", f"s3://user/{prefix}", *force, env=env)
        assert result.returncode == 2, result.stderr
        assert_one_sentence(result, f"s3://user/{prefix}", "did not write")
        assert objects(client, prefix) == {name: b"the user's own object"}
    tally["bad inputs tried"] += 1


def test_force_under_a_prefix_keeps_the_users_objects(s3_env, tmp_path):
    env, client = s3_env
    env = {**env, "LOSSYDS_STAGING": str(tmp_path / "staging")}
    url = "s3://user/ours"
    assert run("build", "--codec", "jpeg", "--quality", "5", "--out", url, env=env).returncode == 0
    client.put_object(Bucket="user", Key="ours/notes.txt", Body=b"mine")
    client.put_object(Bucket="user", Key="ours/old.tar", Body=b"mine too")
    result = run("build", "--codec", "webp", "--quality", "10", "--out", url, "--force", env=env)
    assert result.returncode == 0, result.stderr
    stored = objects(client, "ours")
    assert stored["notes.txt"] == b"mine" and stored["old.tar"] == b"mine too"
    assert CLAIM_NAME not in stored and MARKER_NAME in stored
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_two_builds_into_one_url_from_different_staging_folders(s3_env, tmp_path, monkeypatch, tally):
    """Two SLURM jobs on one host, each with its own LOSSYDS_STAGING: while the first builds, the
    second (started here, in this process, so that it starts at once) refuses, and the URL holds
    the first's build whole."""
    import fsspec

    from lossyds.builder import BuildOptions, build
    from lossyds.errors import BuildLockedError

    env, client = s3_env
    source = make_image_folder(tmp_path / "photos", copies=2)
    url = "s3://user/contested"
    args = cli(
        "build", "--codec", "avif", "--quality", "10", "--dataset", "imagefolder", "--root", str(source),
        "--split", "train", "--shard-samples", "1", "--workers", "1", "--out", url,
    )  # fmt: skip
    first = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "LOSSYDS_STAGING": str(tmp_path / "a")},
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("LOSSYDS_STAGING", str(tmp_path / "b"))
    fsspec.filesystem("s3").clear_instance_cache()
    deadline = time.time() + 60
    while time.time() < deadline and CLAIM_NAME not in objects(client, "contested"):
        time.sleep(0.05)
    second = BuildOptions(out=url, codec="webp", codec_options={"quality": 30}, workers=1)
    with pytest.raises(BuildLockedError, match=r"\(pid \d+ on .*\) is writing to s3://user/contested"):
        build(second)
    assert first.poll() is None, "the first build ended before the second tried"
    assert first.wait() == 0, first.stderr.read()
    verified = run("verify", url, env=env)
    assert verified.returncode == 0, verified.stderr
    assert '"avif"' in objects(client, "contested")["manifest.json"].decode()
    fsspec.filesystem("s3").clear_instance_cache()
    tally["concurrent builds refused"] += 1


def test_a_claim_from_another_host_is_refused_unless_its_lease_ran_out(s3_env, tmp_path):
    import json

    env, client = s3_env
    env = {**env, "LOSSYDS_STAGING": str(tmp_path / "staging")}
    url = "s3://user/claimed"
    assert run("build", "--codec", "jpeg", "--quality", "5", "--out", url, "--limit", "1", env=env).returncode == 0
    holder = {"token": "t", "host": "node-17", "pid": 4242, "command": "build", "started": "2026-12-04T10:00:00Z"}
    client.put_object(
        Bucket="user", Key=f"claimed/{CLAIM_NAME}", Body=json.dumps({**holder, "renewed": time.time(), "lease": 600})
    )
    refused = run("build", "--codec", "jpeg", "--quality", "5", "--out", url, "--force", env=env)
    assert refused.returncode == 1
    assert_one_sentence(refused, "pid 4242 on node-17", url)
    client.put_object(
        Bucket="user",
        Key=f"claimed/{CLAIM_NAME}",
        Body=json.dumps({**holder, "renewed": time.time() - 700, "lease": 600}),
    )
    taken = run("build", "--codec", "jpeg", "--quality", "5", "--out", url, "--force", env=env)
    assert taken.returncode == 0, taken.stderr
    assert CLAIM_NAME not in objects(client, "claimed")


def test_an_endpoint_that_does_not_answer_is_one_sentence(tmp_path):
    pytest.importorskip("s3fs")
    env = s3_settings(free_port(), AWS_MAX_ATTEMPTS="1", LOSSYDS_STAGING=str(tmp_path / "staging"))
    url = "s3://user/nowhere"
    build = run("build", "--codec", "jpeg", "--quality", "5", "--out", url, env=env)
    assert build.returncode == 1
    assert_one_sentence(build, url, "rerunning resumes")
    for command in (("verify", url), ("info", url)):
        result = run(*command, env=env)
        assert result.returncode == 1
        assert_one_sentence(result, url)
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_a_server_that_stops_mid_build_is_one_sentence(tmp_path):
    """moto keeps its objects in memory, so the killed server's bucket is gone: what is checked is the
    failure itself (one sentence naming the URL, no traceback, no staging folder left)."""
    env = s3_settings(free_port(), AWS_MAX_ATTEMPTS="1", LOSSYDS_STAGING=str(tmp_path / "staging"))
    server, client = start_moto(env)
    try:
        source = tmp_path / "photos"
        make_image_folder(source, copies=2)
        args = cli(
            "build", "--codec", "avif", "--quality", "30", "--dataset", "imagefolder", "--root", str(source), "--split", "train",
            "--shard-samples", "1", "--workers", "1", "--out", "s3://user/stopped",
        )  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            listing = client.list_objects_v2(Bucket="user", Prefix="stopped/").get("Contents", [])
            if sum("shard-" in o["Key"] for o in listing) >= 1:
                break
            time.sleep(0.05)
        server.kill()
        server.wait()
        code, stderr = process.wait(timeout=300), process.stderr.read()
        assert code == 1, stderr
        assert len(stderr.strip().splitlines()) == 1 and "s3://user/stopped" in stderr, stderr
        assert "Traceback" not in stderr
        assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())
    finally:
        server.kill()
        server.wait()


def test_a_run_killed_before_its_first_shard_leaves_nothing_unrecorded(tmp_path):
    """A build killed while writing its first shard leaves the journal naming that shard; a rerun
    with other settings is refused, drops that journal with what it names, and the next build runs."""
    from lossyds.builder import BuildOptions, build
    from lossyds.builder.folder import LocalFolder, claim
    from lossyds.builder.journal import Journal
    from lossyds.errors import BuildStateError

    out = tmp_path / "out"
    out.mkdir()
    claim(LocalFolder(out))
    Journal(settings={"shard_format": "tar", "codec": "other"}).save(out)
    (out / "shard-000000.tar.partial").write_bytes(b"half a shard")
    with pytest.raises(BuildStateError, match="other settings"):
        build(BuildOptions(out=out, codec="jpeg", codec_options={"quality": 5}, workers=1))
    assert list(out.iterdir()) == []  # the marker goes too: the folder is empty again
    build(BuildOptions(out=out, codec="jpeg", codec_options={"quality": 5}, workers=1))
    assert (out / "manifest.json").is_file()
