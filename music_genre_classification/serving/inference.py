"""The `infer` command: one file's genre on the terminal (and in a .txt, .json or .csv file), or a folder's rows
(serving/batch.py).

`test` and the bot use the same pieces: load_checkpoint (models/checkpoint.py), the checkpoint kind's predictor
(models/predictors.py: CNN, features model or ensemble) and GenreClassifier (models/classifier.py).
"""

import csv
import json
import sys
from pathlib import Path

from music_genre_classification.config import UserError
from music_genre_classification.data.fetch import file_sha256
from music_genre_classification.data.folder import ResultTable, check_writable
from music_genre_classification.models.classifier import GenreClassifier, Prediction
from music_genre_classification.models.tags import NO_SPECTROGRAM_TAGS, format_tags
from music_genre_classification.serving.batch import FolderRows, check_source, folder_job


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
    if prediction.tags is not None:
        lines.append(f"tags: {format_tags(prediction.tags)}")
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
            tags = [] if prediction.tags is None else [format_tags(prediction.tags, ";", ":")]
            header = ["genre", *prediction.probabilities, "duration_s", "warning", "not_music"] + ["tags"] * len(tags)
            writer.writerow(header)
            values = [*prediction.probabilities.values(), round(prediction.duration_s, 3), prediction.warning or ""]
            writer.writerow([prediction.genre, *values, prediction.not_music or "", *tags])
    elif path.suffix == ".txt":
        warning = f"warning: {prediction.warning}\n" if prediction.warning else ""
        path.write_text(format_prediction(prediction, segments) + "\n" + warning)
    else:
        raise UserError(f"{path}: output format must be {', '.join(SINGLE_FORMATS)}")


def run_infer(
    model_path: str,
    audio_path: str,
    output_path: str | None = None,
    segments: bool = False,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
    tags: bool = False,
) -> bool:
    """Genre of one audio file, or of every audio file below a folder (or of a folder of spectrograms).

    Results to --output_path (.json for a file, .csv/.jsonl for a folder); spectrograms are .npy + params.json.
    --engine ray [--address auto|ray://host:10001]: on Ray.
    --tags: also the audio's top tags (moods, eras, instruments, styles) from musicnn trained on 200,000 songs.

    The `infer` command; returns True when some file failed (the exit code says so)."""
    source = check_source(audio_path, engine)
    if tags and source.is_file() and source.suffix == ".npy":
        raise UserError(f"{source}: --tags: {NO_SPECTROGRAM_TAGS}")
    output = Path(output_path) if output_path else None
    if output and source.is_file():
        if output.suffix not in SINGLE_FORMATS:
            raise UserError(f"{output}: output format must be {', '.join(SINGLE_FORMATS)}")
        check_writable(output)  # now, not after the work is done
    classifier = GenreClassifier.from_checkpoint(model_path)
    if source.is_dir():
        rows = FolderRows(tuple(classifier.genres), segments=segments, tags=tags)
        if not output:
            return folder_job(classifier, model_path, source, None, rows, batch_size, engine, address) > 0
        # every row records the checkpoint that made it: a rerun with another one is refused, not mixed in
        with ResultTable(output, rows.columns(), same={"model_sha256": file_sha256(Path(model_path))}) as table:
            return folder_job(classifier, model_path, source, table, rows, batch_size, engine, address) > 0
    prediction = classifier.predict(source, progress=True, tags=tags)
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
