"""Reading audio files as mono float32 waveforms at the model's sample rate."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".webm")
SOUNDFILE_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")
MIN_DURATION_S = 1.0
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this a clip carries no music to classify


class AudioError(ValueError):
    """A file or waveform that cannot be classified; the message is one line meant for the user."""


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def load_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """Decode any supported file to a mono waveform at `sample_rate` (soundfile first, then ffmpeg)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
        wave = data.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        if shutil.which("ffmpeg") is None:
            if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
                raise AudioError(f"{path}: not a readable audio file ({_first_line(err)})") from None
            raise AudioError(f"{path}: {path.suffix or 'this'} files need ffmpeg, which is not installed") from None
        return _ffmpeg_decode(path, sample_rate)
    return resample(wave, file_rate, sample_rate)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels) as soundfile gives it
        wave = wave.mean(axis=1)
    if from_rate == to_rate:
        return wave
    return AF.resample(torch.from_numpy(wave), int(from_rate), int(to_rate)).numpy()


def check_clip(wave: np.ndarray, sample_rate: int, name: str = "audio") -> None:
    """Refuse clips too short or too quiet to classify, instead of inventing a genre."""
    if wave.size < MIN_DURATION_S * sample_rate:
        raise AudioError(f"{name}: too short ({wave.size / sample_rate:.2f} s; at least {MIN_DURATION_S:g} s needed)")
    if not np.isfinite(wave).all():
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    if np.abs(wave).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent")


def _ffmpeg_decode(path: Path, sample_rate: int) -> np.ndarray:
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-f",
        "f32le",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-",
    ]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        reason = _first_line(result.stderr.decode(errors="replace")) or "no audio stream"
        raise AudioError(f"{path}: not a readable audio file ({reason})")
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else ""
