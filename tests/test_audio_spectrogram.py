import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, tone

from music_genre_classification.audio import AudioError, check_clip, load_audio
from music_genre_classification.dataset import audio_spectrogram
from music_genre_classification.spectrogram import LogMel, SpectrogramParams, clip_crops, crop_starts, window_bounds


@pytest.mark.parametrize("clip", ["blues/blues.00000", "country/country.00002"])  # full 30-s clips
def test_front_end_reproduces_dataset_spectrograms_from_real_audio(real_dataset, clip):
    params = SpectrogramParams.from_dataset(real_dataset / "spectrograms" / "params.json")
    assert params == SpectrogramParams()  # the config defaults are the dataset's parameters
    wave = load_audio(real_dataset / "genres_original" / f"{clip}.wav")
    ours = audio_spectrogram(wave, LogMel(params)).numpy()
    stored = np.load(real_dataset / "spectrograms" / f"{clip}.npy").astype(np.float32)
    assert ours.shape == stored.shape == (128, 387)
    assert np.abs(ours - stored).mean() < 0.002  # the dataset's own stated tolerance (it is quantised to 1/256)


def test_spectrogram_is_normalised_to_unit_range_and_about_12_9_columns_per_second():
    spec = LogMel()(torch.from_numpy(tone("mid", 0, seconds=10)))
    assert spec.shape[0] == 128 and abs(spec.shape[1] - 10 * 12.9) <= 1
    assert float(spec.min()) >= 0 and 0.9 < float(spec.max()) <= 1  # normalised over all frames, then picked


def test_stereo_and_odd_sample_rates_become_22050_hz_mono(tmp_path):
    mono = tone("low", 1, seconds=3, sr=44100)
    sf.write(tmp_path / "stereo.flac", np.stack([mono, mono], axis=1), 44100)
    sf.write(tmp_path / "odd.wav", tone("low", 1, seconds=3, sr=11025), 11025)
    for name in ("stereo.flac", "odd.wav"):
        wave = load_audio(tmp_path / name)
        assert wave.ndim == 1 and wave.dtype == np.float32 and abs(len(wave) - 3 * SR) <= 2


def test_windows_cover_a_track_exactly_and_fold_a_short_tail_in():
    params = SpectrogramParams()
    three_minutes = window_bounds(180 * SR, params)
    assert len(three_minutes) == 6 and three_minutes[0][0] == 0 and three_minutes[-1][1] == 180 * SR
    assert all(a[1] == b[0] for a, b in zip(three_minutes, three_minutes[1:]))
    assert window_bounds(int(60.5 * SR), params)[-1] == (30 * SR, int(60.5 * SR))  # 0.5-s tail joins the last
    assert window_bounds(45 * SR, params) == [(0, 30 * SR), (30 * SR, 45 * SR)]


def test_crops_cover_the_clip_and_short_clips_are_padded():
    assert crop_starts(387, 128, 64) == [0, 52, 104, 155, 207, 259]
    assert crop_starts(100, 128, 64) == [0]
    assert clip_crops(torch.ones(128, 50), 128, 64).shape == (1, 1, 128, 128)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"just some text, not audio\n" * 10, "not a readable audio file")],
)
def test_unreadable_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "song.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert "\n" not in str(err.value)


def test_missing_file_silence_and_too_short_are_refused(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.mp3")
    with pytest.raises(AudioError, match="silent"):
        check_clip(np.zeros(5 * SR, np.float32), SR)
    with pytest.raises(AudioError, match="too short"):
        check_clip(tone("low", 0, seconds=0.5), SR)
