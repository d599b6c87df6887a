"""The measurements behind the README's "Your own music": collections made from the real data, a big synthetic one,
and peak memory of a command.

    python -m studies.collection_study unequal --output_path unequal/manifest.csv
    python -m studies.collection_study few_shot --checkpoint new_artists.ckpt \
        --output_path few/manifest.csv
    python -m studies.collection_study synthetic --root /tmp/synthetic --clips 20000
    python -m studies.collection_study build --root /tmp/synthetic --cache_dir /tmp/cache
    python -m studies.collection_study memory python -m ... train ...
"""

import csv
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fire
import numpy as np

from music_genre_classification.data.split import read_artists

SPECTROGRAMS = Path("data/dataset/spectrograms")
UNEQUAL = "metal:60,rock:40,blues:25,country:15,jazz:10,reggae:8"


def _counts(text: str) -> dict[str, int]:
    return {genre: int(n) for genre, n in (item.split(":") for item in text.split(","))}


def _write(rows: list[list[str]], output_path: Path) -> None:
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "genre", "artist"], *rows])
    print(f"{len(rows)} clips written to {output_path}")


def _row(clip: str, output_path: Path, artists: dict[str, str]) -> list[str]:
    path = os.path.relpath((SPECTROGRAMS / f"{clip}.npy").absolute(), output_path.parent.absolute())
    return [path, clip.split("/")[0], artists.get(clip, "")]


def unequal(output_path: str, counts: str = UNEQUAL, seed: int = 0) -> None:
    """A manifest of GTZAN's stored spectrograms with unequal genres: `counts` clips of each (seeded choice), with
    the artists of GTZANindex.txt."""
    output_path, artists, rng, rows = Path(output_path), read_artists("GTZANindex.txt"), np.random.default_rng(seed), []
    for genre, n in _counts(counts).items():
        clips = sorted(f"{genre}/{p.stem}" for p in (SPECTROGRAMS / genre).glob("*.npy"))
        rows += [_row(clips[i], output_path, artists) for i in sorted(rng.choice(len(clips), n, replace=False))]
    _write(rows, output_path)


def few_shot(checkpoint: str, output_path: str, genres: str = "blues,classical,country,disco,metal") -> None:
    """A manifest of the clips a GTZAN checkpoint never trained on (the val and test parts of its stored split), of
    some genres only (so the fine-tuned model needs a new head), with their artists."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    output_path, artists, wanted = Path(output_path), read_artists("GTZANindex.txt"), genres.split(",")
    unseen = [r["clip"] for r in ckpt["split_table"] if r["part"] != "train" and r["genre"] in wanted]
    _write([_row(clip, output_path, artists) for clip in sorted(unseen)], output_path)


def _synthetic_clip(job: tuple[Path, int, int, float]) -> None:
    import soundfile as sf

    path, genre, seed, seconds = job
    rng, sr = np.random.default_rng(seed), 22050
    t = np.arange(int(seconds * sr)) / sr
    base = 60.0 * 1.5**genre * rng.uniform(0.9, 1.1)
    wave = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in (1, 1.5, 2, 3))
    wave *= 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)  # a beat of its own
    sf.write(path, (0.15 * wave + 0.001 * rng.standard_normal(t.size)).astype(np.float32), sr, format="FLAC")


def synthetic(
    root: str, clips: int = 20000, genres: int = 10, seconds: float = 10.0, distinct: int = 2000, workers: int = 2
) -> None:
    """`clips` FLAC clips of `seconds` in `genres` folders (<root>/g00/...): `distinct` of them written by `workers`
    processes, the others hard links to those of their genre (each path is decoded on its own all the same; the
    disk holds only the distinct ones)."""
    root, distinct = Path(root), max(genres, distinct - distinct % genres)
    jobs, links = [], []
    for i in range(clips):
        folder = root / f"g{i % genres:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.flac"
        if i < distinct:
            jobs.append((path, i % genres, i, seconds))
        else:
            links.append((path, jobs[i % distinct][0]))
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_synthetic_clip, jobs, chunksize=16))
    for path, source in links:
        os.link(source, path)
    size = sum(p.stat().st_size for p, *_ in jobs)
    print(f"{clips} clips ({len(jobs)} distinct, {size / 1e9:.2f} GB), in {time.perf_counter() - start:.0f} s")


def _status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of a process, in kB (missing once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":") for line in lines)
    return {k: int(v.split()[0]) for k, v in fields if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


def memory(*command: str) -> None:
    """Run `command` and report its peak resident memory (VmHWM), and the peaks of its anonymous memory (the
    process's own) and of its file-backed pages (e.g. memory-mapped cache pages, which the kernel can drop)."""
    process = subprocess.Popen([str(c) for c in command])
    peaks: dict[str, int] = {}

    def watch() -> None:
        while process.poll() is None:
            for key, value in _status(process.pid).items():
                peaks[key] = max(peaks.get(key, 0), value)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    code = process.wait()
    watcher.join()
    mb = {k: round(v / 1024) for k, v in peaks.items()}
    print(
        f"memory: peak RSS {mb.get('VmHWM')} MB (anonymous {mb.get('RssAnon')} MB, file-backed {mb.get('RssFile')} MB)"
        f"; {time.perf_counter() - start:.0f} s; exit {code}",
        file=sys.stderr,
    )
    sys.exit(code)


def build(root: str, cache_dir: str, workers: int = 2, limit: int | None = None, dtype: str = "float32") -> None:
    """Build the spectrogram cache of a collection (genres auto) as `train` would, and report clips/s."""
    from music_genre_classification.data.cache import build_cache, cache_folder
    from music_genre_classification.data.collection import collect
    from music_genre_classification.data.spectrogram import SpectrogramParams

    clips, _ = collect(root, "auto")
    clips, params = clips[:limit] if limit else clips, SpectrogramParams()
    start = time.perf_counter()
    kept, store, _ = build_cache(clips, params, cache_folder(cache_dir, params, root, dtype), workers, dtype)
    seconds = time.perf_counter() - start
    columns = sum(store.spans[i][1] for i in range(len(store)))
    print(
        f"cache: {len(kept)} clips with {workers} worker(s) in {seconds:.1f} s = {len(kept) / seconds:.1f} clips/s; "
        f"{store.data.stat().st_size / 1e9:.2f} GB as {dtype} on disk, {columns * params.n_mels * 4 / 1e9:.2f} GB "
        "as the float32 tensors of an in-memory set"
    )


if __name__ == "__main__" and sys.argv[1:2] == ["memory"]:  # the command's own options are not for Fire
    memory(*sys.argv[2:])
elif __name__ == "__main__":
    fire.Fire({"unequal": unequal, "few_shot": few_shot, "synthetic": synthetic, "build": build})
