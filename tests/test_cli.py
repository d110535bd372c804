"""The `lossyds` console script, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

LOSSYDS = shutil.which("lossyds") or ""


def run(*args: str) -> subprocess.CompletedProcess:
    command = [LOSSYDS] if LOSSYDS else [sys.executable, "-m", "lossyds.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def test_every_command_has_help():
    for command in ([], ["build"], ["info"], ["verify"], ["codecs"]):
        result = run(*command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_build_prints_the_achieved_rate_and_writes_the_manifest(tmp_path):
    result = run("build", "--codec", "opus", "--kbps", "6", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    achieved = f"{manifest['bits']['kbps']:.3f} kbps"
    assert achieved in result.stdout
    assert "payload / disk" in result.stdout and "5 in 1 shard" in result.stdout
    info = run("info", str(tmp_path / "o"))
    assert info.returncode == 0 and achieved in info.stdout
    as_json = run("info", "--json", str(tmp_path / "o"))
    assert json.loads(as_json.stdout) == manifest


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--codec", "nope", "--quality", "5"], "choose one of"),
        (["--codec", "jpeg", "--quality", "500"], "1..100"),
        (["--codec", "opus", "--kbps", "1"], "6..256"),
        (["--codec", "jpeg", "--quality", "5", "--dataset", "imagenet2"], "choose one of"),
        (["--codec", "jpeg", "--quality", "5", "--split", "speech"], "cannot encode"),
        (["--codec", "jpeg", "--quality", "5", "--dataset", "imagefolder", "--root", "/nonexistent"], "not a folder"),
    ],
)
def test_bad_usage_exits_2_with_one_sentence_on_stderr(tmp_path, args, fragment):
    result = run("build", *args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2, result
    assert fragment in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr


def test_finished_folder_needs_force(tmp_path):
    assert run("build", "--codec", "png", "--out", str(tmp_path)).returncode == 0
    again = run("build", "--codec", "png", "--out", str(tmp_path))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run("build", "--codec", "png", "--out", str(tmp_path), "--force").returncode == 0


def test_verify_names_a_corrupt_shard_and_sample(tmp_path):
    out = tmp_path / "v"
    assert run("build", "--codec", "webp", "--quality", "10", "--out", str(out), "--shard-samples", "2").returncode == 0
    ok = run("verify", "--decode", str(out))
    assert ok.returncode == 0 and "6 samples, 6 decoded" in ok.stdout
    shard = sorted(out.glob("*.tar"))[2]
    data = bytearray(shard.read_bytes())
    data[900] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = run("verify", str(out))
    assert bad.returncode == 1 and shard.name in bad.stderr and "sha256" in bad.stderr
    missing = run("verify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "manifest.json" in missing.stderr


def test_codecs_lists_every_registered_codec():
    from lossyds import codecs

    result = run("codecs")
    assert result.returncode == 0
    for name in codecs.available():
        assert name in result.stdout


def _undecodable_but_consistent(out) -> str:
    """Replace the second sample's bitstream by random bytes of the same length, with its
    CRC-32, and the shard's size and sha256 in the manifest, updated: only decoding can tell.
    Returns the key."""
    import hashlib
    import random
    import tarfile

    from .fixtures import replace_bitstream

    manifest = json.loads((out / "manifest.json").read_text())
    extension = manifest["codec"]["extension"]
    info = manifest["shards"][0]
    path = out / info["path"]
    with tarfile.open(path) as tar:
        sizes = {member.name: member.size for member in tar}
    key = sorted({name.split(".", 1)[0] for name in sizes})[1]
    replace_bitstream(path, key, extension, random.Random(0).randbytes(sizes[f"{key}.{extension}"]))
    info["bytes"], info["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return key


@pytest.mark.parametrize("codec, rate, samples", [("opus", ["--kbps", "12"], 5), ("jpeg", ["--quality", "20"], 6)])
def test_verify_decode_names_an_undecodable_sample_in_one_sentence(tmp_path, codec, rate, samples):
    out = tmp_path / codec
    assert run("build", "--codec", codec, *rate, "--out", str(out)).returncode == 0
    parallel = run("verify", "--decode", "--cores", "2", str(out))
    assert parallel.returncode == 0 and f"{samples} samples, {samples} decoded" in parallel.stdout
    key = _undecodable_but_consistent(out)
    assert run("verify", str(out)).returncode == 0  # hashes, sizes and CRCs all agree
    for workers in (
        ("2", "0") if codec == "opus" else ("2",)
    ):  # opus: DataLoader worker processes, then this process; jpeg: decode threads
        bad = run("verify", "--decode", "--cores", workers, str(out))
        assert bad.returncode == 1, bad
        assert f"sample {key!r} cannot be decoded" in bad.stderr
        assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr and "Caught" not in bad.stderr
    assert run("verify", "--decode", "--workers", "2", str(out)).returncode == 2  # the old spelling is gone
