"""Spec files and task models that misbehave (issue 26): each ends in one sentence, never a traceback.

A spec is checked whole before its first run builds or deletes anything; a task model that
raises or returns what its task cannot score is named with the sample it failed on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.builder.spec import load_spec
from lossyds.cli import main

from ..fixtures import make_cityscapes

REPO = Path(__file__).resolve().parents[2]
HERE = __name__  # the task models below are `module:function` models of this module


def one_sentence(result, code: int, *fragments: str) -> str:
    """The error line of a command that must exit `code` with one sentence on stderr."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_spec(tmp_path: Path, spec: dict | str, *extra: str):
    path = tmp_path / "grid.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, allow_unicode=True))
    return CliRunner().invoke(main, ["build", "--spec", str(path), "--workers", "1", *extra])


PHOTOS = {"dataset": "sample", "split": "photos", "codec": "png"}

# -- 2: run names are one folder name under --out -----------------------------------------------


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("files", [{}, {"README.md": "keep me", "notes.txt": "keep me too"}])
def test_a_run_named_dot_dot_cannot_reach_above_out(tmp_path, force, files, tally):
    victim = tmp_path / "victim"
    victim.mkdir()
    for name, text in files.items():
        (victim / name).write_text(text)
    out = tmp_path / "a" / "b"
    spec = {"runs": [{"name": "../../victim", **PHOTOS}]}
    result = run_spec(tmp_path, spec, "--out", str(out), *(["--force"] if force else []))
    tally["bad inputs tried"] += 1
    one_sentence(result, 2, "'../../victim'")
    assert {p.name: p.read_text() for p in victim.iterdir()} == files
    assert not out.exists()


@pytest.mark.parametrize(
    "name", ["a/b", "a\\b", "..", ".", "", "/tmp/elsewhere", "a\x00b", "C:\\out", 7, ["x"], {"a": 1}, None, True]
)
def test_a_run_name_is_one_path_component(tmp_path, name, tally):
    spec = {"runs": [{"name": "fine", **PHOTOS}, {"name": name, **PHOTOS}]}
    result = run_spec(tmp_path, spec, "--out", str(tmp_path / "grid"))
    tally["bad inputs tried"] += 1
    one_sentence(result, 2, "run 2")
    assert not (tmp_path / "grid").exists()


# -- 8: the whole spec, types included, is checked before the first run --------------------------


def good(**changes):
    return {"name": "good", **PHOTOS, **changes}


