"""Clips in GTZAN layout (<root>/<genre>/<clip>.<ext>), their spectrograms, and crop datasets (the cache: cache.py)."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from music_genre_classification.data.audio import AudioError, decode_blocks, is_audio_file
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams, track_spectrograms

T = TypeVar("T")


class DataError(ValueError):
    """A dataset that cannot be used as asked; the message is one line meant for the user."""


@dataclass(frozen=True)
class Clip:
    id: str  # "<genre>/<file stem>" (a manifest's path), the key used by splits
    genre: str
    path: Path
    artist: str | None = None  # from a manifest's artist column: split.group_by=artist keeps each on one side
    part: str | None = None  # from a manifest's split column: split=manifest


def is_spectrogram_folder(root: Path) -> bool:
    return (Path(root) / "params.json").is_file()


def scan_clips(root: str | Path, genres: list[str]) -> list[Clip]:
    """Every clip under <root>/<genre>/ for the given genres: .npy spectrograms if params.json is there, else audio."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    wanted = (lambda p: p.suffix == ".npy") if is_spectrogram_folder(root) else is_audio_file
    clips = [
        Clip(f"{genre}/{path.stem}", genre, path)
        for genre in genres
        for path in sorted((root / genre).glob("*"))
        if path.is_file() and wanted(path)
    ]
    if not clips:
        raise DataError(f"{root}: no clips found (expected <root>/<genre>/<clip> for genres {', '.join(genres)})")
    return clips


def params_key(params: SpectrogramParams) -> str:
    return hashlib.sha1(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def audio_spectrogram(path: Path, front_end: LogMel) -> torch.Tensor:
    """An audio file's spectrogram: its windows' spectrograms side by side (one window for a GTZAN clip)."""
    blocks = decode_blocks(path, front_end.params.sample_rate, front_end.params.window_s)
    return torch.cat([spec for _, _, spec in track_spectrograms(blocks, front_end, str(path))], dim=1)


def load_clips(clips: list[Clip], load: Callable[[Clip], T], desc: str, bar: bool) -> tuple[list[Clip], list[T]]:
    """`load(clip)` for every clip that can be read; unreadable ones are skipped with one warning line."""
    kept, values, skipped = [], [], []
    for clip in tqdm(clips, desc=desc, unit="clip", disable=not bar, leave=False):
        try:
            values.append(load(clip))
            kept.append(clip)
        except (AudioError, ValueError, OSError) as err:
            skipped.append(f"{clip.path.name} ({str(err).removeprefix(str(clip.path) + ': ')})")
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable clip(s): {'; '.join(skipped)}")
    if not kept:
        raise DataError("no readable clip in the dataset")
    return kept, values


def is_fresh(cached: Path | None, clip: Clip) -> bool:
    """A cached result computed from the clip's audio as it is now."""
    return bool(cached) and cached.is_file() and cached.stat().st_mtime >= clip.path.stat().st_mtime


def save_atomic(path: Path, save: Callable[[Path], None]) -> None:
    """Write through a partial file, so that an interrupted run never leaves a half-written file under the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    save(partial)
    partial.replace(path)


def clip_spectrogram(path: Path, front_end: LogMel) -> torch.Tensor:
    """A clip's spectrogram [n_mels, columns]: a stored .npy one, or computed from its audio."""
    if path.suffix == ".npy":
        spec = np.load(path)
        if spec.ndim != 2 or spec.shape[0] != front_end.params.n_mels:
            raise ValueError(f"spectrogram of shape {spec.shape}, expected [{front_end.params.n_mels}, columns]")
        return torch.from_numpy(spec.astype(np.float32))
    return audio_spectrogram(path, front_end)


class RandomCrops(Dataset):
    """`crops_per_clip` random crops of `crop` columns from every clip, drawn anew each epoch."""

    def __init__(self, specs: list[torch.Tensor], labels: list[int], crop: int, crops_per_clip: int = 1):
        self.specs, self.labels, self.crop, self.crops_per_clip = specs, labels, crop, crops_per_clip

    def __len__(self) -> int:
        return len(self.specs) * self.crops_per_clip

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        spec = self.specs[index % len(self.specs)]
        if spec.shape[1] < self.crop:
            spec = torch.nn.functional.pad(spec, (0, self.crop - spec.shape[1]))
        start = int(torch.randint(0, spec.shape[1] - self.crop + 1, ()))
        return spec[None, :, start : start + self.crop], self.labels[index % len(self.specs)]


class WholeClips(Dataset):
    """Whole clips for validation and test; the model averages over crops covering each one."""

    def __init__(self, specs: list[torch.Tensor], labels: list[int]):
        self.specs, self.labels = specs, labels

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.specs[index], self.labels[index]


def collate_clips(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [spec for spec, _ in batch], torch.tensor([label for _, label in batch])
