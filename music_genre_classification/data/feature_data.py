"""The 57 GTZAN features per clip, from a features table or computed (and cached) from an audio folder, split by clip.

A clip is a track of windows (start_s, end_s, rows): rows are the features of a 30-s window of its audio, one row per
window, or one per `segment_s` chunk of it. A table row is a whole clip; a chunk table (`blues.00000.3.wav`) holds
one row per chunk. Chunks follow their clip into its part, and models average over a clip's windows and chunks.
"""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from music_genre_classification.data.audio import decode_blocks
from music_genre_classification.data.collection import collect, is_auto, is_manifest
from music_genre_classification.data.dataset import (
    Clip,
    DataError,
    is_fresh,
    is_spectrogram_folder,
    load_clips,
    save_atomic,
)
from music_genre_classification.data.features import FEATURE_COLUMNS, FeatureExtractor, segment_waves
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams, track_spectrograms
from music_genre_classification.data.split import PARTS, assign_parts, write_split_table

Track = list[tuple[float, float, np.ndarray]]
# chunk n of a clip: blues.00000.3.wav (an index without leading zeros, so blues.00003.wav is a clip)
CHUNK_NAME = re.compile(r"^(?P<clip>.+)\.(?P<chunk>0|[1-9]\d*)\.[A-Za-z0-9]+$")


class FeatureFrontEnd:
    """A window of audio -> its feature rows [1 or chunks, 57], as the model was trained on."""

    def __init__(self, segment_s: float | None = None):
        self.extract, self.segment_s = FeatureExtractor(), segment_s
        self.log_mel = LogMel(SpectrogramParams())  # what track_spectrograms' noise check reads
        self.params = self.log_mel.params  # 22050 Hz, 30-s windows: the features' rate, infer's windows

    def __call__(self, wave: torch.Tensor) -> np.ndarray:
        wave = wave.numpy()
        return self.extract(segment_waves(wave, self.segment_s) if self.segment_s else [wave])


