import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from helpers.audio import CLIP_S, SR, encode, tone

from music_genre_classification.data.audio import MIN_DURATION_S, AudioError, decode_blocks, load_audio
from music_genre_classification.data.dataset import audio_spectrogram
from music_genre_classification.data.spectrogram import (
    LogMel,
    SpectrogramParams,
    crop_starts,
    cut_windows,
    pad_to,
    track_spectrograms,
)


@pytest.mark.parametrize("clip", ["blues/blues.00000", "country/country.00002"])  # full 30-s clips
def test_front_end_reproduces_dataset_spectrograms_from_real_audio(real_dataset, clip):
    params = SpectrogramParams.from_dataset(real_dataset / "spectrograms" / "params.json")
    assert params == SpectrogramParams()  # the config defaults are the dataset's parameters
    ours = audio_spectrogram(real_dataset / "genres_original" / f"{clip}.wav", LogMel(params)).numpy()
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


def window_lengths(seconds: float, block_s: float = 7.0) -> list[float]:
    """Window lengths (s) that cut_windows makes of a track of `seconds` arriving in blocks of `block_s`."""
    wave = np.ones(round(seconds * SR), np.float32)
    step = round(block_s * SR)
    blocks = [wave[i : i + step] for i in range(0, len(wave), step)]
    return [len(w) / SR for w in cut_windows(blocks, SpectrogramParams())]


def test_windows_cover_a_track_exactly_and_fold_a_short_tail_in():
    assert window_lengths(180) == [30.0] * 6
    assert window_lengths(60.5) == [30.0, 30.5]  # a 0.5-s tail joins the last window
    short_tail = 60 + MIN_DURATION_S - 0.2  # too short to judge alone: no segment of its own
    assert window_lengths(short_tail) == [30.0, round(short_tail - 30, 6)]
    assert window_lengths(60 + MIN_DURATION_S) == [30.0, 30.0, MIN_DURATION_S]
    assert window_lengths(45, block_s=45) == [30.0, 15.0]
    assert window_lengths(10) == [10.0]


def test_long_stereo_files_are_decoded_in_exact_30_s_mono_blocks(tmp_path):
    left = tone("low", 1, seconds=75, sr=44100)
    sf.write(tmp_path / "long.flac", np.stack([left, 0.5 * left], axis=1), 44100)
    blocks = list(decode_blocks(tmp_path / "long.flac", SR, block_s=30))
    assert [len(b) for b in blocks] == [30 * SR, 30 * SR, 15 * SR] and all(b.dtype == np.float32 for b in blocks)
    whole = load_audio(tmp_path / "long.flac")
    assert np.array_equal(whole, np.concatenate(blocks))
    reference = torchaudio.functional.resample(torch.from_numpy(0.75 * left), 44100, SR).numpy()  # in one go
    seams = np.zeros(len(whole), bool)
    for seam in (30 * SR, 60 * SR):  # each block is resampled alone: its edges differ for a few samples
        seams[seam - 32 : seam + 32] = True
    assert np.abs(whole - reference)[~seams].max() < 1e-4
    front_end = LogMel()
    for start in (0, 30 * SR, 60 * SR):
        ours, theirs = (front_end(torch.from_numpy(w[start : start + 30 * SR])) for w in (whole, reference))
        assert float((ours - theirs).abs().mean()) < 0.002  # the front end's parity tolerance


def test_window_spectrograms_have_their_place_in_the_track():
    track = np.concatenate([np.zeros(40 * SR, np.float32), tone("mid", 2, seconds=35)])  # silence, then music
    windows = track_spectrograms([track], LogMel())
    assert [(a, b) for a, b, _ in windows] == [(0.0, 30.0), (30.0, 60.0), (60.0, 75.0)]
    assert float(windows[0][2].max()) == 0 and float(windows[2][2].max()) > 0.9  # a silent window is all floor


def test_crops_cover_the_clip_and_short_clips_are_padded():
    assert crop_starts(387, 128, 64) == [0, 52, 104, 155, 207, 259]
    assert crop_starts(100, 128, 64) == [0]
    padded = pad_to(torch.ones(2, 128, 50), 128)
    assert padded.shape == (2, 128, 128) and padded[..., :50].min() == 1 and padded[..., 50:].abs().max() == 0


