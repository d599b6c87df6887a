"""The `features` command: the 57 GTZAN features of audio files in a table shaped like features_30_sec.csv."""

import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from music_genre_classification.config import CONFIG_DIR, UserError
from music_genre_classification.data.audio import AudioError, decode_blocks
from music_genre_classification.data.features import (
    MAX_BATCH_SAMPLES,
    SAMPLE_RATE,
    TABLE_COLUMNS,
    FeatureExtractor,
    segment_blocks,
)
from music_genre_classification.data.folder import ResultTable, audio_files, warn_skipped
from music_genre_classification.data.spectrogram import SpectrogramParams, checked_windows

# the shortest audio the features are made of: GTZAN's 3-s chunks (features_3_sec.csv). No model judges it, so the
# model's MIN_DURATION_S does not apply
MIN_FEATURE_S = 3.0


def run_features(audio_path: str, output_path: str | None = None, segment_s: float | None = None) -> bool:
    """The 57 GTZAN features of a file, or of every audio file below a folder, as a table like features_30_sec.csv.

    --output_path .csv/.jsonl (resumable); --segment_s 3: one row per 3-s chunk, as features_3_sec.csv.

    One row per file (or per chunk of segment_s); True when some file failed.

    A rerun with the same output skips the files already there; failed files are reported and tried again next time.
    """
    source = Path(audio_path)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    if not output_path:
        raise UserError("--output_path is needed: the table goes to a .csv or .jsonl file")
    if segment_s is not None and segment_s < MIN_FEATURE_S:
        raise UserError(f"--segment_s must be at least {MIN_FEATURE_S:g} s, got {segment_s:g}")
    genres = list(OmegaConf.load(CONFIG_DIR / "datamodule" / "gtzan.yaml").genres)
    with ResultTable(Path(output_path), TABLE_COLUMNS, key="filename") as table:
        return _features_job(source, table, segment_s, genres, output_path)


def _features_job(
    source: Path, table: ResultTable, segment_s: float | None, genres: list[str], output_path: str
) -> bool:
    import torch
    from tqdm import tqdm

    files, ignored, skipped = ([source.resolve()], 0, []) if source.is_file() else audio_files(source)
    warn_skipped(skipped)
    _refuse_name_clashes(files)
    todo = [p for p in files if _row_names(p, segment_s)[0] not in table.done]
    skipped = f", {len(files) - len(todo)} already done" if len(todo) < len(files) else ""
    ignored_note = f" ({ignored} non-audio ignored)" if ignored else ""
    print(f"{len(todo)} audio files to extract features from in {source}{skipped}{ignored_note}")
    # the extractor keeps two cores busy by itself (torch here, the HPSS medians on a worker thread): OpenMP threads
    # on top only wait at barriers (2 torch threads: 2-6x slower per clip on the 2-core host under load)
    torch.set_num_threads(1)
    extractor, failures, rows, started = FeatureExtractor(), 0, 0, time.perf_counter()
    bar = tqdm(todo, unit="file", file=sys.stderr)
    for path in bar:
        try:
            new_rows, warning = file_rows(path, extractor, segment_s, genres)
        except AudioError as err:
            failures += 1
            bar.write(f"error: {err}", file=sys.stderr)
            continue
        if warning:  # cut off: the row holds the features of the audio really there
            bar.write(f"warning: {warning}", file=sys.stderr)
        table.add_rows(new_rows)
        rows += len(new_rows)
    rate = len(todo) / max(time.perf_counter() - started, 1e-9)
    print(f"{len(todo) - failures} files ({rows} rows), {failures} failed, {rate:.1f} files/s -> {output_path}")
    return failures > 0


def file_rows(
    path: Path, extractor: FeatureExtractor, segment_s: float | None, genres: list[str]
) -> tuple[list[dict], str | None]:
    """The table's rows of one file (its whole track, 30-s windows pooled, or its chunks of segment_s) and the
    decoder's warning when the file ended early."""
    label = path.parent.name if path.parent.name in genres else ""
    audio = decode_blocks(path, SAMPLE_RATE, min_s=MIN_FEATURE_S)
    windows = (wave for _, _, wave in checked_windows(audio, SpectrogramParams(), str(path), MIN_FEATURE_S))
    if not segment_s:
        track = extractor.track(windows)
        return [_row(path.name, track.samples, track.features(), label)], audio.warning
    lengths, features = [], []
    for batch in _batches(segment_blocks(windows, segment_s, SAMPLE_RATE)):  # a long track's chunks in groups
        lengths += [len(chunk) for chunk in batch]
        features.append(extractor(batch))
    names = _row_names(path, segment_s, len(lengths))
    rows = [_row(n, length, f, label) for n, length, f in zip(names, lengths, np.concatenate(features))]
    return rows, audio.warning


def _row(name: str, length: int, features: np.ndarray, label: str) -> dict:
    return dict(zip(TABLE_COLUMNS, [name, length, *features.tolist(), label]))


def _row_names(path: Path, segment_s: float | None, count: int = 1) -> list[str]:
    """GTZAN's names: blues.00000.wav for a whole file, blues.00000.0.wav, blues.00000.1.wav, ... for its chunks."""
    return [f"{path.stem}.{i}{path.suffix}" for i in range(count)] if segment_s else [path.name]


def _batches(chunks: Iterable[np.ndarray]) -> Iterable[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for chunk in chunks:
        batch.append(chunk)
        if sum(map(len, batch)) >= MAX_BATCH_SAMPLES:
            yield batch
            batch = []
    if batch:
        yield batch


def _refuse_name_clashes(files: list[Path]) -> None:
    """Rows are named by file name, as in GTZAN's tables: two files of one name would share rows."""
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen:
            raise UserError(f"{seen[path.name]} and {path}: same file name; the table names rows by file name")
        seen[path.name] = path
