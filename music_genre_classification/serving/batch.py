"""Folder jobs of `infer` and `embed`: every track below a folder through a GenreClassifier, here or on a Ray
cluster (serving/ray_engine.py), one row per file to a resumable table or to stdout."""

import base64
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError
from music_genre_classification.data.folder import ResultTable, track_files, warn_skipped
from music_genre_classification.models.classifier import GenreClassifier, Prediction
from music_genre_classification.models.tags import NO_SPECTROGRAM_TAGS, format_tags

ENGINES = ("local", "ray")


def check_source(audio_path: str, engine: str = "local") -> Path:
    """The file or folder a command reads, or a one-line UserError."""
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    source = Path(audio_path)
    if audio_path == "-":
        raise UserError("reading audio from standard input is not supported; give a file or a folder")
    if not source.exists():
        raise UserError(f"{source}: no such file or folder" + (" (a broken link)" if source.is_symlink() else ""))
    if not source.is_dir() and not source.is_file():
        raise UserError(f"{source}: not a regular file or folder (a pipe, device or socket); give a file or a folder")
    if engine != "local" and not source.is_dir():
        raise UserError(f"{source}: --engine {engine} runs over a folder; give a folder")
    return source


@dataclass(frozen=True)
class FolderRows:
    """What a folder job writes per file: infer's row; with `embeddings` (`embed`), also the genre its folder names
    (`label`, when it is one of the model's genres) and the track's embedding."""

    genres: tuple[str, ...]
    segments: bool = False
    embeddings: bool = False
    tags: bool = False  # musicnn's top MSD tags of the audio, "rock:0.62;guitar:0.41"

    def columns(self) -> list[str]:
        columns = ["path", "genre", *self.genres, "duration_s", "error", "warning", "not_music"]
        columns += ["segments"] * self.segments
        return columns + ["tags"] * self.tags + ["label", "embedding"] * self.embeddings

    def __call__(self, path: Path, prediction: Prediction | None, error: str | None) -> dict:
        row = result_row(path, prediction, error, self.segments)
        if self.tags:
            row["tags"] = format_tags(prediction.tags, ";", ":") if prediction and prediction.tags else ""
        if self.embeddings:
            row["label"] = path.parent.name if path.parent.name in self.genres else ""
            row["embedding"] = encode_embedding(prediction.embedding) if prediction else ""
        return row


def encode_embedding(embedding: np.ndarray) -> str:
    """float32 values as base64 text: exact, and a quarter of the size of decimal numbers in a CSV/JSON row."""
    return base64.b64encode(np.asarray(embedding, "<f4").tobytes()).decode()


def decode_embedding(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4")


def folder_job(
    classifier: GenreClassifier,
    model_path: str,
    folder: Path,
    table: ResultTable | None,
    rows: FolderRows,
    batch_size: int,
    engine: str = "local",
    address: str | None = None,
    output: Path | None = None,
) -> int:
    """Every track below `folder` (audio files, or the .npy of a spectrogram folder) through the model, a row each
    to `table` (or a line each on stdout), here or on a Ray cluster; returns how many failed. `output`: the name
    the user gave, when `table` is a journal that becomes it."""
    from tqdm import tqdm

    (files, ignored, skipped), params_json = track_files(folder)
    if params_json:
        if rows.tags:
            raise UserError(f"{folder}: --tags: {NO_SPECTROGRAM_TAGS}")
        classifier.check_spectrograms(params_json)
    warn_skipped(skipped)
    todo = [Path(key) for key in table.todo(str(p) for p in files)] if table else files
    skipped_note = f", {len(files) - len(todo)} already done" if len(todo) < len(files) else ""
    kind, ignored = ("spectrograms", ignored - 1) if params_json else ("audio files", ignored)  # - params.json
    verb, done = ("embed", "embedded") if rows.embeddings else ("label", "labelled")
    print(
        f"{len(todo)} {kind} to {verb} in {folder}{skipped_note}"
        + (f" ({ignored} non-{kind.split()[0]} ignored)" if ignored else "")
    )
    if engine == "ray":
        from music_genre_classification.serving.ray_engine import ray_rows

        results = ray_rows(model_path, todo, batch_size, rows, address)
    else:
        results = (rows(*result) for result in classifier.predict_many(todo, batch_size, rows.embeddings, rows.tags))
    failures, warnings, unlike, started = 0, 0, 0, time.perf_counter()
    bar = tqdm(results, total=len(todo), unit="file", file=sys.stderr)
    for row in bar:
        failures += bool(row["error"])
        warnings += bool(row.get("warning"))
        if row.get("not_music"):
            unlike += 1
            bar.write(f"warning: {row['path']}: does not sound like music ({row['not_music']})", file=sys.stderr)
        if table:
            table.add(row)
        else:
            warning = f"\twarning: {row['warning']}" if row.get("warning") else ""
            bar.write(f"{row['path']}\t" + (f"error: {row['error']}" if row["error"] else row["genre"] + warning))
    rate = len(todo) / max(time.perf_counter() - started, 1e-9)
    print(
        f"{done} {len(todo) - failures} files, {failures} failed"
        + (f", {warnings} with a warning (cut off?)" if warnings else "")
        + (f", {unlike} not like music" if unlike else "")
        + f", {rate:.1f} files/s"
        + (f" -> {output or table.path}" if table else "")
    )
    return failures


def result_row(path: Path, prediction: Prediction | None, error: str | None, segments: bool) -> dict:
    """One file's row of a folder run: its genre and every genre's probability, or why there is none."""
    row = {"path": str(path), "error": error or ""}
    if prediction:
        row |= {"genre": prediction.genre, "duration_s": round(prediction.duration_s, 3), **prediction.probabilities}
        row["warning"] = prediction.warning or ""
        row["not_music"] = prediction.not_music or ""
        if segments:
            row["segments"] = [vars(s) for s in prediction.segments]
    return row
