"""Labelled collections: folders of genres, manifests (CSV/TSV), FMA's metadata; choosing the genres to keep.

A collection is given as `datamodule.root`:
- a folder `<root>/<genre>/...` (audio in any subfolder, or GTZAN's .npy spectrograms beside a params.json);
  `datamodule.genres=auto` takes every subfolder holding a clip as a genre;
- a manifest file (.csv or .tsv) with columns `path,genre[,split][,artist]`, paths relative to the manifest.
"""

import csv
import os
from collections import Counter
from pathlib import Path

from music_genre_classification.data.audio import is_audio_file
from music_genre_classification.data.dataset import Clip, DataError, is_spectrogram_folder

MANIFEST_SUFFIXES = (".csv", ".tsv")
MANIFEST_PARTS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def is_manifest(root: str | Path) -> bool:
    """A .csv/.tsv file whose header names path and genre (a features table has filename and label instead)."""
    root = Path(root)
    if root.suffix.lower() not in MANIFEST_SUFFIXES or not root.is_file():
        return False
    with open(root, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f, delimiter="\t" if root.suffix.lower() == ".tsv" else ","), [])
    return {"path", "genre"} <= {name.strip() for name in header}


def is_auto(genres) -> bool:
    return genres == "auto" or (isinstance(genres, list | tuple) and list(genres) == ["auto"])


def read_manifest(path: str | Path) -> list[Clip]:
    """Clips listed in a manifest: `path,genre[,split][,artist]` (header row required; tab-separated for .tsv).

    A clip's id (the key of split tables) is `<genre>/<file name without suffix>`, as for a folder of genres."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows or not {"path", "genre"} <= set(rows[0]):
        raise DataError(f"{path}: a manifest needs a header with columns path,genre[,split][,artist]")
    clips, seen, ids = [], set(), Counter()
    for line, row in enumerate(rows, start=2):
        name, genre = (row.get("path") or "").strip(), (row.get("genre") or "").strip()
        if not name or not genre:
            raise DataError(f"{path}, line {line}: empty path or genre")
        part = (row.get("split") or "").strip().lower() or None
        if part is not None and part not in MANIFEST_PARTS:
            raise DataError(f"{path}, line {line}: split {part!r} is not one of train, val, test")
        if name in seen:
            raise DataError(f"{path}, line {line}: {name} is listed twice")
        seen.add(name)
        artist = (row.get("artist") or "").strip().lower() or None
        clip_id = f"{genre}/{Path(name).stem}"  # as in a folder of genres; a second file of that name gets ~2
        ids[clip_id] += 1
        clip_id += f"~{ids[clip_id]}" if ids[clip_id] > 1 else ""
        clips.append(Clip(clip_id, genre, path.parent / name, artist, MANIFEST_PARTS.get(part)))
    return clips


def scan_folders(root: Path) -> list[Clip]:
    """Every clip below <root>/<genre>/ (any depth); the genre is the first folder."""
    wanted = (lambda p: p.suffix == ".npy") if is_spectrogram_folder(root) else is_audio_file
    return [
        Clip(str(path.relative_to(root).with_suffix("")), folder.name, path)
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and wanted(path)
    ]


def collect(root: str | Path, genres, top_genres: int | None = None, min_clips: int | None = None):
    """The clips of a collection and its genres: the listed ones (in that order) or, for `auto`, every genre found
    (by name); then the `top_genres` most frequent, then those with at least `min_clips` clips."""
    from music_genre_classification.data.dataset import scan_clips

    root = Path(root)
    for name, value in (("top_genres", top_genres), ("min_clips", min_clips)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"datamodule.{name} must be a whole number >= 1 or null, not {value!r}")
    if is_manifest(root):
        clips = read_manifest(root)
    elif is_auto(genres):
        if not root.is_dir():
            raise DataError(f"{root}: no such dataset folder or manifest (.csv/.tsv)")
        clips = scan_folders(root)
    else:
        clips = scan_clips(root, list(genres))
    if is_auto(genres):
        genres = sorted({c.genre for c in clips})
    clips = [c for c in clips if c.genre in set(genres)]
    counts = Counter(c.genre for c in clips)
    if top_genres:
        frequent = {g for g, _ in sorted(counts.items(), key=lambda gc: (-gc[1], gc[0]))[:top_genres]}
        genres = [g for g in genres if g in frequent]
    if min_clips:
        dropped = [g for g in genres if counts[g] < min_clips]
        if dropped:
            print(f"data: dropped {len(dropped)} genre(s) with fewer than {min_clips} clips: {', '.join(dropped)}")
        genres = [g for g in genres if counts[g] >= min_clips]
    clips = [c for c in clips if c.genre in set(genres)]
    if not clips:
        raise DataError(f"{root}: no clips found for the chosen genres")
    return clips, list(genres)


def fma_manifest(
    tracks_csv: str | Path, audio_dir: str | Path, output_path: str | Path, subset: str | None = None
) -> int:
    """A manifest (path,genre,split,artist) of the Free Music Archive, to train on.

    From its tracks.csv (fma_metadata) and an audio folder such as fma_small; train on it with
    datamodule.root=<manifest> datamodule.genres=auto split=manifest.

    Per track of tracks.csv + fma_<size>/<id[:3]>/<id>.mp3: top genre, FMA's split, artist name.

    Tracks without a top genre or whose mp3 is not in `audio_dir` are left out; `subset` (small, medium, large)
    keeps that subset's tracks. Returns the number of tracks written.
    """
    import pandas as pd

    tracks_csv, audio_dir, output_path = Path(tracks_csv), Path(audio_dir), Path(output_path)
    if not tracks_csv.is_file():
        raise DataError(f"{tracks_csv}: no such file")
    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: no such folder")
    try:
        tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1])
        table = tracks[[("track", "genre_top"), ("set", "split"), ("set", "subset"), ("artist", "name")]]
    except (KeyError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{tracks_csv}: not FMA's tracks.csv ({err})") from None
    table.columns = ["genre", "split", "subset", "artist"]
    if subset:
        table = table[table["subset"] == subset]
    table = table[table["genre"].notna()]
    rows = []
    for track_id, row in table.iterrows():
        name = f"{int(track_id):06d}"
        audio = audio_dir / name[:3] / f"{name}.mp3"
        if audio.is_file():
            path = os.path.relpath(audio.resolve(), output_path.parent.resolve())
            artist = "" if pd.isna(row["artist"]) else str(row["artist"])
            rows.append([str(path), row["genre"], MANIFEST_PARTS.get(str(row["split"]), ""), artist])
    if not rows:
        raise DataError(f"no track of {tracks_csv} has its mp3 under {audio_dir}")
    with open(output_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "genre", "split", "artist"])
        writer.writerows(rows)
    print(f"{len(rows)} tracks of {table['genre'].nunique()} genres written to {output_path}")
    return len(rows)
