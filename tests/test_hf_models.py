"""`lossyds eval --model hf:PATH`: a tiny Hugging Face ViT built from a config (random weights,
saved to a temporary folder), scored on an ImageNet-layout build and checked against the same
model run by hand on the same decoded images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.eval import evaluate
from lossyds.eval.hf import HFImageClassifier, HFSemanticSegmenter
from lossyds.sources.cityscapes import train_ids

from .fixtures import WNIDS, WORDS, hf_image_set, make_cityscapes, make_imagenet
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


def tiny_segformer(folder, num_labels: int):
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_labels=num_labels,
        num_encoder_blocks=1,
        depths=[1],
        sr_ratios=[1],
        hidden_sizes=[16],
        patch_sizes=[7],
        strides=[4],
        num_attention_heads=[1],
        mlp_ratios=[2],
        decoder_hidden_size=16,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(folder)
    transformers.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return model


def hand_miou(model, folder, build_dir, to_targets, classes: int) -> float:
    """mIoU by hand: each decoded image through the processor and model, logits resized to the
    mask, one confusion matrix counted with numpy, IoU averaged over classes that occur."""
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    confusion = np.zeros((classes, classes), np.int64)
    for sample in lossyds.open_dataset(build_dir):
        target = to_targets(sample["mask"][0].numpy())
        with torch.no_grad():
            logits = model(**processor(images=[sample["image"]], return_tensors="pt")).logits
        logits = torch.nn.functional.interpolate(logits, size=target.shape, mode="bilinear", align_corners=False)
        prediction = logits[0].argmax(0).numpy()
        for t, p in zip(target[target != 255], prediction[target != 255]):
            confusion[t, p] += 1
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return float(np.mean(intersection[union > 0] / union[union > 0]))


def test_hf_segmenter_miou_on_cityscapes_and_an_ade20k_like_set(tmp_path, monkeypatch):
    make_cityscapes(tmp_path / "cs")
    cityscapes = tmp_path / "cs-webp"
    build(
        BuildOptions(
            codec="webp",
            out=cityscapes,
            codec_options={"quality": 50},
            dataset="cityscapes",
            root=tmp_path / "cs",
            split="val",
            workers=1,
        )
    )
    model = tiny_segformer(tmp_path / "seg19", 19)
    result = evaluate(cityscapes, "segmentation", f"hf:{tmp_path / 'seg19'}", cores=0)
    expected = hand_miou(model, tmp_path / "seg19", cityscapes, lambda m: train_ids(torch.from_numpy(m)).numpy(), 19)
    assert result["classes"] == 19 and result["miou"] == pytest.approx(expected, rel=1e-6)

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "ade" / "data").mkdir(parents=True)
    hf_image_set(label_column=None, mask_column="annotation").to_parquet(
        str(tmp_path / "ade" / "data" / "validation-00000-of-00001.parquet")
    )
    ade = tmp_path / "ade-jpeg"
    build(
        BuildOptions(
            codec="jpeg",
            out=ade,
            codec_options={"quality": 30},
            dataset=f"hf:{tmp_path / 'ade'}",
            split="validation",
            workers=1,
        )
    )
    model = tiny_segformer(tmp_path / "seg150", 150)
    result = evaluate(ade, "segmentation", f"hf:{tmp_path / 'seg150'}", cores=0)
    reduce = lambda m: np.where(m == 0, 255, m.astype(np.int64) - 1)  # noqa: E731  (ADE20k: 0 is "other", ignored)
    assert result["classes"] == 150
    assert result["miou"] == pytest.approx(hand_miou(model, tmp_path / "seg150", ade, reduce, 150), rel=1e-6)
    with pytest.raises(UsageError, match="the model has 19 classes and this .* build 150"):
        evaluate(ade, "segmentation", f"hf:{tmp_path / 'seg19'}", cores=0)


def test_hf_segmenter_batches_images_of_different_sizes(tmp_path):

    tiny_segformer(tmp_path / "seg", 19)
    segmenter = HFSemanticSegmenter(str(tmp_path / "seg"), torch.device("cpu"))
    calls = []
    segmenter.model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    rng = np.random.default_rng(0)
    images = [
        torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8)) for h, w in ((40, 52), (64, 64), (30, 90))
    ]
    sizes = [(20, 26), (64, 64), (30, 90)]
    batched = segmenter(images, sizes)
    assert calls == [3]  # one forward pass over all three
    one_by_one = [segmenter([image], [size])[0] for image, size in zip(images, sizes)]
    for together, alone, size in zip(batched, one_by_one, sizes):
        assert together.shape == (19, *size)
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_hf_model_without_its_task_head_is_refused(tmp_path):
    """A checkpoint missing weights the task model needs (here the classifier head) would run
    with those weights randomly initialised: refused in one sentence."""
    from safetensors.torch import load_file, save_file

    tiny_vit(tmp_path / "vit", MODEL_LABELS)
    weights = load_file(tmp_path / "vit" / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("classifier.")},
        tmp_path / "vit" / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(
        UsageError, match=r"lacks 2 of the weights .*classifier\.bias, classifier\.weight.*randomly initialised"
    ):
        HFImageClassifier(str(tmp_path / "vit"), torch.device("cpu"))
