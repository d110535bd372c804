"""Every task's eval result on small builds, held against the results recorded before the
evaluation code was reorganised (tests/golden_eval.json): moving code must not move a score.

Regenerate only for a deliberate change of results: `python -m tests.test_eval_golden`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from lossyds.builder import BuildOptions, build
from lossyds.eval import evaluate

from .fixtures import make_cityscapes

GOLDEN = Path(__file__).with_name("golden_eval.json")
# Per-run facts that are not results: where, when, how fast.
VOLATILE = {"directory", "seconds", "samples_per_second", "device", "cores", "started", "finished_at", "host"}

RUNS: dict[str, tuple[dict[str, Any], str, str | None]] = {
    # name: (build options, task, model)
    "classification-jpeg-q5": (
        {"codec": "jpeg", "codec_options": {"quality": 5}},
        "classification",
        "tests.task_models:brightness_classifier",
    ),
    "segmentation-webp-q50": (
        {"codec": "webp", "codec_options": {"quality": 50}, "dataset": "cityscapes", "split": "val"},
        "segmentation",
        "tests.task_models:road_everywhere",
    ),
    "asr-opus-6": ({"codec": "opus", "codec_options": {"kbps": 6}}, "asr", None),
    "asr-mp3-32-duration": ({"codec": "mp3", "codec_options": {"kbps": 32}}, "asr", "tests.task_models:duration_words"),
    "separation-opus-6": ({"codec": "opus", "codec_options": {"kbps": 6}, "split": "music"}, "separation", None),
}


def _stable(value: Any) -> Any:
    """The result without volatile fields, floats rounded to 9 significant digits (libraries may sum in another order)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.9g}")
    return value


def run_all(root: Path) -> dict[str, Any]:
    cityscapes = make_cityscapes(root / "cs") and root / "cs"
    results = {}
    for name, (options, task, model) in RUNS.items():
        options = dict(options)
        if options.get("dataset") == "cityscapes":
            options["root"] = cityscapes
        build(BuildOptions(out=root / name, workers=1, **options))
        results[name] = _stable(evaluate(root / name, task, model, cores=0))
    return results


@pytest.mark.skipif(not GOLDEN.exists(), reason="no recorded results")
def test_eval_results_are_those_recorded(tmp_path):
    recorded = json.loads(GOLDEN.read_text())
    measured = json.loads(json.dumps(run_all(tmp_path)))  # the same JSON round trip as the record
    assert set(measured) == set(recorded)
    for name in recorded:
        assert measured[name] == recorded[name], name


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        GOLDEN.write_text(json.dumps(run_all(Path(folder)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
