"""Labelling audio with a trained checkpoint: GenreClassifier for Python, run_infer for the CLI.

`test` and the bot use the same pieces: load_checkpoint, the checkpoint kind's predictor (models/predictors.py:
CNN, features model or ensemble), track_spectrograms and track_probabilities. Imports stay light (no Lightning,
no MLflow) so that one file is labelled quickly.
"""

import csv
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException

from music_genre_classification.config import UserError, first_line
from music_genre_classification.data.audio import AudioError, decode_blocks, waveform
from music_genre_classification.data.spectrogram import track_spectrograms
from music_genre_classification.models.predictors import checkpoint_kind, predictor, track_probabilities
from music_genre_classification.serving.folder import ResultTable, audio_files, check_writable, warn_skipped


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint of this project, or a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if checkpoint_kind(ckpt) is None:
        raise UserError(f"{path}: not a music_genre_classification checkpoint")
    return ckpt


Window = tuple[float, float, object]  # start_s, end_s, the model's input for one window of a track


@dataclass
class Segment:
    start_s: float
    end_s: float
    genre: str
    probability: float


@dataclass
class Prediction:
    genre: str
    probabilities: dict[str, float]  # every genre, most likely first, summing to 1
    duration_s: float  # of the audio really decoded and classified
    segments: list[Segment] = field(default_factory=list)  # one per window of window_s seconds
    warning: str | None = None  # e.g. the file ends before its header says (cut off): only what is there is judged

    def to_dict(self, segments: bool = True) -> dict:
        row = {"genre": self.genre, "probabilities": self.probabilities, "duration_s": round(self.duration_s, 3)}
        if segments:
            row["segments"] = [vars(s) for s in self.segments]
        if self.warning:
            row["warning"] = self.warning
        return row


