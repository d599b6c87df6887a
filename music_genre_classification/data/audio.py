"""Reading audio files as mono float32 waveforms at the model's sample rate."""

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
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


def decode_blocks(path: str | Path, sample_rate: int = 22050, block_s: float = 30.0) -> Iterator[np.ndarray]:
    """Decode a file as mono float32 blocks of about `block_s` at `sample_rate`: soundfile first, then ffmpeg.

    Block by block, so that a track of many hours never sits in memory whole at its own rate and channel count.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    failure, decoded = None, False
    try:
        file_rate = sf.info(path).samplerate
        # whole seconds per block, so that resampling each block gives exactly block_s * sample_rate samples
        for block in sf.blocks(path, blocksize=round(block_s) * file_rate, dtype="float32", always_2d=True):
            decoded = True
            yield resample(block, file_rate, sample_rate)
        return
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        if decoded:
            raise AudioError(f"{path}: not a readable audio file ({_first_line(err)})") from None
        failure = err
    if shutil.which("ffmpeg") is None:
        if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
            raise AudioError(f"{path}: not a readable audio file ({_first_line(failure)})")
        raise AudioError(f"{path}: {path.suffix or 'this'} files need ffmpeg, which is not installed")
    yield from _ffmpeg_blocks(path, sample_rate, block_s)


def load_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """A whole file as one mono waveform at `sample_rate`."""
    blocks = list(decode_blocks(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels) as soundfile gives it
        wave = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1)
    if from_rate == to_rate:
        return wave
    return AF.resample(torch.from_numpy(wave), int(from_rate), int(to_rate)).numpy()


def _ffmpeg_blocks(path: Path, sample_rate: int, block_s: float) -> Iterator[np.ndarray]:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    command += ["-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "-"]
    block_bytes = 4 * round(block_s * sample_rate)
    # stderr goes to a file: a pipe nobody reads could fill up with a damaged file's messages and stall ffmpeg
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        decoded = 0
        try:
            while chunk := process.stdout.read(block_bytes):
                decoded += len(chunk)
                yield np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype=np.float32).copy()
        finally:  # also when the consumer stops early: no ffmpeg is left behind
            process.stdout.close()
            if process.poll() is None:
                process.kill()
            process.wait()
        if process.returncode != 0 and not decoded:
            errors.seek(0)
            reason = _first_line(errors.read().decode(errors="replace")) or "no audio stream"
            raise AudioError(f"{path}: not a readable audio file ({reason})")


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else ""
