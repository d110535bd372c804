"""A codec registered from a package outside lossyds: built, loaded and verified through the CLI, no lossyds file edited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).parent / "plugin" / "toy_codec.py"


def install_plugin(site: Path) -> None:
    """A distribution on sys.path the way pip leaves one: the module and its dist-info, whose
    entry_points.txt maps `toy` in the group `lossyds.codecs` to the class."""
    site.mkdir(parents=True)
    shutil.copy(PLUGIN, site / "toy_codec.py")
    info = site / "toy_codec-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-codec\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lossyds.codecs]\ntoy = toy_codec:ToyCodec\n")


def test_a_codec_from_another_package_builds_loads_and_verifies(tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    lossyds = [sys.executable, "-m", "lossyds.cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*lossyds, *args], capture_output=True, text=True, env=env, timeout=300)

    listed = run("codecs")
    assert listed.returncode == 0 and "toy" in listed.stdout and ".toy8" in listed.stdout
    out = tmp_path / "toy"
    built = run(
        "build", "--codec", "toy", "--gain", "2", "--out", str(out), "--workers", "1"
    )  # its declared option is a flag
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["codec"]["name"] == "toy"
        and manifest["codec"]["params"] == {"gain": 2.0}
        and manifest["num_samples"] == 5
    )
    assert run("verify", "--decode", str(out)).returncode == 0
    bad = run("build", "--codec", "toy", "--gain", "50", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--gain must be a number in 0.1..10" in bad.stderr
    load = (
        "import lossyds\n"
        f"samples = list(lossyds.open_dataset({str(out)!r}))\n"
        "assert len(samples) == 5 and all(s['audio'].shape == (1, s['num_frames']) for s in samples)\n"
        "print(sum(s['payload_bits'] for s in samples))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout) == manifest["bits"]["payload"]
