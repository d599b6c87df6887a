"""Audio that is not music: silent windows skipped, files without music refused, speech and tones flagged."""

import json

import numpy as np
import soundfile as sf
from helpers.audio import CLIP_S, SR, encode, needs_espeak, speech, tone
from helpers.processes import Server, run_cli

from music_genre_classification.data.music_check import window_verdict
from music_genre_classification.data.spectrogram import LogMel
from music_genre_classification.models.classifier import GenreClassifier


def verdict(wave: np.ndarray) -> str | None:
    import torch

    return window_verdict(wave, LogMel()(torch.from_numpy(wave)))


@needs_espeak
def test_speech_tones_and_noise_are_not_music_and_a_real_clip_is(tmp_path, real_dataset):
    t = np.arange(int(CLIP_S * SR)) / SR
    assert verdict(sf.read(speech(tmp_path / "speech.wav"), dtype="float32")[0]) == "speech"
    assert verdict((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)) == "tone"
    assert verdict(np.full(t.size, 0.2, np.float32)) == "silence"  # a DC offset only
    assert verdict((0.1 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)) == "noise"
    clip = sf.read(real_dataset / "genres_original" / "jazz" / "jazz.00000.wav", dtype="float32")[0]
    assert verdict(clip) is None


def test_silent_windows_are_skipped_and_a_silent_file_refused(trained, tmp_path):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"])
    wave = np.concatenate([np.zeros(90 * SR, np.float32), tone("high", 3, 30.0)])
    prediction = classifier.predict(wave, SR)
    assert prediction.genre == "high" and prediction.music
    assert [s.genre for s in prediction.segments] == [None, None, None, "high"]
    assert prediction.segments[0].not_music == "silent"
    sf.write(tmp_path / "dc.wav", np.full(int(CLIP_S * SR), 0.3, np.float32), SR)
    result = run_cli("infer", "--model_path", str(trained["checkpoint"]), "--audio_path", "dc.wav", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == "error: dc.wav: the audio is silent (nothing audible)"


def test_hiss_then_music_is_judged_by_the_music(trained):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"])
    hiss = (0.003 * np.random.default_rng(1).standard_normal(90 * SR)).astype(np.float32)
    prediction = classifier.predict(np.concatenate([hiss, tone("low", 4, 30.0)]), SR)
    assert prediction.genre == "low" and prediction.music
    assert [s.genre for s in prediction.segments][:3] == [None, None, None]


@needs_espeak
def test_infer_flags_speech_in_its_column_and_a_warning(trained, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    speech(folder / "talk.wav")
    sf.write(folder / "song.wav", tone("mid", 5), SR)
    out = tmp_path / "out.jsonl"
    args = ["infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(folder)]
    result = run_cli(*args, "--output_path", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {json.loads(line)["path"].split("/")[-1]: json.loads(line) for line in out.read_text().splitlines()}
    assert rows["talk.wav"]["not_music"] == "speech-like" and rows["song.wav"]["not_music"] == ""
    assert f"warning: {folder / 'talk.wav'}: does not sound like music (speech-like)" in result.stderr
    single = run_cli("infer", "--model_path", str(trained["checkpoint"]), "--audio_path", "in/talk.wav", cwd=tmp_path)
    assert single.stdout.startswith("genre: not sure: does not sound like music (speech-like)")
    assert "warning: in/talk.wav: does not sound like music (speech-like)" in single.stderr


@needs_espeak
def test_http_answer_says_not_music(trained, tmp_path):
    import httpx

    server = Server(tmp_path / "serve", "--model_path", str(trained["checkpoint"]))
    try:
        server.wait_ready()
        with open(speech(tmp_path / "talk.wav"), "rb") as f:
            body = httpx.post(f"{server.url}/predict", files={"file": ("talk.wav", f)}, timeout=120).json()
        assert body["music"] is False and body["not_music"] == "speech-like"
        song = httpx.post(
            f"{server.url}/predict", files={"file": ("s.wav", encode(tone("low", 6), "WAV"))}, timeout=120
        )
        assert song.json()["music"] is True and song.json()["not_music"] is None
    finally:
        server.stop()
