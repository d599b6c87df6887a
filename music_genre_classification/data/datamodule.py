"""LightningDataModule over a labelled collection (folders of genres or a manifest): spectrograms, split, loaders."""

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from music_genre_classification.data.cache import load_spectrograms
from music_genre_classification.data.collection import collect, is_manifest
from music_genre_classification.data.dataset import (
    DataError,
    RandomCrops,
    WholeClips,
    collate_clips,
    is_spectrogram_folder,
)
from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.data.split import PARTS, assign_parts, write_split_table


class GenreDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        genres: list[str] | str,
        spectrogram: dict,
        split=None,
        split_table: list[dict] | None = None,
        crop_columns: int = 128,
        crops_per_clip: int = 4,
        batch_size: int = 32,
        num_workers: int = 0,
        cache_dir: str | None = ".cache/spectrograms",
        cache_workers: int | None = None,
        cache_dtype: str = "float32",
        top_genres: int | None = None,
        min_clips: int | None = None,
        sampler: str | None = None,
    ):
        """`root`: a folder <root>/<genre>/... or a manifest (.csv/.tsv, see collection.py); `genres`: a list or
        "auto" (every genre found), narrowed to the `top_genres` most frequent and those with `min_clips` clips.
        `split` assigns clips to parts (see split.py); `split_table` replays a stored one instead.
        `sampler=balanced` draws training crops with every genre equally likely."""
        super().__init__()
        counts = {"crop_columns": crop_columns, "crops_per_clip": crops_per_clip, "batch_size": batch_size}
        for name, value, least in [*((n, v, 1) for n, v in counts.items()), ("num_workers", num_workers, 0)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DataError(f"datamodule.{name} must be a whole number >= {least}, not {value!r}")
        if sampler not in (None, "balanced"):
            raise DataError(f"datamodule.sampler must be balanced or null, not {sampler!r}")
        self.root, self.genres = Path(root), genres if isinstance(genres, str) else list(genres)
        self.top_genres, self.min_clips, self.sampler = top_genres, min_clips, sampler
        self.cache_workers, self.cache_dtype = cache_workers, cache_dtype
        self.params = SpectrogramParams(**spectrogram)
        self.split, self.split_table = split, split_table
        self.crop_columns, self.crops_per_clip = crop_columns, crops_per_clip
        self.batch_size, self.num_workers, self.cache_dir = batch_size, num_workers, cache_dir
        self.parts: dict[str, tuple[list, list]] = {}
        self.ids: dict[str, list[str]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        if not is_manifest(self.root) and is_spectrogram_folder(self.root):
            self._check_params(SpectrogramParams.from_dataset(self.root / "params.json"))
        clips, self.genres = collect(self.root, self.genres, self.top_genres, self.min_clips)
        columns = {"artist": {c.id: c.artist for c in clips}, "split": {c.id: c.part for c in clips}}
        part_of = assign_parts(self.split, self.split_table, {c.id: c.genre for c in clips}, self.root, columns)
        clips = [c for c in clips if c.id in part_of]
        clips, specs = load_spectrograms(
            clips, self.params, self.cache_dir, self.root, self.cache_workers, self.cache_dtype
        )
        self.split_table = [{"clip": c.id, "genre": c.genre, "part": part_of[c.id]} for c in clips]
        label = {g: i for i, g in enumerate(self.genres)}
        for part in PARTS:
            chosen = [i for i, c in enumerate(clips) if part_of[c.id] == part]
            part_specs = specs.select(chosen) if hasattr(specs, "select") else [specs[i] for i in chosen]
            self.parts[part] = (part_specs, [label[clips[i].genre] for i in chosen])
            self.ids[part] = [clips[i].id for i in chosen]
        counts = ", ".join(f"{p} {len(self.parts[p][0])}" for p in PARTS)
        print(f"data: {len(clips)} clips from {self.root} ({counts})")

    def _check_params(self, found: SpectrogramParams) -> None:
        if found != self.params:
            raise DataError(f"{self.root}/params.json describes {found}, but the model expects {self.params}")

    def tracks(self, part: str) -> tuple[list[str], list[int], list[list[tuple]]]:
        """A part's clips for scoring: ids, labels, and each clip as one window holding its whole spectrogram."""
        specs, labels = self.parts[part]
        return self.ids[part], labels, [[(0.0, s.shape[1] / self.params.columns_per_second, s)] for s in specs]

    def write_split(self, path: str | Path) -> None:
        write_split_table(self.split_table, path)

    def _loader(self, part: str, train: bool) -> DataLoader:
        specs, labels = self.parts[part]
        if not specs:
            raise DataError(f"the {part} part of the split is empty")
        if train:
            data = RandomCrops(specs, labels, self.crop_columns, self.crops_per_clip)
            sampler = self.balanced_sampler(labels, len(data)) if self.sampler == "balanced" else None
            return DataLoader(
                data, self.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=self.num_workers
            )
        return DataLoader(WholeClips(specs, labels), self.batch_size, collate_fn=collate_clips, num_workers=0)

    @staticmethod
    def balanced_sampler(labels: list[int], size: int) -> WeightedRandomSampler:
        """Crops drawn with replacement, each clip weighted by 1 / its genre's clip count: genres equally often."""
        counts = np.bincount(labels)
        weights = np.tile(1.0 / counts[labels], size // max(len(labels), 1))
        return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), size, replacement=True)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)
