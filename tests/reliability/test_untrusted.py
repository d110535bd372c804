"""Fuzzing every parser of untrusted bytes, and the security promises."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossyds.errors import LossydsError, ShardError
from lossyds.manifest import check_manifest
from lossyds.shards.tar import index_tar


def tar_with(members: list[tarfile.TarInfo], payload: bytes = b"abc") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)
    return buffer.getvalue()


def regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/passwd.jpg", "dir/inner.jpg", "a/../../b.jpg"])
def test_unsafe_member_paths_are_refused(name, tally):
    with pytest.raises(ShardError, match="unsafe path"):
        index_tar(tar_with([regular("ok.jpg"), regular(name)]), "s.tar")
    tally["bad inputs tried"] += 1


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
def test_links_and_special_members_are_refused(kind, tally):
    info = tarfile.TarInfo("k.jpg")
    info.type = kind
    info.linkname = "/etc/passwd"
    with pytest.raises(ShardError, match="non-file member"):
        index_tar(tar_with([info]), "s.tar")
    tally["bad inputs tried"] += 1


@pytest.fixture(scope="module")
def real_shard(tmp_path_factory):
    from lossyds.builder import BuildOptions, build

    out = tmp_path_factory.mktemp("b")
    build(BuildOptions(codec="jpeg", out=out, codec_options={"quality": 5}, workers=1, limit=3))
    return next(out.glob("shard-*")).read_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_shard_reader_on_mutated_real_shards_raises_only_shard_errors(real_shard, data):
    blob = bytearray(real_shard)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        entries = index_tar(bytes(blob[:cut]), "fuzz.tar")
    except ShardError:
        return
    for entry in entries:  # offsets from a damaged header never point outside the data
        for offset, size in entry.members.values():
            assert 0 <= offset and offset + size <= cut


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_shard_reader_on_random_bytes_raises_only_shard_errors(blob):
    try:
        index_tar(blob, "random.tar")
    except ShardError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["format_version", "codec", "dataset", "shards", "bits", "num_samples", "modality"]),
        json_values,
    )
)
def test_manifest_checker_raises_only_lossyds_errors(document):
    try:
        check_manifest(document)
    except LossydsError:
        pass


def test_manifest_shard_paths_cannot_leave_the_folder():
    base = {
        "format_version": 1,
        "codec": {"name": "jpeg"},
        "dataset": {},
        "bits": {},
        "num_samples": 1,
        "modality": "image",
    }
    for path in ("../x.tar", "/abs/x.tar", "a/../../x.tar"):
        with pytest.raises(ShardError, match="outside"):
            check_manifest({**base, "shards": [{"path": path, "num_samples": 1}]})


def test_tokens_never_reach_output_manifest_or_card(tmp_path):
    secret = "hf_lossydsTestSecret0123456789"
    env = {**os.environ, "HF_TOKEN": secret, "HUGGING_FACE_HUB_TOKEN": secret, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "b"
    results = [
        subprocess.run(
            [sys.executable, "-m", "lossyds.cli", "build", "--codec", "jpeg", "--quality", "5", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
        ),
        subprocess.run(
            [sys.executable, "-m", "lossyds.cli", "push", str(out), "--repo", "me/x", "--dry-run"],
            capture_output=True,
            text=True,
            env=env,
        ),
    ]
    assert all(r.returncode == 0 for r in results)
    for text in [r.stdout + r.stderr for r in results] + [
        p.read_text(errors="replace") for p in out.iterdir() if p.suffix in (".json", ".md")
    ]:
        assert secret not in text


def test_no_pickle_or_torch_load_of_shard_data():
    """Shards are read by the tar scanner, json, and codec decoders only: no unpickling anywhere in reading code."""
    from pathlib import Path

    import lossyds

    source = Path(lossyds.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text and "import pickle" not in text, path
        if "torch.load(" in text:
            assert "weights_only=True" in text, path
