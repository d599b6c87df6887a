"""Labelling audio with a trained checkpoint: GenreClassifier for Python, run_infer for the CLI.

`test` and the bot use the same pieces: load_checkpoint, the LogMel front end, track_spectrograms and
clip_probabilities. Imports stay light (no Lightning, no MLflow) so that one file is labelled quickly.
"""

import csv
import json
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from music_genre_classification.config import UserError
from music_genre_classification.data.audio import AudioError, decode_blocks, is_audio_file, resample
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams, track_spectrograms
from music_genre_classification.models.networks import clip_probabilities, for_inference


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint of this project, or a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "genres" not in ckpt.get("hyper_parameters", {}):
        raise UserError(f"{path}: not a music_genre_classification checkpoint")
    return ckpt


Window = tuple[float, float, torch.Tensor]  # start_s, end_s, spectrogram of one window of a track


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
    duration_s: float
    segments: list[Segment] = field(default_factory=list)  # one per window of window_s seconds

    def to_dict(self, segments: bool = True) -> dict:
        row = {"genre": self.genre, "probabilities": self.probabilities, "duration_s": round(self.duration_s, 3)}
        if segments:
            row["segments"] = [vars(s) for s in self.segments]
        return row


class GenreClassifier:
    def __init__(self, net: torch.nn.Module, genres: list[str], params: SpectrogramParams, crop: int, hop: int):
        self.net, self.genres, self.crop, self.hop = for_inference(net), list(genres), crop, hop
        self.front_end = LogMel(params)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> "GenreClassifier":
        ckpt = load_checkpoint(path)
        hp = ckpt["hyper_parameters"]
        net = instantiate(hp["net"], n_genres=len(hp["genres"]))
        net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        params = SpectrogramParams(**hp["spectrogram"])
        return cls(net.to(device), hp["genres"], params, hp["crop_columns"], hp["eval_hop"])

    @property
    def sample_rate(self) -> int:
        return self.front_end.params.sample_rate

    def spectrograms(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> list[Window]:
        """A file path, or a waveform ([samples] or [samples, channels]) at `sample_rate`, as window spectrograms."""
        if isinstance(source, np.ndarray):
            blocks, name = [resample(source, sample_rate or self.sample_rate, self.sample_rate)], "waveform"
        else:
            blocks, name = decode_blocks(source, self.sample_rate, self.front_end.params.window_s), str(source)
        return track_spectrograms(blocks, self.front_end, name)

    def predict(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> Prediction:
        return self._predict_tracks([self.spectrograms(source, sample_rate)])[0]

    def predict_many(
        self, paths: Iterable[str | Path], batch_size: int = 16
    ) -> Iterator[tuple[Path, Prediction | None, str | None]]:
        """(path, prediction, None) or (path, None, error) per file; decoding overlaps the model's work."""
        paths = [Path(p) for p in paths]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(paths), batch_size):
                batch = paths[start : start + batch_size]
                tracks = list(pool.map(self._safe_spectrograms, batch))
                good = [t for t in tracks if isinstance(t, list)]
                predictions = iter(self._predict_tracks(good)) if good else iter(())
                for path, track in zip(batch, tracks):
                    if isinstance(track, list):
                        yield path, next(predictions), None
                    else:
                        yield path, None, track

    def _safe_spectrograms(self, path: Path) -> list[Window] | str:
        try:
            return self.spectrograms(path)
        except AudioError as err:
            return str(err)

    @torch.inference_mode()
    def _predict_tracks(self, tracks: list[list[Window]]) -> list[Prediction]:
        specs = [spec for track in tracks for _, _, spec in track]
        probs = clip_probabilities(self.net, specs, self.crop, self.hop).cpu().numpy()
        results, i = [], 0
        for track in tracks:
            window_probs = probs[i : i + len(track)]
            i += len(track)
            lengths = np.array([end - start for start, end, _ in track])
            track_probs = (window_probs * lengths[:, None]).sum(0) / lengths.sum()  # longer windows count more
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


def write_single(prediction: Prediction, path: Path, segments: bool) -> None:
    """One file's result, in the format named by the extension (.txt, .json, .csv)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(prediction.to_dict(segments), indent=2))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["genre", *prediction.probabilities, "duration_s"])
            writer.writerow([prediction.genre, *prediction.probabilities.values(), round(prediction.duration_s, 3)])
    elif path.suffix == ".txt":
        path.write_text(format_prediction(prediction, segments) + "\n")
    else:
        raise UserError(f"{path}: output format must be .txt, .json or .csv")


class ResultTable:
    """Rows of a folder run in .csv or .jsonl, written as they come; a rerun skips the files already done.

    `infer` writes its predictions (the default columns); `features` passes its own columns and key column.
    """

    def __init__(
        self, path: Path, genres: list[str], segments: bool, columns: list[str] | None = None, key: str = "path"
    ):
        if path.suffix not in (".csv", ".jsonl"):
            raise UserError(f"{path}: a folder's results go to .csv or .jsonl")
        self.path, self.segments = path, segments
        default = ["path", "genre", *genres, "duration_s", "error"] + (["segments"] if segments else [])
        self.columns = columns or default
        rows = self._read() if path.is_file() else []
        self.done = {row[key] for row in rows if not row.get("error")}
        self._write([r for r in rows if not r.get("error")], mode="w")  # failed files are tried again

    def _read(self) -> list[dict]:
        with open(self.path, newline="") as f:
            if self.path.suffix == ".csv":
                rows = list(csv.DictReader(f))
                if rows and list(rows[0]) != self.columns:
                    raise UserError(f"{self.path}: has other columns than this run writes; choose a new output file")
                return rows
            return [json.loads(line) for line in f if line.strip()]

    def _write(self, rows: list[dict], mode: str = "a") -> None:
        tmp = self.path.with_name(self.path.name + ".tmp") if mode == "w" else self.path
        with open(tmp, mode, newline="") as f:
            if self.path.suffix == ".csv":
                writer = csv.DictWriter(f, fieldnames=self.columns)
                if mode == "w":
                    writer.writeheader()
                writer.writerows(rows)
            else:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        if mode == "w":
            tmp.replace(self.path)

    def add_rows(self, rows: list[dict]) -> None:
        self._write(rows)

    def add(self, path: str, prediction: Prediction | None, error: str | None) -> None:
        row = {"path": path, "genre": "", "duration_s": "", "error": error or ""}
        if prediction:
            row |= {
                "genre": prediction.genre,
                "duration_s": round(prediction.duration_s, 3),
                **prediction.probabilities,
            }
            if self.segments:
                row["segments"] = [vars(s) for s in prediction.segments]
        if self.path.suffix == ".csv" and "segments" in row:
            row["segments"] = json.dumps(row["segments"])
        self._write([row])


def audio_files(folder: Path) -> tuple[list[Path], int]:
    """Audio files below `folder` (recursive, sorted) and the number of other files ignored."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    audio = [p for p in files if is_audio_file(p)]
    return audio, len(files) - len(audio)


def run_infer(
    model_path: str, audio_path: str, output_path: str | None, segments: bool = False, batch_size: int = 16
) -> bool:
    """The `infer` command; returns True when some file failed (the exit code says so)."""
    classifier = GenreClassifier.from_checkpoint(model_path)
    source = Path(audio_path)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    output = Path(output_path) if output_path else None
    if source.is_file():
        prediction = classifier.predict(source)
        print(format_prediction(prediction, segments))
        if output:
            write_single(prediction, output, segments)
        return False
    return label_folder(classifier, source, output, segments, batch_size)


def label_folder(
    classifier: GenreClassifier, folder: Path, output: Path | None, segments: bool, batch_size: int
) -> bool:
    from tqdm import tqdm

    files, ignored = audio_files(folder)
    table = ResultTable(output, classifier.genres, segments) if output else None
    todo = [p for p in files if not table or str(p) not in table.done]
    skipped = f", {len(files) - len(todo)} already done" if len(todo) < len(files) else ""
    print(
        f"{len(todo)} audio files to label in {folder}{skipped}"
        + (f" ({ignored} non-audio ignored)" if ignored else "")
    )
    failures, started = 0, time.perf_counter()
    bar = tqdm(classifier.predict_many(todo, batch_size), total=len(todo), unit="file", file=sys.stderr)
    for path, prediction, error in bar:
        failures += error is not None
        if table:
            table.add(str(path), prediction, error)
        else:
            bar.write(f"{path}\t{prediction.genre if prediction else 'error: ' + error}")
    rate = len(todo) / max(time.perf_counter() - started, 1e-9)
    print(
        f"labelled {len(todo) - failures} files, {failures} failed, {rate:.1f} files/s"
        + (f" -> {output}" if output else "")
    )
    return failures > 0