def test_banded_mel_matmul_equals_the_dense_filterbank():
    front_end = LogMel()
    power = torch.rand(300, 1025) ** 4  # spiky like a real power spectrum
    dense = power @ front_end.mel_filters
    assert torch.allclose(front_end.mel_power(power), dense, rtol=1e-5, atol=1e-7 * float(dense.max()))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"just some text, not audio\n" * 10, "is a text file, not audio")],
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
    for wave, message in [
        (np.zeros(65 * SR, np.float32), "silent"),
        (tone("low", 0, seconds=0.5), "too short"),
        (tone("low", 0, seconds=MIN_DURATION_S - 0.05), f"the model needs at least {MIN_DURATION_S:g} s"),
        (0.3 * np.random.default_rng(0).standard_normal(round(CLIP_S * SR)).astype(np.float32), "noise"),
        (np.zeros(0, np.float32), "too short"),
        (np.full(round(CLIP_S * SR), np.nan, np.float32), "NaN"),
    ]:
        with pytest.raises(AudioError, match=message):
            track_spectrograms([wave], LogMel())


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3", "OGG"])
def test_a_file_cut_off_yields_only_the_samples_decoded_and_a_warning(tmp_path, fmt):
    whole = encode(tone("mid", 1, seconds=30, sr=44100), fmt, sr=44100)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(whole[: len(whole) // 3])  # an unfinished download: its header still says 30 s
    decoded = decode_blocks(path, SR)
    wave = np.concatenate(list(decoded))
    assert 9 < len(wave) / SR < 11 and np.isfinite(wave).all()  # not 30 s of a stale buffer
    assert abs(decoded.duration_s - len(wave) / SR) < 1e-6 and "cut off" in decoded.warning
    assert track_spectrograms([wave], LogMel())[-1][1] == len(wave) / SR


def test_odd_sample_rates_are_resampled_fast_or_refused(tmp_path):
    sf.write(tmp_path / "odd.wav", tone("low", 1, seconds=4, sr=44101), 44101)  # exact: a 16 GB kernel
    assert abs(len(load_audio(tmp_path / "odd.wav")) - 4 * SR) <= 2
    with open(tmp_path / "odd.wav", "r+b") as f:  # the header now says 1000 Hz
        f.seek(24)
        f.write((1000).to_bytes(4, "little") + (2000).to_bytes(4, "little"))
    with pytest.raises(AudioError, match="sample rate 1000 Hz"):
        load_audio(tmp_path / "odd.wav")


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "is a PNG image"), (b"ID3\x03" + bytes(range(256)) * 4, "unknown format")],
)
def test_files_that_are_not_audio_say_what_they_are(tmp_path, content, words):
    (tmp_path / "song.mp3").write_bytes(content)
    with pytest.raises(AudioError, match=words) as err:
        load_audio(tmp_path / "song.mp3")
    assert "possibly a pipe" not in str(err.value)


def test_music_with_long_pauses_is_not_taken_for_noise():
    """Quiet columns (pauses, a fade, a recording between beeps) are flat at the floor: they must not count as noise."""
    pauses = np.zeros(20 * SR, np.float32)
    for start in range(0, 20, 4):  # 0.5 s of a chord every 4 s, silence between
        pauses[start * SR : start * SR + SR // 2] = tone("mid", start, seconds=0.5)
    windows = track_spectrograms([pauses], LogMel())
    assert windows[-1][1] == 20.0
    with pytest.raises(AudioError, match="noise"):  # while noise with the same pauses still is noise
        noise = np.where(pauses != 0, np.random.default_rng(1).standard_normal(pauses.size), 0).astype(np.float32)
        track_spectrograms([0.3 * noise], LogMel())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg to write the MP3")
def test_a_vbr_mp3_without_xing_header_and_a_chained_ogg_are_decoded_whole(tmp_path):
    """libsndfile stops at the length the first MP3 frame suggests (17 of 30 s here) and after the first of chained
    Ogg streams; everything there is must be decoded, and no 'cut off' warning given."""
    sr = 22050
    t = np.arange(30 * sr) / sr
    loud = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.random.default_rng(0).standard_normal(len(t))
    wave = np.where(t < 3, 0.001 * np.sin(2 * np.pi * 440 * t), loud).astype(np.float32)  # quiet first frames
    sf.write(tmp_path / "a.wav", wave, sr)
    command = ["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "libmp3lame", "-q:a", "2"]
    subprocess.run([*command, "-write_xing", "0", str(tmp_path / "vbr.mp3")], check=True)
    first, second = wave[: 12 * sr], wave[-12 * sr :]
    sf.write(tmp_path / "one.ogg", first, sr)
    sf.write(tmp_path / "two.ogg", second, sr)
    (tmp_path / "chained.ogg").write_bytes((tmp_path / "one.ogg").read_bytes() + (tmp_path / "two.ogg").read_bytes())
    for name, seconds in (("vbr.mp3", 30.0), ("chained.ogg", 24.0)):
        decoded = decode_blocks(tmp_path / name, sr)
        total = sum(len(block) for block in decoded) / sr
        assert abs(total - seconds) < 0.2 and decoded.warning is None, (name, total, decoded.warning)
