"""The spectrogram cache of an audio collection: one array file and an index, built once by worker processes.

`<cache_dir>/<spectrogram params>/<collection>/<dtype>/spectrograms.f32` (or `.f16`) holds every clip's spectrogram
as rows of [columns, n_mels] one after another (so that clips can be appended): float32 by default (training sees
exactly the front end's values), float16 (`datamodule.cache_dtype=float16`) for half the disk. `index.jsonl` has
one line per clip done: its path, size and modification time, and where its rows start and how many there are (or
why it could not be read). A line is written only after the clip's rows are on disk, so an interrupted build loses
at most the clips in flight: the next build trims what no whole index line accounts for and goes on with the clips
not done. A clip whose file changed is computed again. Training reads crops through a memory map: the set is never
loaded whole.
"""

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from music_genre_classification.data.dataset import Clip, DataError, clip_spectrogram, load_clips, params_key
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams

INDEX = "index.jsonl"
DTYPES = {"float32": np.float32, "float16": np.float16}
_front_end: LogMel | None = None  # one per worker process
_dtype = np.float32


class SpectrogramStore(Sequence):
    """Clips' spectrograms [n_mels, columns] (float32 tensors), read on demand from the cache's memory map."""

    def __init__(self, data: Path, n_mels: int, spans: list[tuple[int, int]]):
        self.data, self.n_mels, self.spans = Path(data), n_mels, list(spans)
        self.dtype = DTYPES["float16" if self.data.suffix == ".f16" else "float32"]
        self._rows: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._rows is None:  # opened lazily, in each data-loader worker
            self._rows = np.memmap(self.data, dtype=self.dtype, mode="r").reshape(-1, self.n_mels)
        start, columns = self.spans[index]
        return torch.from_numpy(np.ascontiguousarray(self._rows[start : start + columns].T, dtype=np.float32))

    def select(self, indices: list[int]) -> "SpectrogramStore":
        return SpectrogramStore(self.data, self.n_mels, [self.spans[i] for i in indices])

    def __getstate__(self) -> dict:  # a worker process maps the file itself instead of receiving a copy
        return {**self.__dict__, "_rows": None}


def cache_folder(cache_dir: str | Path, params: SpectrogramParams, root: str | Path, dtype: str = "float32") -> Path:
    collection = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / params_key(params) / collection / dtype


