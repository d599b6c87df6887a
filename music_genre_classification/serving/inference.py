"""Labelling audio with a trained checkpoint: GenreClassifier for Python, run_infer for the CLI.

`test` and the bot use the same pieces: load_checkpoint, the checkpoint kind's predictor (models/predictors.py:
CNN, features model or ensemble), track_spectrograms and track_probabilities. Imports stay light (no Lightning,
no MLflow) so that one file is labelled quickly.
"""

import base64
import csv
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException

from music_genre_classification.config import UserError, first_line
from music_genre_classification.data.audio import AudioError, decode_blocks, waveform
from music_genre_classification.data.music_check import REASONS, SKIPPED, judged_windows, not_music, window_evidence
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.models.predictors import checkpoint_kind, judged_track_outputs, predictor
from music_genre_classification.serving.folder import (
    ResultTable,
    check_writable,
    track_files,
    warn_skipped,
)


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


# start_s, end_s, the model's input for one window of a track (None: skipped), verdict (None: it may be music; else
# why not, a key of music_check.REASONS)
Window = tuple[float, float, object, str | None]


@dataclass
class Segment:
    start_s: float
    end_s: float
    genre: str | None  # None: no music in this window (not_music says why)
    probability: float | None
    not_music: str | None = None


@dataclass
class Prediction:
    genre: str
    probabilities: dict[str, float]  # every genre, most likely first, summing to 1
    duration_s: float  # of the audio really decoded and classified
    segments: list[Segment] = field(default_factory=list)  # one per window of window_s seconds
    warning: str | None = None  # e.g. the file ends before its header says (cut off): only what is there is judged
    embedding: np.ndarray | None = None  # the model's embedding of the track, when asked for (`embed`)
    # no window sounds like music (speech, a tone, noise...): the genre is only the model's closest guess, and why
    not_music: str | None = None

    @property
    def music(self) -> bool:
        return self.not_music is None

    def to_dict(self, segments: bool = True) -> dict:
        row = {"genre": self.genre, "probabilities": self.probabilities, "duration_s": round(self.duration_s, 3)}
        row |= {"music": self.music, "not_music": self.not_music}
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

    def spectrograms(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> list[tuple]:
        """A file path, or a waveform at `sample_rate` ([samples], [samples, channels] or [channels, samples]), as
        window spectrograms (start_s, end_s, input) of the windows not skipped (silence, noise)."""
        return [(start, end, x) for start, end, x, _ in self._track(source, sample_rate)[0] if x is not None]

    def _track(self, source: str | Path | np.ndarray, sample_rate: int | None) -> tuple[list[Window], str | None]:
        """Window spectrograms and the decoder's warning (a file cut off: only what is there is classified)."""
        if isinstance(source, str | os.PathLike) and str(source).endswith(".npy"):
            return [self._spectrogram_window(Path(source))], None
        if isinstance(source, str | os.PathLike):
            blocks, name = decode_blocks(source, self.sample_rate, self.front_end.params.window_s), str(source)
        else:
            blocks, name = [waveform(source, sample_rate, self.sample_rate)], "waveform"
        windows = judged_windows(blocks, self.front_end, name)
        return windows, getattr(blocks, "warning", None)

    def check_spectrograms(self, params_json: Path) -> None:
        """A folder of precomputed spectrograms (.npy + params.json) is fit for this model, or a UserError."""
        if not isinstance(self.front_end, LogMel):
            raise UserError(f"{params_json.parent}: spectrograms need a CNN checkpoint; this model reads audio")
        try:
            found = SpectrogramParams.from_dataset(params_json)
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{params_json}: not a spectrogram description ({first_line(err)})") from None
        if found != self.front_end.params:
            raise UserError(f"{params_json} describes {found}, but the model expects {self.front_end.params}")

    def _spectrogram_window(self, path: Path) -> Window:
        """One precomputed spectrogram [n_mels, columns] (data/dataset/spectrograms) as one window."""
        if not isinstance(self.front_end, LogMel):
            raise AudioError(f"{path}: spectrograms need a CNN checkpoint; this model reads audio")
        try:
            spec = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise AudioError(f"{path}: not a readable spectrogram ({first_line(err)})") from None
        params = self.front_end.params
        if spec.ndim != 2 or spec.shape[0] != params.n_mels or not np.isfinite(spec).all():
            raise AudioError(f"{path}: not a spectrogram of {params.n_mels} mel bands (shape {spec.shape})")
        spec = torch.from_numpy(spec.astype(np.float32))
        verdict = not_music(window_evidence(spec, params.top_db))
        if verdict in SKIPPED:
            raise AudioError(f"{path}: the spectrogram holds {REASONS[verdict]} sound, not music")
        return 0.0, spec.shape[1] / params.columns_per_second, spec, verdict

    def predict(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> Prediction:
        windows, warning = self._track(source, sample_rate)
        prediction = self._predict_tracks([windows])[0]
        prediction.warning = warning
        return prediction

    def predict_many(
        self, paths: Iterable[str | Path], batch_size: int = 16, embeddings: bool = False
    ) -> Iterator[tuple[Path, Prediction | None, str | None]]:
        """(path, prediction, None) or (path, None, error) per file, in order; `embeddings`: each prediction holds
        the track's embedding.

        Two threads decode and make the inputs of the next batches while the model runs on this one: decoding,
        the front end and the network each hold one core at a time, so both cores stay busy.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        paths, ahead = iter(Path(p) for p in paths), deque()
        with ThreadPoolExecutor(max_workers=2) as pool, _torch_threads(1):
            while True:
                while len(ahead) < 2 * batch_size and (path := next(paths, None)) is not None:
                    ahead.append((path, pool.submit(self._safe_track, path)))
                if not ahead:
                    return
                batch = [ahead.popleft() for _ in range(min(batch_size, len(ahead)))]
                tracks = [future.result() for _, future in batch]
                good = [windows for windows, _ in (t for t in tracks if isinstance(t, tuple))]
                predictions = iter(self._predict_tracks(good, embeddings)) if good else iter(())
                for (path, _), track in zip(batch, tracks):
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

    def _predict_tracks(self, tracks: list[list[Window]], embeddings: bool = False) -> list[Prediction]:
        results = []
        for track, (track_probs, window_probs, embedding) in zip(
            tracks, judged_track_outputs(self.model, tracks, embeddings)
        ):
            segments = [
                Segment(round(s, 3), round(e, 3), self.genres[int(p.argmax())], round(float(p.max()), 4))
                if verdict is None
                else Segment(round(s, 3), round(e, 3), None, None, REASONS[verdict])
                for (s, e, _, verdict), p in zip(track, window_probs)
            ]
            results.append(self._prediction(track_probs, track[-1][1], segments))
            results[-1].embedding = embedding
            verdicts = [verdict for *_, verdict in track if verdict not in SKIPPED]
            if None not in verdicts:  # no window may be music: the genre is a guess
                results[-1].not_music = REASONS[max(set(verdicts), key=verdicts.count)]
        return results

    def _prediction(self, probs: np.ndarray, duration_s: float, segments: list[Segment]) -> Prediction:
        probs = probs / probs.sum()
        order = np.argsort(-probs)
        ranked = {self.genres[i]: float(probs[i]) for i in order}
        return Prediction(self.genres[order[0]], ranked, duration_s, segments)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads for a while: with the front end in worker threads beside the network, one each
    keeps the two cores busy without the threads of one stage waiting on another's (2 each halved the rate)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def not_music_warning(name: object, prediction: Prediction) -> str:
    """The plain words for a track that does not sound like music."""
    return f"{name}: does not sound like music ({prediction.not_music}); not sure of any genre"


def format_prediction(prediction: Prediction, segments: bool = False, bar_width: int = 20) -> str:
    lines = [f"genre: {prediction.genre}  ({prediction.duration_s:.1f} s)"]
    if not prediction.music:
        lines = [
            f"genre: not sure: does not sound like music ({prediction.not_music})  ({prediction.duration_s:.1f} s)"
        ]
        lines.append(f"closest genre: {prediction.genre}")
    for genre, p in prediction.probabilities.items():
        lines.append(f"  {genre:<10} {p:6.1%} {'█' * round(p * bar_width)}")
    if segments:
        lines.append("timeline:")
        for s in prediction.segments:
            if s.genre is None:
                lines.append(f"  {s.start_s:7.1f}-{s.end_s:7.1f} s  no music ({s.not_music})")
            else:
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
            writer.writerow(["genre", *prediction.probabilities, "duration_s", "warning", "not_music"])
            values = [*prediction.probabilities.values(), round(prediction.duration_s, 3), prediction.warning or ""]
            values.append(prediction.not_music or "")
            writer.writerow([prediction.genre, *values])
    elif path.suffix == ".txt":
        warning = f"warning: {prediction.warning}\n" if prediction.warning else ""
        path.write_text(format_prediction(prediction, segments) + "\n" + warning)
    else:
        raise UserError(f"{path}: output format must be {', '.join(SINGLE_FORMATS)}")


ENGINES = ("local", "ray")


def run_infer(
    model_path: str,
    audio_path: str,
    output_path: str | None,
    segments: bool = False,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
) -> bool:
    """The `infer` command; returns True when some file failed (the exit code says so)."""
    source = check_source(audio_path, engine)
    output = Path(output_path) if output_path else None
    if output and source.is_file():
        if output.suffix not in SINGLE_FORMATS:
            raise UserError(f"{output}: output format must be {', '.join(SINGLE_FORMATS)}")
        check_writable(output)  # now, not after the work is done
    classifier = GenreClassifier.from_checkpoint(model_path)
    if source.is_dir():
        rows = FolderRows(tuple(classifier.genres), segments=segments)
        table = ResultTable(output, rows.columns()) if output else None
        return folder_job(classifier, model_path, source, table, rows, batch_size, engine, address) > 0
    prediction = classifier.predict(source)
    print(format_prediction(prediction, segments))
    if prediction.warning:
        print(f"warning: {prediction.warning}", file=sys.stderr)
    if not prediction.music:
        print(f"warning: {not_music_warning(source, prediction)}", file=sys.stderr)
    if output:
        try:
            write_single(prediction, output, segments)
        except OSError as err:
            raise UserError(f"{output}: cannot be written ({err.strerror})") from None
    return False


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

    def columns(self) -> list[str]:
        columns = ["path", "genre", *self.genres, "duration_s", "error", "warning", "not_music"]
        columns += ["segments"] * self.segments
        return columns + ["label", "embedding"] * self.embeddings

    def __call__(self, path: Path, prediction: Prediction | None, error: str | None) -> dict:
        row = result_row(path, prediction, error, self.segments)
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
        results = (rows(*result) for result in classifier.predict_many(todo, batch_size, rows.embeddings))
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


def _checkpoint_problem(err: Exception) -> str:
    """The line of torch's load_state_dict error that names the problem ("size mismatch for head.1.weight ...")."""
    while isinstance(err, InstantiationException) and err.__cause__:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[1] if len(lines) > 1 and "state_dict" in lines[0] else first_line(err)
    if isinstance(err, KeyError):
        text = f"no {text} in its hyper-parameters"
    return text if len(text) <= 200 else text[:197] + "..."
