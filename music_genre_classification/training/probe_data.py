"""The musicnn probe's view of a labelled collection: its split, and every clip's windows' backbone embeddings,
computed once and cached on disk.

The embeddings of every window of every clip go to one small .npz per clip under `<model.cache_dir>/<key>/`, the
key naming the collection and what the embeddings depend on (route, backbone, patches, adapter level, spectrogram
settings); a clip whose file changed is embedded again. A second `train` (another head, another split), `test` and
`calibrate` on the same collection read them instead of running the backbone.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from music_genre_classification.data.audio import AudioError
from music_genre_classification.data.collection import collect, is_manifest
from music_genre_classification.data.dataset import DataError, is_spectrogram_folder
from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.data.split import PARTS, assign_parts, write_split_table
from music_genre_classification.models.allowlist import spectrogram_params
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.models.musicnn_probe import POOLED, MusicnnEmbedder, WindowEmbeddings

CACHE_VERSION = 1  # bump when what a cached embedding means changes


class _WindowMaker:
    """What GenreClassifier needs to cut a file into the route's windows: the front end (no model runs)."""

    def __init__(self, embedder: MusicnnEmbedder):
        self.genres, self.front_end = ["?", "?"], embedder.front_end


def cache_folder(cache_dir: str | Path, root: str | Path, embedder: MusicnnEmbedder) -> Path:
    key = {"collection": str(Path(root).resolve()), "version": CACHE_VERSION, **embedder.settings()}
    return Path(cache_dir) / hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def clip_embeddings(path: Path, embedder: MusicnnEmbedder, cache: Path | None) -> list[tuple] | str:
    """A clip's windows (start_s, end_s, WindowEmbeddings or None, verdict) or why it cannot be read; from the cache
    when its entry was made from the file as it is now."""
    stat = path.stat()
    stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
    entry = cache / f"{hashlib.sha1(str(path.resolve()).encode()).hexdigest()}.npz" if cache else None
    if entry is not None and entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as saved:
                if np.array_equal(saved["stamp"], stamp):
                    return _from_saved(dict(saved))
        except (OSError, ValueError, KeyError):  # a damaged entry (an interrupted write): made again
            pass
    try:
        windows, _ = GenreClassifier(_WindowMaker(embedder))._track(path, None)
        kept = [w for w in windows if w[2] is not None]
        vectors = iter(embedder.embeddings([w[2] for w in kept]))
        result = [(s, e, next(vectors) if x is not None else None, v) for s, e, x, v in windows]
    except (AudioError, ValueError, OSError, RuntimeError) as err:
        result = str(err).removeprefix(f"{path}: ") or type(err).__name__
    if entry is not None:
        tmp = entry.with_suffix(".tmp.npz")
        np.savez(tmp, stamp=stamp, **_to_saved(result))
        tmp.replace(entry)
    return result


def _to_saved(result: list[tuple] | str) -> dict:
    if isinstance(result, str):
        return {"error": np.array(result)}
    music = [w for w in result if w[2] is not None]
    arrays = {
        "starts": np.array([w[0] for w in result], dtype=np.float64),
        "ends": np.array([w[1] for w in result], dtype=np.float64),
        "verdicts": np.array([w[3] or "" for w in result]),
        "embedded": np.array([w[2] is not None for w in result]),
    }
    for name in POOLED:
        arrays[name] = np.stack([w[2].vectors[name] for w in music]) if music else np.zeros((0, 1), np.float32)
    return arrays


def _from_saved(saved: dict) -> list[tuple] | str:
    if "error" in saved:
        return str(saved["error"])
    rows = iter(range(int(saved["embedded"].sum())))
    windows = []
    for start, end, verdict, embedded in zip(saved["starts"], saved["ends"], saved["verdicts"], saved["embedded"]):
        vectors = None
        if embedded:
            i = next(rows)
            vectors = WindowEmbeddings({name: saved[name][i] for name in POOLED})
        windows.append((float(start), float(end), vectors, str(verdict) or None))
    return windows


def resolve_route(route: str, root: str | Path) -> str:
    """route=auto: the spectrogram route for a folder of stored spectrograms, the audio route for audio."""
    if route != "auto":
        return route
    return "spectrogram" if not is_manifest(root) and is_spectrogram_folder(Path(root)) else "audio"


