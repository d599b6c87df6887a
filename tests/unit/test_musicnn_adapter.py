"""The fixed adapter from a stored GTZAN spectrogram to musicnn's input, against musicnn's own front end on the same
clip's real audio (data/dataset: its spectrogram and its wav)."""

import json

import numpy as np
import soundfile as sf
import torch

from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.models.musicnn import N_MELS, MusicnnFrontEnd, load_musicnn, resample_for_musicnn
from music_genre_classification.models.musicnn_adapter import as_params, spectrogram_to_musicnn_mel

CLIP = "reggae/reggae.00001"  # a full-length clip of the train list that has audio


def test_a_stored_clip_becomes_30_s_of_musicnn_frames_at_its_long_term_level(real_dataset):
    params = json.loads((real_dataset / "spectrograms" / "params.json").read_text())
    stored = np.load(real_dataset / "spectrograms" / f"{CLIP}.npy")
    mel = spectrogram_to_musicnn_mel(stored, params)
    assert mel.shape == (1876, N_MELS) and mel.dtype == np.float32  # 1 + 30 s * 62.5 frames, as from audio
    wave, rate = sf.read(real_dataset / "genres_original" / f"{CLIP}.wav", dtype="float32")
    real = MusicnnFrontEnd()(resample_for_musicnn(torch.from_numpy(wave), rate)).numpy()
    n = min(len(real), len(mel))
    power = [((10 ** m[:n] - 1) / 1e4).mean(0) for m in (real, mel)]  # each band's mean power over the clip
    level = 10 * np.log10(power[0] / power[1])
    assert np.median(np.abs(level)) < 3.0  # dB: the long-term spectrum survives (the clip's level is not stored)
    assert np.corrcoef(real[:n].mean(0), mel[:n].mean(0))[0, 1] > 0.95


def test_params_may_be_a_params_json_or_spectrogram_settings_and_the_backbone_takes_the_mel():
    assert as_params({"sample_rate": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "frames": 387}) == (
        SpectrogramParams()
    )
    wave = torch.from_numpy(np.random.default_rng(0).normal(scale=0.1, size=22050 * 7).astype(np.float32))
    spec = LogMel()(wave)
    mel = spectrogram_to_musicnn_mel(spec, SpectrogramParams().to_dict())
    assert abs(len(mel) - 7 * 62.5) <= 2
    backbone = load_musicnn("msd")
    with torch.inference_mode():
        via_mel = backbone.from_mel(torch.from_numpy(mel))
        audio_mel = backbone.frontend(resample_for_musicnn(wave, 22050))
        assert torch.equal(backbone.from_mel(audio_mel).tags, backbone(wave, sample_rate=22050).tags)
    assert via_mel.patch_tags.shape == (2, 50)  # two whole 3-s patches in 7 s
