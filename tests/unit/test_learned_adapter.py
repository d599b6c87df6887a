"""The learned spectrogram adapter: the shipped one loads, maps a stored GTZAN spectrogram to musicnn's input, and is
chosen by name beside the fixed one."""

import json

import numpy as np
import pytest
import torch

from music_genre_classification.models.musicnn import N_MELS, load_musicnn
from music_genre_classification.models.musicnn_adapter import (
    ADAPTERS,
    LEARNED_ADAPTER_PATH,
    LearnedAdapter,
    load_learned_adapter,
    save_learned_adapter,
    spectrogram_adapter,
    spectrogram_to_musicnn_mel,
)


@pytest.fixture(scope="module")
def stored(real_dataset) -> tuple[np.ndarray, dict]:
    spectrograms = real_dataset / "spectrograms"
    return np.load(spectrograms / "metal" / "metal.00000.npy"), json.loads((spectrograms / "params.json").read_text())


def test_the_shipped_learned_adapter_maps_a_stored_spectrogram_to_musicnn_input(stored):
    torch.set_num_threads(2)
    spectrogram, params = stored
    assert LEARNED_ADAPTER_PATH.is_file()
    fixed = spectrogram_adapter("fixed")(spectrogram, params)
    learned = spectrogram_adapter("learned")(spectrogram, params)
    assert learned.shape == fixed.shape == (1876, N_MELS)  # 30 s at 62.5 frames/s
    assert np.isfinite(learned).all() and learned.min() >= 0
    assert not np.allclose(learned, fixed)  # trained: it corrects the fixed adapter
    with torch.inference_mode():  # and the backbone takes it
        out = load_musicnn("msd").from_mel(torch.from_numpy(learned), max_patches=1)
    assert torch.isfinite(out.penultimate).all()


def test_an_untrained_learned_adapter_is_the_fixed_one_and_round_trips(stored, tmp_path):
    spectrogram, params = stored
    model = LearnedAdapter().eval()
    fixed = spectrogram_to_musicnn_mel(spectrogram, params)
    np.testing.assert_allclose(model.adapt(spectrogram, params), fixed, atol=1e-6)
    with torch.no_grad():
        model.local[-1].bias.fill_(0.25)
    save_learned_adapter(model, tmp_path / "adapter.safetensors")
    again = load_learned_adapter(tmp_path / "adapter.safetensors")
    np.testing.assert_allclose(again.adapt(spectrogram, params), model.adapt(spectrogram, params), atol=1e-6)


def test_adapters_are_chosen_by_name():
    assert ADAPTERS == ("fixed", "learned")
    with pytest.raises(ValueError, match="unknown spectrogram adapter 'inverse'"):
        spectrogram_adapter("inverse")
    with pytest.raises(FileNotFoundError, match="learned adapter missing"):
        load_learned_adapter("/nonexistent/adapter.safetensors")


def test_the_probe_embeds_through_the_adapter_its_config_names(stored):
    from music_genre_classification.config import UserError
    from music_genre_classification.models.musicnn_probe import MusicnnEmbedder

    spectrogram, _ = stored
    fixed, learned = (MusicnnEmbedder("spectrogram", max_patches=1, adapter=name) for name in ADAPTERS)
    assert learned.settings()["adapter"] == "learned"  # in the checkpoint and the embedding cache's key
    (a,), (b,) = (
        fixed.embeddings([spectrogram.astype(np.float32)]),
        learned.embeddings([spectrogram.astype(np.float32)]),
    )
    assert not np.allclose(a.vectors["mean_pool"], b.vectors["mean_pool"])
    with pytest.raises(UserError, match="adapter must be one of fixed, learned"):
        MusicnnEmbedder("spectrogram", adapter="inverse")
