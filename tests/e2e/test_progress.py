"""Waits of more than a few seconds say what is going on: a long file's windows, a library map's layout."""

import numpy as np
import soundfile as sf
from helpers.audio import SR, tone

from music_genre_classification.models.classifier import GenreClassifier


def test_a_long_file_shows_its_windows_done_on_stderr(trained, tmp_path, cli_in_process):
    six_minutes = np.concatenate([tone("low", seed, seconds=30.0) for seed in range(12)])
    sf.write(tmp_path / "long.wav", six_minutes, SR, subtype="PCM_16")
    result = cli_in_process("infer", trained["checkpoint"], "long.wav", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("genre: low")
    assert "long.wav: read" in result.stderr and "12/12" in result.stderr and "windows" in result.stderr  # tqdm's bar
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"])
    counted = classifier.predict(tmp_path / "long.wav", progress=True)  # the model's windows counted 8 at a time
    assert counted.probabilities == classifier.predict(tmp_path / "long.wav").probabilities  # the same figures

    sf.write(tmp_path / "short.wav", tone("low", 3), SR)  # a clip: an answer at once, no bar
    short = cli_in_process("infer", trained["checkpoint"], "short.wav", cwd=tmp_path)
    assert short.returncode == 0 and short.stderr == ""
