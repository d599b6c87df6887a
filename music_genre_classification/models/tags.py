"""The top tags of a clip (moods, eras, instruments, styles) from musicnn trained on the Million Song Dataset.

Tags always come from audio, through musicnn's own 16 kHz front end (models/musicnn.py), whatever route or kind
of model tells the genre: through the spectrogram adapter they drift (docs/musicnn.md), so a stored spectrogram
(.npy) has no tags.
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from music_genre_classification.data.audio import SILENCE_PEAK, AudioError, decode_blocks, waveform
from music_genre_classification.models.musicnn import MSD_TAGS, MusicnnBackbone, load_musicnn, resample_for_musicnn

Tags = list[tuple[str, float]]  # (tag, probability), most likely first
TOP_TAGS = 5
BLOCK_S = 30.0  # audio is tagged 30 s at a time (10 patches of 3 s), so a long file never sits in memory whole
FFMPEG_RATE = 44100  # the rate ffmpeg decodes files soundfile cannot read at; musicnn's resampler takes it to 16 kHz
PATCH_S = 3.0  # musicnn's patch
NO_SPECTROGRAM_TAGS = "tags come from audio only; a stored spectrogram (.npy) has none"


@lru_cache(maxsize=1)
def msd_backbone() -> MusicnnBackbone:
    """The MSD musicnn, loaded once per process."""
    return load_musicnn("msd")


def audio_tags(source: str | Path | np.ndarray, sample_rate: int | None = None, top: int = TOP_TAGS) -> Tags:
    """The `top` MSD tags of an audio file, or of a waveform at `sample_rate`, with their probabilities (the mean
    over the clip's 3-s patches), most likely first; an AudioError for a spectrogram, unreadable or silent audio."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(MSD_TAGS):
        raise ValueError(f"top must be a whole number from 1 to {len(MSD_TAGS)}, not {top!r}")
    if isinstance(source, str | os.PathLike):
        if str(source).endswith(".npy"):
            raise AudioError(f"{source}: {NO_SPECTROGRAM_TAGS}")
        rate = _native_rate(Path(source))
        blocks, name = decode_blocks(source, rate, BLOCK_S), str(source)
    else:
        rate = int(sample_rate) if isinstance(sample_rate, int | float) and not isinstance(sample_rate, bool) else 0
        blocks, name = [waveform(source, sample_rate, rate)], "waveform"  # mono, checked, not resampled
    backbone, total, patches, peak = msd_backbone(), torch.zeros(len(MSD_TAGS)), 0, 0.0
    with torch.inference_mode():
        for block in blocks:
            if not len(block) or (patches and len(block) < PATCH_S * rate):  # a short tail: mostly padding
                continue
            peak = max(peak, float(np.abs(block).max()))
            wave = resample_for_musicnn(torch.from_numpy(np.ascontiguousarray(block)), rate)
            out = backbone(wave)
            total += out.patch_tags.sum(0)
            patches += len(out.patch_tags)
    if not patches or peak < SILENCE_PEAK:
        raise AudioError(f"{name}: silent or empty audio has no tags")
    mean = total / patches
    best = mean.topk(top)
    return [(MSD_TAGS[i], round(float(p), 4)) for p, i in zip(best.values, best.indices.tolist())]


def _native_rate(path: Path) -> int:
    """A file's own rate when soundfile reads it (no resampling before musicnn's), else the rate ffmpeg gives."""
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return FFMPEG_RATE


def format_tags(tags: Tags, separator: str = ", ", joiner: str = " ") -> str:
    """'rock 0.62, guitar 0.41' (for people), or with ';' and ':' 'rock:0.62;guitar:0.41' (for a table's cell)."""
    return separator.join(f"{tag}{joiner}{p:.2f}" for tag, p in tags)
