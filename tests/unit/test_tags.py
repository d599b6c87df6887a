"""musicnn's MSD tags of audio (models/tags.py): from real GTZAN clips through musicnn's own front end."""

import numpy as np
import pytest
import soundfile as sf

from music_genre_classification.data.audio import AudioError
from music_genre_classification.models.musicnn import MSD_TAGS
from music_genre_classification.models.tags import audio_tags, format_tags


@pytest.fixture(scope="module")
def metal_clip(real_dataset, tmp_path_factory):
    """The first 6 s of metal.00000, at its own 22050 Hz."""
    wave, rate = sf.read(
        real_dataset / "genres_original" / "metal" / "metal.00000.wav", dtype="float32", frames=6 * 22050
    )
    path = tmp_path_factory.mktemp("tags") / "metal.wav"
    sf.write(path, wave, rate)
    return path, wave, rate


def test_tags_of_a_file_are_ranked_probabilities_of_msd_tags(metal_clip):
    path, _, _ = metal_clip
    tags = audio_tags(path, top=7)
    assert len(tags) == 7
    names, probabilities = [t for t, _ in tags], [p for _, p in tags]
    assert set(names) <= set(MSD_TAGS) and len(set(names)) == 7
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert {"metal", "heavy metal", "hard rock", "rock"} & set(names[:3])  # a metal clip sounds like one


def test_a_waveform_gives_the_tags_of_its_file(metal_clip):
    path, wave, rate = metal_clip
    assert audio_tags(wave, sample_rate=rate) == audio_tags(path)


def test_no_tags_for_a_spectrogram_or_silence(tmp_path):
    spectrogram = tmp_path / "clip.npy"
    np.save(spectrogram, np.zeros((128, 387), np.float32))
    with pytest.raises(AudioError, match="audio only"):
        audio_tags(spectrogram)
    with pytest.raises(AudioError, match="silent"):
        audio_tags(np.zeros(10 * 16000, np.float32), sample_rate=16000)


def test_format_tags():
    tags = [("rock", 0.6234), ("guitar", 0.41)]
    assert format_tags(tags) == "rock 0.62, guitar 0.41"
    assert format_tags(tags, ";", ":") == "rock:0.62;guitar:0.41"