BAD_SPECS = {
    "shard_mb is text": ({"runs": [good(), good(name="big", shard_mb="lots")]}, ["'big'", "shard_mb", "'lots'"]),
    "shard_samples is 0": ({"runs": [good(), good(name="zero", shard_samples=0)]}, ["'zero'", "shard_samples"]),
    "shard_format unknown": ({"runs": [good(name="z", shard_format="zip")]}, ["'z'", "shard_format", "'zip'"]),
    "defaults is a list": ({"defaults": [1, 2], "runs": [good()]}, ["defaults"]),
    "roots is a list": ({"roots": ["/data"], "runs": [good()]}, ["roots"]),
    "a root is a list": ({"roots": {"sample": ["/data"]}, "runs": [good()]}, ["roots", "sample"]),
    "runs is a mapping": ({"runs": {"a": good()}}, ["runs"]),
    "a run is a list": ({"runs": [good(), ["x"]]}, ["run 2"]),
    "jpeg quality 500": (
        {"runs": [good(), {"name": "q500", **PHOTOS, "codec": "jpeg", "quality": 500}]},
        ["'q500'", "quality", "500"],
    ),
    "jpeg without quality": ({"runs": [good(), {"name": "noq", **PHOTOS, "codec": "jpeg"}]}, ["'noq'", "quality"]),
    "opus kbps six": (
        {"runs": [good(), {"name": "six", "dataset": "sample", "split": "speech", "codec": "opus", "kbps": "six"}]},
        ["'six'", "kbps"],
    ),
    "default out of range": ({"defaults": {"quality": -3}, "runs": [good(codec="webp")]}, ["'good'", "quality"]),
    "codec_options is text": ({"runs": [good(codec="jpeg", codec_options="fast")]}, ["'good'", "codec_options"]),
    "codec_options unknown key": (
        {"runs": [good(codec="jpeg", quality=5, codec_options={"speed": 3})]},
        ["'good'", "speed"],
    ),
    "split is a number": ({"runs": [good(split=2017)]}, ["'good'", "split"]),
    "split unknown": ({"runs": [good(split="nope")]}, ["'good'", "'nope'"]),
    "dataset is a list": ({"runs": [good(dataset=["sample"])]}, ["'good'", "dataset"]),
    "codec is a number": ({"runs": [good(codec=5)]}, ["'good'", "codec"]),
    "unknown top-level key": ({"default": {"shard_samples": 5}, "runs": [good()]}, ["'default'"]),
    "out is a list": ({"out": ["x"], "runs": [good()]}, ["out"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_malformed_spec_stops_before_anything_is_built(tmp_path, case, tally, monkeypatch):
    spec, fragments = BAD_SPECS[case]
    monkeypatch.chdir(tmp_path)  # a spec's own `out` is relative to here
    result = run_spec(tmp_path, spec, *([] if "out" in spec else ["--out", str(tmp_path / "grid")]))
    tally["bad inputs tried"] += 1
    one_sentence(result, 2, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]  # nothing built, no folder made


def test_a_spec_that_is_not_yaml_or_not_text_is_one_sentence(tmp_path):
    one_sentence(run_spec(tmp_path, "runs: [\n  {name: a"), 2, "not valid YAML")
    path = tmp_path / "grid.yaml"
    path.write_bytes(b"runs:\n  - {name: \xff\xfe}\n")
    result = CliRunner().invoke(main, ["build", "--spec", str(path), "--out", str(tmp_path / "g")])
    one_sentence(result, 2, "grid.yaml")


def test_the_shipped_specs_still_pass_the_checks():
    for path in [*sorted((REPO / "manifests").glob("*.yaml")), *sorted((REPO / "builders").glob("*/recipe.yaml"))]:
        assert load_spec(path)["runs"], path


def test_a_valid_spec_with_values_as_text_still_builds(tmp_path):
    spec = {"runs": [{"name": "photos", **PHOTOS, "shard_samples": "2", "shard_mb": "5"}]}
    result = run_spec(tmp_path, spec, "--out", str(tmp_path / "grid"), "--limit", "3")
    assert result.exit_code == 0, (result.output, result.exception)
    manifest = lossyds.open_dataset(tmp_path / "grid" / "photos").manifest
    assert manifest["num_samples"] == 3 and len(manifest["shards"]) == 2


# -- 9: task models that misbehave ------------------------------------------------------------------


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-faults")
    make_cityscapes(root / "cs")
    plans = {
        "classification": BuildOptions(codec="jpeg", out=root / "photos", codec_options={"quality": 50}),
        "segmentation": BuildOptions(
            codec="png", out=root / "cs-png", dataset="cityscapes", root=root / "cs", split="val"
        ),
        "asr": BuildOptions(codec="flac", out=root / "speech", split="speech", limit=2),
        "separation": BuildOptions(codec="flac", out=root / "music", split="music"),
    }
    found = {}
    for task, options in plans.items():
        options.workers = 1
        build(options)
        found[task] = (options.out, {s["key"] for s in lossyds.open_dataset(options.out)})
    return found


STEMS = ("drums", "bass", "other", "vocals")
NOT_CALLABLE = 42


def raises(*args):
    raise RuntimeError("the model broke")


def logits_one_row_short(images):
    return torch.zeros(images.shape[0] - 1, 6)


def logits_flat(images):
    return torch.zeros(images.shape[0])


def logits_as_a_list(images):
    return [[0.0] * 6 for _ in range(images.shape[0])]


def logits_none(images):
    return None


def logits_nan(images):
    logits = torch.zeros(images.shape[0], 6)
    logits[-1] = float("nan")
    return logits


def masks_too_small(image):
    return torch.zeros(1, 19, 7, 7)


def masks_of_40_classes(image):
    logits = torch.zeros(1, 40, *image.shape[2:])
    logits[:, 30] = 1
    return logits


def masks_three_dims(image):
    return torch.zeros(19, *image.shape[2:])


def masks_nan(image):
    return torch.full((1, 19, *image.shape[2:]), float("nan"))


def text_none(audio, rate):
    return None


def text_number(audio, rate):
    return 42


def stems_not_a_mapping(mixture, rate):
    return mixture


def stems_missing_vocals(mixture, rate):
    return {name: mixture for name in STEMS[:3]}


def stems_too_short(mixture, rate):
    return {name: mixture[:, :100] for name in STEMS}


def stems_nan(mixture, rate):
    return {name: np.full_like(mixture, np.nan) for name in STEMS}


def stems_infinite(mixture, rate):
    return {name: np.full_like(mixture, np.inf) for name in STEMS}


def stems_as_text(mixture, rate):
    return {name: "loud" for name in STEMS}


MISBEHAVING = [
    ("classification", "raises", "RuntimeError: the model broke"),
    ("classification", "logits_one_row_short", "[5, 6]"),
    ("classification", "logits_flat", "[6]"),
    ("classification", "logits_as_a_list", "list"),
    ("classification", "logits_none", "None"),
    ("classification", "logits_nan", "NaN"),
    ("segmentation", "raises", "RuntimeError: the model broke"),
    ("segmentation", "masks_too_small", "[1, 19, 7, 7]"),
    ("segmentation", "masks_of_40_classes", "40"),
    ("segmentation", "masks_three_dims", "[19, 128, 256]"),
    ("segmentation", "masks_nan", "NaN"),
    ("asr", "raises", "RuntimeError: the model broke"),
    ("asr", "text_none", "None"),
    ("asr", "text_number", "int"),
    ("separation", "raises", "RuntimeError: the model broke"),
    ("separation", "stems_not_a_mapping", "ndarray"),
    ("separation", "stems_missing_vocals", "vocals"),
    ("separation", "stems_too_short", "100"),
    ("separation", "stems_nan", "NaN"),
    ("separation", "stems_infinite", "infinite"),
    ("separation", "stems_as_text", "vocals"),
]


@pytest.mark.parametrize(("task", "function", "fragment"), MISBEHAVING)
def test_a_misbehaving_task_model_is_named_with_its_sample(builds, task, function, fragment, tally):
    directory, keys = builds[task]
    model = f"{HERE}:{function}"
    result = CliRunner().invoke(main, ["eval", str(directory), "--task", task, "--model", model, "--cores", "0"])
    tally["bad inputs tried"] += 1
    line = one_sentence(result, 1, model, fragment)
    assert any(repr(key) in line for key in keys), line
    assert not (directory / f"eval-{task}.json").exists()


BAD_MODEL_VALUES = [
    (f"{HERE}:NOT_CALLABLE", "not a function"),
    (f"{HERE}:absent", "absent"),
    (":nothing", "module:function"),
    ("..relative:model", "..relative"),
    ("no_such_module_anywhere:model", "no_such_module_anywhere"),
    ("broken_model_module:model", "ZeroDivisionError"),
    (f"{HERE}", "module:function"),
]


@pytest.mark.parametrize("task", ["classification", "segmentation", "asr", "separation"])
@pytest.mark.parametrize(("model", "fragment"), BAD_MODEL_VALUES)
def test_a_bad_model_value_is_refused(builds, tmp_path, monkeypatch, task, model, fragment):
    (tmp_path / "broken_model_module.py").write_text("RATIO = 1 / 0\n\ndef model(*args):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    directory, _ = builds[task]
    result = CliRunner().invoke(main, ["eval", str(directory), "--task", task, "--model", model, "--cores", "0"])
    one_sentence(result, 2, repr(model), fragment)


def test_torchvision_without_cached_weights_says_where_to_put_them(builds, tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    directory, _ = builds["classification"]
    result = CliRunner().invoke(
        main, ["eval", str(directory), "--task", "classification", "--model", "torchvision:resnet50", "--cores", "0"]
    )
    line = one_sentence(result, 2, "torchvision:resnet50", str(tmp_path / "torch" / "hub" / "checkpoints"))
    assert "has no model" not in line and "resnet50-" in line
    result = CliRunner().invoke(
        main, ["eval", str(directory), "--task", "classification", "--model", "torchvision:resnet5000", "--cores", "0"]
    )
    one_sentence(result, 2, "torchvision has no model 'resnet5000'")


def test_torchvision_weights_that_do_not_fit_are_one_sentence(builds, tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(2, 2)}, folder / Path(weights.url).name)
    directory, _ = builds["classification"]
    result = CliRunner().invoke(
        main, ["eval", str(directory), "--task", "classification", "--model", "torchvision:resnet18", "--cores", "0"]
    )
    one_sentence(result, 2, "torchvision:resnet18", Path(weights.url).name)


def test_well_behaved_models_still_score(builds):
    from lossyds.eval import evaluate

    directory, _ = builds["classification"]
    assert evaluate(directory, "classification", "tests.task_models:brightness_classifier", cores=0)["count"] == 6
    directory, _ = builds["segmentation"]
    assert 0 < evaluate(directory, "segmentation", "tests.task_models:road_everywhere", cores=0)["miou"] < 1
    directory, _ = builds["asr"]
    assert evaluate(directory, "asr", "tests.task_models:duration_words", cores=0)["samples"][0]["hypothesis"]


# -- 14b: msillm's install hint -------------------------------------------------------------------------


def test_msillm_not_installed_names_what_installs_it(monkeypatch):
    from lossyds.codecs.msillm import MsIllmCodec
    from lossyds.errors import UsageError

    monkeypatch.setattr(MsIllmCodec, "package_installed", classmethod(lambda cls: False))
    with pytest.raises(UsageError) as caught:
        MsIllmCodec(quality=1)
    message = str(caught.value)
    assert "pip install --no-deps neuralcompression" in message and "lossyds[neural]" in message
    from lossyds.builder.spec import unavailable_reason

    reason = unavailable_reason(BuildOptions(codec="msillm", out=Path("unused"), codec_options={"quality": 1}))
    assert reason is not None and "pip install --no-deps neuralcompression" in reason