def read_table(path: Path, genres: list[str], segment_s: float | None) -> dict[str, tuple[str, Track]]:
    """Clip id ("<genre>/<file stem>") -> (genre, track) of the labelled rows of a features table."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ["filename", "label", *FEATURE_COLUMNS] if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: not a features table (no column {', '.join(missing[:3])})")
        rows = [row for row in reader if row["label"] in genres]
    if not rows:
        raise DataError(f"{path}: no rows labelled with the genres {', '.join(genres)}")
    chunked = [CHUNK_NAME.match(row["filename"]) for row in rows]
    if segment_s and not all(chunked):
        raise DataError(f"{path}: with datamodule.segment_s, rows must be chunks named <clip>.<n>.wav")
    if not segment_s and all(chunked):
        raise DataError(f"{path}: holds chunks (<clip>.<n>.wav); set datamodule.segment_s to their length")
    clips: dict[str, tuple[str, list, float]] = {}
    for row, chunk in zip(rows, chunked):
        stem = chunk["clip"] if segment_s else Path(row["filename"]).stem
        clip = f"{row['label']}/{stem}"
        if clip in clips and not segment_s:
            raise DataError(f"{path}: clip {clip} appears twice")
        genre, features, length = clips.get(clip, (row["label"], [], 0.0))
        try:
            features.append([float(row[c]) for c in FEATURE_COLUMNS])
            length += float(row.get("length") or 0)
        except ValueError as err:
            raise DataError(f"{path}: row {row['filename']}: {err}") from None
        clips[clip] = (genre, features, length)
    sample_rate = SpectrogramParams().sample_rate
    return {c: (g, [(0.0, n / sample_rate, np.array(f))]) for c, (g, f, n) in clips.items()}


class FeatureDataModule:
    """Feature tracks of labelled clips and their train/val/test parts (see split.py); same clips, same parts as
    the spectrogram route over the same data."""

    def __init__(
        self,
        root: str,
        genres: list[str],
        split=None,
        split_table: list[dict] | None = None,
        segment_s: float | None = None,
        only_clips_in: str | None = "spectrograms",
        cache_dir: str | None = ".cache/features",
        top_genres: int | None = None,
        min_clips: int | None = None,
    ):
        """`only_clips_in`: a folder next to a table; when it exists, only the clips it holds are used."""
        self.root, self.genres = Path(root), genres if isinstance(genres, str) else list(genres)
        self.top_genres, self.min_clips = top_genres, min_clips  # for audio collections, as GenreDataModule's
        self.split, self.split_table, self.segment_s = split, split_table, segment_s
        self.only_clips_in, self.cache_dir = only_clips_in, cache_dir
        self.parts: dict[str, tuple[list[str], list[int], list[Track]]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        if self.root.is_file() and not is_manifest(self.root):
            if is_auto(self.genres):
                raise DataError("datamodule.genres=auto needs an audio folder or a manifest; list a table's genres")
            tracks = self._restrict(read_table(self.root, self.genres, self.segment_s))
            part_of = assign_parts(self.split, self.split_table, {c: g for c, (g, _) in tracks.items()}, self.root)
        elif is_spectrogram_folder(self.root):
            raise DataError(f"{self.root}: spectrograms; feature models need a features table (.csv) or audio")
        else:
            clips, self.genres = collect(self.root, self.genres, self.top_genres, self.min_clips)
            columns = {"artist": {c.id: c.artist for c in clips}, "split": {c.id: c.part for c in clips}}
            part_of = assign_parts(self.split, self.split_table, {c.id: c.genre for c in clips}, self.root, columns)
            tracks = self._audio_tracks([c for c in clips if c.id in part_of])
        label = {g: i for i, g in enumerate(self.genres)}
        kept = [c for c in tracks if c in part_of]
        self.split_table = [{"clip": c, "genre": tracks[c][0], "part": part_of[c]} for c in kept]
        for part in PARTS:
            chosen = [c for c in kept if part_of[c] == part]
            self.parts[part] = (chosen, [label[tracks[c][0]] for c in chosen], [tracks[c][1] for c in chosen])
        counts = ", ".join(f"{p} {len(self.parts[p][0])}" for p in PARTS)
        print(f"data: {len(kept)} clips from {self.root} ({counts})")

    def _restrict(self, tracks: dict[str, tuple[str, Track]]) -> dict[str, tuple[str, Track]]:
        """A table beside a spectrogram set of the same clips (data/dataset) keeps only that set's clips, so that
        both routes split exactly the same clips (GTZAN's table also has jazz.00054, whose spectrogram is missing)."""
        other = self.root.parent / self.only_clips_in if self.only_clips_in else None
        if other is None or not other.is_dir():
            return tracks
        present = {f"{p.parent.name}/{p.stem}" for p in other.glob("*/*") if p.is_file()}
        return {c: t for c, t in tracks.items() if c in present}

    def _audio_tracks(self, clips: list[Clip]) -> dict[str, tuple[str, Track]]:
        front_end = FeatureFrontEnd(self.segment_s)
        key = json.dumps({"columns": FEATURE_COLUMNS, "segment_s": self.segment_s, **front_end.params.to_dict()})
        cache = Path(self.cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:12] if self.cache_dir else None
        kept, tracks = load_clips(clips, lambda clip: _clip_track(clip, front_end, cache), "features", bar=True)
        return {c.id: (c.genre, track) for c, track in zip(kept, tracks)}

    def rows(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Every feature row of the part's clips and its clip's genre index: what a model is fitted on."""
        _, labels, tracks = self.parts[part]
        if not tracks:
            raise DataError(f"the {part} part of the split is empty")
        per_clip = [np.concatenate([rows for _, _, rows in track]) for track in tracks]
        return np.concatenate(per_clip), np.concatenate([[y] * len(r) for y, r in zip(labels, per_clip)])

    def tracks(self, part: str) -> tuple[list[str], list[int], list[Track]]:
        """A part's clips for scoring: ids, genre indices, tracks."""
        return self.parts[part]

    def write_split(self, path: str | Path) -> None:
        write_split_table(self.split_table, path)


def _clip_track(clip: Clip, front_end: FeatureFrontEnd, cache: Path | None) -> Track:
    """The windows of a clip's audio with their feature rows, as `infer` computes them; cached per clip."""
    cached = cache / f"{clip.id}.npz" if cache else None
    if is_fresh(cached, clip):
        with np.load(cached) as stored:
            bounds, rows = stored["bounds"], stored["rows"]
    else:
        blocks = decode_blocks(clip.path, front_end.params.sample_rate, front_end.params.window_s)
        windows = track_spectrograms(blocks, front_end, str(clip.path))
        bounds = np.array([(start, end, len(rows)) for start, end, rows in windows])
        rows = np.concatenate([rows for _, _, rows in windows])
        if cached:
            save_atomic(cached, lambda path: np.savez(path, bounds=bounds, rows=rows))
    ends = np.cumsum(bounds[:, 2]).astype(int)
    return [(float(s), float(e), r) for (s, e, _), r in zip(bounds, np.split(rows, ends[:-1]))]
