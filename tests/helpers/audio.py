"""Audio the tests write: synthetic separable "genres" (a tune of chords low, mid or high in frequency), as
waveforms, as the bytes of any format, as a GTZAN-shaped folder, and feature tables shaped like
features_30_sec.csv."""

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from music_genre_classification.data.audio import MIN_DURATION_S

GENRES = ["low", "mid", "high"]
SR = 22050
CLIP_S = MIN_DURATION_S + 2.0  # a short clip that the model still judges
# the header of `infer`'s table of a folder (.csv, .jsonl), for a model of GENRES: as for any model kind
INFER_COLUMNS = ["path", "genre", *GENRES, "duration_s", "error", "warning", "not_music", "model_sha256"]
NEWS = "Good evening. Here is the news. The council approved the budget for the new bus lines today. "
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def tone(genre: str, seed: int, seconds: float = CLIP_S, sr: int = SR) -> np.ndarray:
    """A clip whose spectrum tells its genre: a tune of chords low, mid or high in frequency, plus noise. The notes
    change and fade like a played instrument's, so that it sounds like music to data/music_check.py."""
    rng = np.random.default_rng(seed)
    base = {"low": 110.0, "mid": 700.0, "high": 3000.0}[genre] * rng.uniform(0.9, 1.1)
    t = np.arange(int(seconds * sr)) / sr
    note_s = rng.uniform(0.5, 0.9)
    note = (t // note_s).astype(int)
    # a tune within a fifth of its base, so that the registers of the genres never overlap (even with harmonics)
    steps = rng.choice([1, 9 / 8, 5 / 4, 4 / 3, 3 / 2], size=note[-1] + 1 if len(t) else 1)
    phase = 2 * np.pi * np.cumsum(base * steps[note]) / sr
    fade = 0.1 + 0.9 * np.exp(-(t % note_s) / note_s * 3)
    wave = fade * sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in (1, 1.5, 2))
    # the noise is drawn at 22050 Hz whatever `sr`, so that every sample rate sounds the same after resampling
    noise_t = np.arange(int(seconds * SR)) / SR
    noise = np.interp(t, noise_t, rng.standard_normal(noise_t.size))
    hit = np.exp(-(t % note_s) / 0.03)  # a drum hit (a burst of the noise) on each note
    return (0.2 * wave + (0.02 + 0.05 * hit) * noise).astype(np.float32)


def speech(path: Path, text: str = NEWS * 2) -> Path:
    """Synthetic speech (espeak-ng) as a WAV file: audio that is not music."""
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True, capture_output=True)
    return path


def encode(wave: np.ndarray, format: str, subtype: str | None = None, sr: int = SR) -> bytes:
    """A waveform as the bytes of an audio file (WAV, FLAC, OGG, MP3...), as soundfile writes it."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format=format, subtype=subtype)
    return buffer.getvalue()


def write_gtzan(root: Path, clips_per_genre: int = 8, seconds: float = CLIP_S) -> Path:
    for g, genre in enumerate(GENRES):
        (root / genre).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_genre):
            sf.write(root / genre / f"{genre}.{i:05d}.wav", tone(genre, 100 * g + i, seconds), SR)
    return root


def feature_rows(genre: str, count: int, seed: int) -> np.ndarray:
    """Rows of the 57 features, each shifted by the genre: together they tell the genres apart."""
    return np.random.default_rng(seed).normal(size=(count, 57)) + 1.5 * GENRES.index(genre)


def write_feature_table(path: Path, clips_per_genre: int, chunks: int = 0, seed: int = 0) -> Path:
    """A features table laid out as features_30_sec.csv, or as features_3_sec.csv with `chunks` rows per clip."""
    from music_genre_classification.data.features import TABLE_COLUMNS

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE_COLUMNS)
        for g, genre in enumerate(GENRES):
            for i in range(clips_per_genre):
                names = [f"{genre}.{i:05d}.{k}.wav" for k in range(chunks)] or [f"{genre}.{i:05d}.wav"]
                for name, row in zip(names, feature_rows(genre, len(names), seed + 100 * g + i)):
                    writer.writerow([name, 66150 if chunks else 661500, *row, genre])
    return path
