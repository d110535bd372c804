"""`lossyds eval --model hf:PATH`: a tiny Hugging Face ViT built from a config (random weights,
saved to a temporary folder), scored on an ImageNet-layout build and checked against the same
model run by hand on the same decoded images."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import lossyds
from lossyds.build import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.evaluate import evaluate

from .fixtures import WNIDS, WORDS, make_imagenet
from .test_cli import run

# The model's label space: the fixture's three classes shuffled among others, so that the model's
# index of a class is not the dataset's label (sorted wnids) and only a mapping by name scores.
MODEL_LABELS = ["goldfish", WORDS["n04266014"], "great white shark", WORDS["n01440764"], "hen", WORDS["n02123045"]]


def tiny_vit(folder, labels: list[str], favourite: str | None = None):
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = transformers.ViTForImageClassification(config).eval()
    if favourite is not None:  # a strong bias: this label first for every image, the others in the weights' order
        with torch.no_grad():
            model.classifier.bias[labels.index(favourite)] += 100
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    make_imagenet(root / "in")
    out = root / "jpeg"
    build(
        BuildOptions(
            codec="jpeg",
            out=out,
            codec_options={"quality": 30},
            dataset="imagenet",
            root=root / "in",
            split="val",
            workers=1,
        )
    )
    return out


def test_hf_classifier_scores_as_the_model_run_by_hand(imagenet_val, tmp_path):
    model = tiny_vit(tmp_path / "vit", MODEL_LABELS, favourite=WORDS["n04266014"])
    result = evaluate(imagenet_val, "classification", f"hf:{tmp_path / 'vit'}", cores=2)
    # by hand: the same decoded images through the same processor and model, compared by name
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "vit")
    expected = {}
    for sample in lossyds.open_dataset(imagenet_val):
        with torch.no_grad():
            logits = model(**processor(images=[sample["image"].expand(3, -1, -1)], return_tensors="pt")).logits[0]
        top5 = logits.topk(5).indices.tolist()
        names = [MODEL_LABELS[i] for i in top5]
        expected[sample["key"]] = (top5, names[0] == sample["class_name"], sample["class_name"] in names)
    got = {s["key"]: (s["top5"], s["correct"], s["in_top5"]) for s in result["samples"]}
    assert got == expected
    # the favoured label is the space shuttle: two of the four val images, whatever the rest of the weights
    assert result["top1"] == pytest.approx(2 / 4)
    assert result["top5"] == pytest.approx(sum(e[2] for e in expected.values()) / 4)
    assert all(s["top5_names"][0] == WORDS["n04266014"] for s in result["samples"])
    assert {s["label"] for s in result["samples"]} == {WNIDS.index(w) for w in ("n04266014", "n01440764", "n02123045")}
    assert json.loads((imagenet_val / "eval-classification.json").read_text())["top1"] == result["top1"]


def test_hf_classifier_refuses_a_label_space_it_cannot_map(imagenet_val, tmp_path):
    tiny_vit(tmp_path / "vit", [name for name in MODEL_LABELS if name != WORDS["n02123045"]])
    with pytest.raises(UsageError, match=r"do not include the dataset's class 'tabby, tabby cat'"):
        evaluate(imagenet_val, "classification", f"hf:{tmp_path / 'vit'}", cores=0)
    with pytest.raises(UsageError, match="neither a model folder nor in the Hugging Face cache"):
        evaluate(imagenet_val, "classification", f"hf:{tmp_path / 'absent'}", cores=0)


def test_eval_command_with_an_hf_classifier(imagenet_val, tmp_path):
    tiny_vit(tmp_path / "vit", MODEL_LABELS, favourite=WORDS["n01440764"])
    result = run("eval", str(imagenet_val), "--task", "classification", "--model", f"hf:{tmp_path / 'vit'}")
    assert result.returncode == 0, result.stderr
    written = json.loads((imagenet_val / "eval-classification.json").read_text())
    assert written["top1"] == pytest.approx(1 / 4) and written["model"] == f"hf:{tmp_path / 'vit'}"