def stamp(clip: Clip) -> dict:
    stat = clip.path.stat()
    return {"path": str(clip.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def data_file(folder: Path, dtype: str) -> Path:
    if dtype not in DTYPES:
        raise DataError(f"datamodule.cache_dtype must be float32 or float16, not {dtype!r}")
    return folder / f"spectrograms.f{np.dtype(DTYPES[dtype]).itemsize * 8}"


def read_index(folder: Path, n_mels: int, dtype: str = "float32") -> dict[str, dict]:
    """Clip id -> its latest whole index line; a cut-off last line and rows no line accounts for are trimmed."""
    index, data, size = folder / INDEX, data_file(folder, dtype), np.dtype(DTYPES[dtype]).itemsize
    entries, good = {}, 0
    if index.is_file():
        raw = index.read_bytes()
        for line in raw.splitlines(keepends=True):
            try:
                entry = json.loads(line) if line.endswith(b"\n") else None
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict) or "clip" not in entry:
                print(f"cache: {index}: resuming after a cut-off line")
                break
            entries[entry["clip"]], good = entry, good + len(line)
        if good < len(raw):
            os.truncate(index, good)
    end = max((e["offset"] + e["columns"] for e in entries.values() if "offset" in e), default=0)
    if data.is_file() and data.stat().st_size > end * n_mels * size:
        os.truncate(data, end * n_mels * size)
    return entries


def _start_worker(params: dict, dtype: str, single_thread: bool = True) -> None:
    global _front_end, _dtype
    if single_thread:  # in a worker process: one process per core does the work in parallel
        torch.set_num_threads(1)
    _front_end, _dtype = LogMel(SpectrogramParams(**params)), DTYPES[dtype]


def _spectrogram(path: str) -> tuple[np.ndarray | None, str | None]:
    """A clip's rows [columns, n_mels] in the cache's dtype, or why it cannot be read."""
    try:
        spec = clip_spectrogram(Path(path), _front_end)
        return np.ascontiguousarray(spec.numpy().T, dtype=_dtype), None
    except (ValueError, OSError) as err:  # AudioError and a damaged .npy are ValueErrors
        return None, str(err).removeprefix(f"{path}: ")


def _results(paths: list[str], params: SpectrogramParams, workers: int, dtype: str):
    if workers <= 1 or len(paths) < 4 * workers:  # too few clips to pay for starting processes
        _start_worker(params.to_dict(), dtype, single_thread=False)
        yield from map(_spectrogram, paths)
        return
    pool = ProcessPoolExecutor(
        workers, get_context("spawn"), initializer=_start_worker, initargs=(params.to_dict(), dtype)
    )
    try:
        yield from pool.map(_spectrogram, paths, chunksize=4)
    finally:  # on Ctrl+C, no waiting for the clips not started
        pool.shutdown(wait=True, cancel_futures=True)


def build_cache(
    clips: list[Clip], params: SpectrogramParams, folder: Path, workers: int | None = None, dtype: str = "float32"
) -> tuple[list[Clip], SpectrogramStore, list[str]]:
    """The clips that could be read, their spectrograms, and `name (reason)` for each clip that could not."""
    workers = workers or min(os.cpu_count() or 1, 8)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (e.g. the processes of a DDP run)
        done = read_index(folder, params.n_mels, dtype)
        stamps, missing = {}, {}
        for clip in clips:
            try:
                stamps[clip.id] = stamp(clip)
            except OSError as err:
                missing[clip.id] = err.strerror or str(err)
        todo = [c for c in clips if c.id in stamps and {**done.get(c.id, {}), **stamps[c.id]} != done.get(c.id)]
        if todo:
            print(f"cache: {len(clips) - len(todo)} of {len(clips)} clips done, {len(todo)} to build ({folder})")
            _append(todo, stamps, params, folder, workers, done, dtype)
    kept, spans, skipped = [], [], []
    for clip in clips:
        entry = done.get(clip.id, {})
        if "offset" in entry and clip.id in stamps:
            kept.append(clip)
            spans.append((entry["offset"], entry["columns"]))
        else:
            skipped.append(f"{clip.path.name} ({missing.get(clip.id) or entry.get('error', 'unreadable')})")
    return kept, SpectrogramStore(data_file(folder, dtype), params.n_mels, spans), skipped


def _append(todo: list[Clip], stamps: dict, params, folder: Path, workers: int, done: dict, dtype: str) -> None:
    """Each clip's rows, then its index line (or why it could not be read), as results come."""
    data_path, size = data_file(folder, dtype), np.dtype(DTYPES[dtype]).itemsize
    rows = data_path.stat().st_size // (size * params.n_mels) if data_path.is_file() else 0
    results = _results([str(c.path) for c in todo], params, workers, dtype)
    bar = tqdm(total=len(todo), desc=f"spectrograms ({workers} workers)", unit="clip", leave=False)
    with open(data_path, "ab") as data, open(folder / INDEX, "a") as index, bar:
        for clip, (spec, error) in zip(todo, results):
            entry = {"clip": clip.id, **stamps[clip.id]}
            if spec is None:
                entry["error"] = error
            else:
                if spec.shape[1] != params.n_mels:
                    raise DataError(f"{clip.path}: spectrogram of {spec.shape[1]} mel bands, not {params.n_mels}")
                data.write(spec.tobytes())
                data.flush()  # the rows are in the file before the index line that vouches for them
                entry |= {"offset": rows, "columns": len(spec)}
                rows += len(spec)
            index.write(json.dumps(entry) + "\n")
            index.flush()
            done[clip.id] = entry
            bar.update()


def load_spectrograms(
    clips: list[Clip],
    params: SpectrogramParams,
    cache_dir: str | Path | None = None,
    root: str | Path | None = None,
    workers: int | None = None,
    dtype: str = "float32",
) -> tuple[list[Clip], list[torch.Tensor]]:
    """Spectrograms of the clips that can be read; unreadable ones are skipped with one warning line.

    Audio goes through the collection's cache (built once by `workers` processes, stored as `dtype`,
    read through a memory map) when `cache_dir` is given; .npy spectrograms are read as they are.
    """
    if cache_dir and any(c.path.suffix != ".npy" for c in clips):
        folder = cache_folder(cache_dir, params, root or os.path.commonpath([c.path.parent for c in clips]), dtype)
        kept, store, skipped = build_cache(clips, params, folder, workers, dtype)
        if skipped:
            print(f"warning: skipped {len(skipped)} unreadable clip(s): {'; '.join(skipped)}")
        if not kept:
            raise DataError("no readable clip in the dataset")
        return kept, store
    front_end = LogMel(params)
    audio = any(c.path.suffix != ".npy" for c in clips)
    return load_clips(clips, lambda clip: clip_spectrogram(clip.path, front_end), "spectrograms", audio)