class ProbeData:
    """A labelled collection as the probe sees it: its split, and every clip's windows' cached embeddings.

    Takes the datamodule settings of `datamodule=gtzan` (root, genres, spectrogram, top_genres, min_clips; the
    crop and loader settings are a network's and are ignored) and the embedder of the route."""

    def __init__(
        self,
        root: str,
        genres: list[str] | str,
        spectrogram: dict,
        embedder: MusicnnEmbedder,
        split=None,
        split_table: list[dict] | None = None,
        embedding_cache: str | None = None,
        top_genres: int | None = None,
        min_clips: int | None = None,
        **_network_settings,
    ):
        self.root, self.genres = Path(root), genres if isinstance(genres, str) else list(genres)
        self.params, self.embedder = SpectrogramParams(**spectrogram), embedder
        self.split, self.split_table, self.cache_dir = split, split_table, embedding_cache
        self.top_genres, self.min_clips = top_genres, min_clips
        self.windows: dict[str, list] = {}
        self.parts: dict[str, tuple[list[str], list[int]]] = {}
        self.artists: dict[str, str] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        spectrograms = not is_manifest(self.root) and is_spectrogram_folder(self.root)
        if spectrograms and self.embedder.route == "audio":
            raise DataError(f"{self.root}: stored spectrograms have no audio for the audio route (model.route)")
        if spectrograms and SpectrogramParams.from_dataset(self.root / "params.json") != self.params:
            raise DataError(f"{self.root}/params.json does not describe the spectrograms {self.params}")
        clips, self.genres = collect(self.root, self.genres, self.top_genres, self.min_clips)
        columns = {"artist": {c.id: c.artist for c in clips}, "split": {c.id: c.part for c in clips}}
        part_of = assign_parts(self.split, self.split_table, {c.id: c.genre for c in clips}, self.root, columns)
        clips = [c for c in clips if c.id in part_of]
        self.artists = (getattr(self.split, "artists", None) or {}) | {c.id: c.artist for c in clips if c.artist}
        cache = cache_folder(self.cache_dir, self.root, self.embedder) if self.cache_dir else None
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
        kept, skipped = [], []
        # the first run embeds every clip (minutes for GTZAN): the bar shows on stderr, redrawn less often in a log
        bar = tqdm(
            clips,
            desc="musicnn embeddings",
            unit="clip",
            leave=False,
            file=sys.stderr,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,
        )
        with _torch_threads():
            for clip in bar:
                try:
                    result = clip_embeddings(clip.path, self.embedder, cache)
                except OSError as err:
                    result = err.strerror or str(err)
                if isinstance(result, str):
                    skipped.append(f"{clip.path.name} ({result})")
                else:
                    self.windows[clip.id] = result
                    kept.append(clip)
        if skipped:
            print(f"warning: skipped {len(skipped)} unreadable clip(s): {'; '.join(skipped)}")
        if not kept:
            raise DataError("no readable clip in the dataset")
        self.split_table = [{"clip": c.id, "genre": c.genre, "part": part_of[c.id]} for c in kept]
        label = {g: i for i, g in enumerate(self.genres)}
        for part in PARTS:
            chosen = [c for c in kept if part_of[c.id] == part]
            self.parts[part] = ([c.id for c in chosen], [label[c.genre] for c in chosen])
        counts = ", ".join(f"{p} {len(self.parts[p][0])}" for p in PARTS)
        print(f"data: {len(kept)} clips from {self.root} ({counts}); embeddings cached in {cache}")

    def music_windows(self, clip: str) -> list[tuple]:
        """A clip's windows (start_s, end_s, embeddings) that may be music, or all judged ones when none is."""
        judged = [w for w in self.windows[clip] if w[2] is not None]
        music = [w for w in judged if w[3] is None]
        return [(s, e, x) for s, e, x, _ in (music or judged)]

    def tracks(self, part: str) -> tuple[list[str], list[int], list[list[tuple]]]:
        """A part's clips for scoring: ids, labels, and each clip's windows holding their cached embeddings."""
        ids, labels = self.parts[part]
        return ids, labels, [self.music_windows(c) for c in ids]

    def write_split(self, path: str | Path) -> None:
        write_split_table(self.split_table, path)


class _torch_threads:
    """At most 2 torch threads while the backbone embeds a collection."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(min(self.before, 2))

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def probe_scores_data(hp: dict, settings: dict, split, split_table) -> ProbeData:
    """The ProbeData that `test` and `calibrate` score a probe checkpoint on (its own route and cached embeddings)."""
    embedder = MusicnnEmbedder(
        hp["route"],
        hp["backbone"],
        spectrogram_params(hp["spectrogram"]),
        hp.get("max_patches"),
        hp["reference_db"],
        hp.get("adapter", "fixed"),
    )
    cache_dir = ((hp.get("run_config") or {}).get("model") or {}).get("cache_dir")
    return ProbeData(**settings, embedder=embedder, split=split, split_table=split_table, embedding_cache=cache_dir)
