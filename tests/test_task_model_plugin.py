"""A kind of task model registered from a package outside lossyds (entry-point group
`lossyds.task_models`): a build scored with it through the CLI, no lossyds file edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# The plugin's module: `--model toy:CLASS` answers CLASS for every image, as a classifier whose
# logits follow the `module:function` contract (uint8 [N, 3, 224, 224] -> [N, classes]).
PLUGIN = textwrap.dedent(
    """
    import torch

    from lossyds.eval import TaskModel


    def load(argument, task, device, batch):
        wanted = int(argument)

        def classify(images):
            logits = torch.zeros(images.shape[0], 1000)
            logits[:, wanted] = 1.0
            return logits

        return classify


    MODEL = TaskModel(
        name="toy", tasks=("classification",), load=load, spelling="toy:CLASS", summary="answers CLASS for every image"
    )
    """
)


def install_plugin(site: Path) -> None:
    """A distribution on sys.path the way pip leaves one: the module and its dist-info, whose
    entry_points.txt maps `toy` in the group `lossyds.task_models` to its declaration."""
    site.mkdir(parents=True)
    (site / "toy_task_model.py").write_text(PLUGIN)
    info = site / "toy_task_model-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-task-model\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lossyds.task_models]\ntoy = toy_task_model:MODEL\n")


def test_a_task_model_from_another_package_scores_a_build(tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lossyds.cli", *args], capture_output=True, text=True, env=env, timeout=300
        )

    # `eval --help` reads the kinds from the registry: the plugin's spelling for its task, and what it is
    helped = " ".join(run("eval", "--help").stdout.split())
    assert "classification: hf:ID_OR_PATH, torchvision:NAME, toy:CLASS or module:function;" in helped
    assert "toy:CLASS: answers CLASS for every image" in helped
    assert "asr: pocketsphinx (default), hf:ID_OR_PATH or module:function;" in helped
    out = tmp_path / "photos"
    built = run("build", "--codec", "jpeg", "--quality", "5", "--out", str(out), "--workers", "1")
    assert built.returncode == 0, built.stderr
    scored = run("eval", str(out), "--task", "classification", "--model", "toy:0", "--cores", "0")
    assert scored.returncode == 0, scored.stderr
    assert "classification (toy:0)" in scored.stdout and "top1=" in scored.stdout
    result = json.loads((out / "eval-classification.json").read_text())
    assert result["model"] == "toy:0" and result["count"] == 6
    expected = sum(sample["label"] == 0 for sample in result["samples"]) / 6
    assert result["top1"] == expected
    assert all(sample["top5"][0] == 0 for sample in result["samples"])
    # The plugin serves classification only: for asr, `toy:0` is read as a module:function.
    refused = run("eval", str(out), "--task", "asr", "--model", "toy:0", "--cores", "0")
    assert refused.returncode == 2 and "module:function" in refused.stderr
