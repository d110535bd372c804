"""`lossyds eval --task separation --model demucs:...`: a real (tiny, randomly initialised)
HTDemucs, scored with museval's BSSEval v4. The weights are made by the test (seed 0), not
pretrained, so the separations are poor; what is checked is that lossyds runs the model as
demucs's own `Separator` does and scores its output as museval does."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

import lossyds
from lossyds.builder import BuildOptions, build
from lossyds.errors import UsageError
from lossyds.eval import evaluate

from .test_cli import run

demucs_api = pytest.importorskip("demucs.api")
from demucs.htdemucs import HTDemucs  # noqa: E402

STEMS = ["drums", "bass", "other", "vocals"]


def save_tiny_htdemucs(path, sources=STEMS) -> None:
    """The smallest HTDemucs that runs (8 channels, 2 layers, one transformer layer), random
    weights from seed 0, saved as the package `demucs.states.load_model` reads."""
    torch.manual_seed(0)
    model = HTDemucs(list(sources), channels=8, depth=2, t_layers=1, t_heads=1, nfft=512, dconv_comp=4, segment=2)
    args, kwargs = model._init_args_kwargs
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict()}, path)


@pytest.fixture(scope="module")
def music_opus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demucs") / "opus12"
    build(BuildOptions(codec="opus", out=out, codec_options={"kbps": 12}, split="music", workers=1))
    return out


def test_demucs_separation_is_scored_as_museval_scores_demucs_own_separator(music_opus, tmp_path):
    import museval

    checkpoint = tmp_path / "repo" / "tinyhtd.th"
    save_tiny_htdemucs(checkpoint)
    result = run("eval", str(music_opus), "--task", "separation", "--model", f"demucs:{checkpoint}")
    assert result.returncode == 0, result.stderr
    assert "bsseval_sdr" in result.stdout
    recorded = json.loads((music_opus / "eval-separation.json").read_text())
    assert recorded["model"] == f"demucs:{checkpoint}"

    # The reference: demucs's own Separator, loading the same file from a local repository,
    # on the same decoded mixture, with the same shifts drawn from the same seed.
    separator = demucs_api.Separator(model="tinyhtd", repo=checkpoint.parent, shifts=1, overlap=0.25, device="cpu")
    sample = next(iter(lossyds.open_dataset(music_opus)))
    random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, separated = separator.separate_tensor(sample["audio"], sample["sample_rate"])
    stems = {name: tensor.numpy() for name, tensor in sample["stems"].items()}
    names = list(stems)
    rate = sample["sample_rate"]
    references = np.stack([stems[n].T for n in names])
    estimates = np.stack([separated[n].numpy()[:, : references.shape[1]].T for n in names])
    direct = museval.evaluate(references, estimates, win=2 * rate, hop=rate * 3 // 2)
    per_sample = next(s for s in recorded["samples"] if s["key"] == sample["key"])
    for i, name in enumerate(names):
        for metric, table in zip(("SDR", "ISR", "SIR", "SAR"), direct):
            expected = float(np.nanmedian(table[i]))
            assert per_sample["bsseval_per_stem"][name][metric] == pytest.approx(expected, abs=1e-4), (name, metric)
        assert per_sample["bsseval_sdr_frames"][name] == pytest.approx(
            [v for v in direct[0][i] if not np.isnan(v)], abs=1e-4
        )
    # The study's aggregate: the mean over every non-NaN frame of every stem (one track here).
    assert recorded["bsseval"]["sdr_mean_over_frames"] == pytest.approx(float(np.nanmean(direct[0])), abs=1e-4)
    # The plain SDR sits beside it, from the same estimates.
    plain = {
        n: 10 * np.log10(np.sum(stems[n] ** 2) / np.sum((stems[n] - estimates[i].T) ** 2)) for i, n in enumerate(names)
    }
    for name in names:
        assert recorded["sdr_per_stem"][name] == pytest.approx(plain[name], abs=1e-3)


def test_mono_48khz_mixture_is_converted_as_demucs_converts_it(tmp_path):
    """A mono mixture at 48 kHz: demucs's Separator converts it to the model's 44.1 kHz stereo;
    lossyds's estimates, brought back to the mixture's rate and channels, match them converted
    back the same way."""
    from demucs.audio import convert_audio

    from lossyds.eval.demucs_models import DemucsSeparator

    checkpoint = tmp_path / "repo" / "tinyhtd.th"
    save_tiny_htdemucs(checkpoint)
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal((1, 48000 * 3))).astype(np.float32)
    ours = DemucsSeparator(str(checkpoint), torch.device("cpu"))(mixture, 48000)
    separator = demucs_api.Separator(model="tinyhtd", repo=checkpoint.parent, shifts=1, overlap=0.25, device="cpu")
    random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, separated = separator.separate_tensor(torch.from_numpy(mixture), 48000)
    for name in STEMS:
        assert ours[name].shape == mixture.shape and ours[name].dtype == np.float32
        expected = convert_audio(separated[name], 44100, 48000, 1)[..., : mixture.shape[-1]].numpy()
        np.testing.assert_allclose(ours[name][..., : expected.shape[-1]], expected, atol=1e-5)
    with pytest.raises(UsageError, match="2-channel or mono audio; this mixture has 3 channels"):
        DemucsSeparator(str(checkpoint), torch.device("cpu"))(np.zeros((3, 48000), np.float32), 48000)


def test_demucs_refuses_a_model_without_the_builds_stems(music_opus, tmp_path):
    checkpoint = tmp_path / "two.th"
    save_tiny_htdemucs(checkpoint, sources=["vocals", "accompaniment"])
    with pytest.raises(UsageError, match=r"separates vocals, accompaniment; .*bass, drums, other are not"):
        evaluate(music_opus, "separation", f"demucs:{checkpoint}", cores=0)


def test_named_demucs_model_comes_only_from_the_torch_cache(music_opus, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UsageError, match=r"955717e8-8726e21a\.th.*dl\.fbaipublicfiles\.com.*checkpoints"):
        evaluate(music_opus, "separation", "demucs:htdemucs", cores=0)
    with pytest.raises(UsageError, match="no pretrained model 'nosuch'.*htdemucs"):
        evaluate(music_opus, "separation", "demucs:nosuch", cores=0)
    # A file under the right name whose bytes are not the published model's is refused by its
    # sha256 prefix before it is unpickled.
    save_tiny_htdemucs(tmp_path / "torch" / "hub" / "checkpoints" / "955717e8-8726e21a.th")
    with pytest.raises(UsageError, match="(?i)checksum"):
        evaluate(music_opus, "separation", "demucs:htdemucs", cores=0)
    with pytest.raises(UsageError, match="no such checkpoint"):
        evaluate(music_opus, "separation", f"demucs:{tmp_path / 'absent.th'}", cores=0)
    with pytest.raises(UsageError, match="is a folder"):
        evaluate(music_opus, "separation", f"demucs:{tmp_path}", cores=0)
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="is not a demucs checkpoint"):
        evaluate(music_opus, "separation", f"demucs:{tmp_path / 'junk.th'}", cores=0)