class GenreClassifier:
    def __init__(self, model):
        """`model`: a predictor from models/predictors.py (CNN, features model or ensemble)."""
        self.model, self.genres = model, list(model.genres)
        self.front_end = model.front_end

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> "GenreClassifier":
        ckpt = load_checkpoint(path)
        try:
            return cls(predictor(ckpt, device))
        except UserError as err:  # e.g. a stored pipeline that holds types not trusted
            raise UserError(f"{path}: {err}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, InstantiationException) as err:
            raise UserError(f"{path}: damaged or incompatible checkpoint ({_checkpoint_problem(err)})") from None

    @property
    def sample_rate(self) -> int:
        return self.front_end.params.sample_rate

    def spectrograms(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> list[Window]:
        """A file path, or a waveform at `sample_rate` ([samples], [samples, channels] or [channels, samples]), as
        window spectrograms."""
        return self._track(source, sample_rate)[0]

    def _track(self, source: str | Path | np.ndarray, sample_rate: int | None) -> tuple[list[Window], str | None]:
        """Window spectrograms and the decoder's warning (a file cut off: only what is there is classified)."""
        if isinstance(source, str | os.PathLike):
            blocks, name = decode_blocks(source, self.sample_rate, self.front_end.params.window_s), str(source)
        else:
            blocks, name = [waveform(source, sample_rate, self.sample_rate)], "waveform"
        windows = track_spectrograms(blocks, self.front_end, name)
        return windows, getattr(blocks, "warning", None)

    def predict(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> Prediction:
        windows, warning = self._track(source, sample_rate)
        prediction = self._predict_tracks([windows])[0]
        prediction.warning = warning
        return prediction

    def predict_many(
        self, paths: Iterable[str | Path], batch_size: int = 16
    ) -> Iterator[tuple[Path, Prediction | None, str | None]]:
        """(path, prediction, None) or (path, None, error) per file; decoding overlaps the model's work."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        paths = [Path(p) for p in paths]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(paths), batch_size):
                batch = paths[start : start + batch_size]
                tracks = list(pool.map(self._safe_track, batch))
                good = [windows for windows, _ in (t for t in tracks if isinstance(t, tuple))]
                predictions = iter(self._predict_tracks(good)) if good else iter(())
                for path, track in zip(batch, tracks):
                    if isinstance(track, tuple):
                        prediction = next(predictions)
                        prediction.warning = track[1]
                        yield path, prediction, None
                    else:
                        yield path, None, track

    def _safe_track(self, path: Path) -> tuple[list[Window], str | None] | str:
        try:
            return self._track(path, None)
        except AudioError as err:
            return str(err)

    def _predict_tracks(self, tracks: list[list[Window]]) -> list[Prediction]:
        per_track, per_window = track_probabilities(self.model, tracks)
        results = []
        for track, track_probs, window_probs in zip(tracks, per_track, per_window):
            segments = [
                Segment(round(s, 3), round(e, 3), self.genres[int(p.argmax())], round(float(p.max()), 4))
                for (s, e, _), p in zip(track, window_probs)
            ]
            results.append(self._prediction(track_probs, track[-1][1], segments))
        return results

    def _prediction(self, probs: np.ndarray, duration_s: float, segments: list[Segment]) -> Prediction:
        probs = probs / probs.sum()
        order = np.argsort(-probs)
        ranked = {self.genres[i]: float(probs[i]) for i in order}
        return Prediction(self.genres[order[0]], ranked, duration_s, segments)


def format_prediction(prediction: Prediction, segments: bool = False, bar_width: int = 20) -> str:
    lines = [f"genre: {prediction.genre}  ({prediction.duration_s:.1f} s)"]
    for genre, p in prediction.probabilities.items():
        lines.append(f"  {genre:<10} {p:6.1%} {'█' * round(p * bar_width)}")
    if segments:
        lines.append("timeline:")
        for s in prediction.segments:
            lines.append(f"  {s.start_s:7.1f}-{s.end_s:7.1f} s  {s.genre:<10} {s.probability:6.1%}")
    return "\n".join(lines)


SINGLE_FORMATS = (".txt", ".json", ".csv")


def write_single(prediction: Prediction, path: Path, segments: bool) -> None:
    """One file's result, in the format named by the extension (.txt, .json, .csv)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(prediction.to_dict(segments), indent=2))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["genre", *prediction.probabilities, "duration_s", "warning"])
            values = [*prediction.probabilities.values(), round(prediction.duration_s, 3), prediction.warning or ""]
            writer.writerow([prediction.genre, *values])
    elif path.suffix == ".txt":
        warning = f"warning: {prediction.warning}\n" if prediction.warning else ""
        path.write_text(format_prediction(prediction, segments) + "\n" + warning)
    else:
        raise UserError(f"{path}: output format must be {', '.join(SINGLE_FORMATS)}")


def run_infer(
    model_path: str, audio_path: str, output_path: str | None, segments: bool = False, batch_size: int = 16
) -> bool:
    """The `infer` command; returns True when some file failed (the exit code says so)."""
    source = Path(audio_path)
    if audio_path == "-":
        raise UserError("reading audio from standard input is not supported; give a file or a folder")
    if not source.exists():
        raise UserError(f"{source}: no such file or folder" + (" (a broken link)" if source.is_symlink() else ""))
    if not source.is_dir() and not source.is_file():
        raise UserError(f"{source}: not a regular file or folder (a pipe, device or socket); give a file or a folder")
    output = Path(output_path) if output_path else None
    if output and source.is_file():
        if output.suffix not in SINGLE_FORMATS:
            raise UserError(f"{output}: output format must be {', '.join(SINGLE_FORMATS)}")
        check_writable(output)  # now, not after the work is done
    classifier = GenreClassifier.from_checkpoint(model_path)
    if source.is_dir():
        return label_folder(classifier, source, output, segments, batch_size)
    prediction = classifier.predict(source)
    print(format_prediction(prediction, segments))
    if prediction.warning:
        print(f"warning: {prediction.warning}", file=sys.stderr)
    if output:
        try:
            write_single(prediction, output, segments)
        except OSError as err:
            raise UserError(f"{output}: cannot be written ({err.strerror})") from None
    return False


def label_folder(
    classifier: GenreClassifier, folder: Path, output: Path | None, segments: bool, batch_size: int
) -> bool:
    from tqdm import tqdm

    columns = ["path", "genre", *classifier.genres, "duration_s", "error", "warning"] + ["segments"] * segments
    table = ResultTable(output, columns) if output else None
    files, ignored, skipped = audio_files(folder)
    warn_skipped(skipped)
    todo = [Path(key) for key in table.todo(str(p) for p in files)] if table else files
    skipped_note = f", {len(files) - len(todo)} already done" if len(todo) < len(files) else ""
    print(
        f"{len(todo)} audio files to label in {folder}{skipped_note}"
        + (f" ({ignored} non-audio ignored)" if ignored else "")
    )
    failures, warnings, started = 0, 0, time.perf_counter()
    bar = tqdm(classifier.predict_many(todo, batch_size), total=len(todo), unit="file", file=sys.stderr)
    for path, prediction, error in bar:
        failures += error is not None
        warnings += bool(prediction and prediction.warning)
        if table:
            table.add(result_row(path, prediction, error, segments))
        else:
            warning = f"\twarning: {prediction.warning}" if prediction and prediction.warning else ""
            bar.write(f"{path}\t" + (f"error: {error}" if error else prediction.genre + warning))
    rate = len(todo) / max(time.perf_counter() - started, 1e-9)
    print(
        f"labelled {len(todo) - failures} files, {failures} failed"
        + (f", {warnings} with a warning (cut off?)" if warnings else "")
        + f", {rate:.1f} files/s"
        + (f" -> {output}" if output else "")
    )
    return failures > 0


def result_row(path: Path, prediction: Prediction | None, error: str | None, segments: bool) -> dict:
    """One file's row of a folder run: its genre and every genre's probability, or why there is none."""
    row = {"path": str(path), "error": error or ""}
    if prediction:
        row |= {"genre": prediction.genre, "duration_s": round(prediction.duration_s, 3), **prediction.probabilities}
        row["warning"] = prediction.warning or ""
        if segments:
            row["segments"] = [vars(s) for s in prediction.segments]
    return row


def _checkpoint_problem(err: Exception) -> str:
    """The line of torch's load_state_dict error that names the problem ("size mismatch for head.1.weight ...")."""
    while isinstance(err, InstantiationException) and err.__cause__:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and "state_dict" in lines[0] else first_line(err)
    if isinstance(err, KeyError):
        text = f"no {text} in its hyper-parameters"
    return text if len(text) <= 200 else text[:197] + "..."
