"""Command line: python -m music_genre_classification.commands {train,tune,test,infer,features,bot,serve,ensemble,
embed,map,similar} ...

Imports happen inside each command so that `infer` starts without Lightning or MLflow.
"""

import difflib
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

import fire


def _run(job: Callable[[], object]) -> None:
    """Run a command; bad input ends it with one line on stderr and exit code 1 instead of a traceback."""
    from music_genre_classification.config import UserError
    from music_genre_classification.data.audio import AudioError
    from music_genre_classification.data.dataset import DataError

    try:
        failed = job()
    except (UserError, DataError, AudioError) as err:
        _fail(str(err))
    except OSError as err:  # the disk filled up, a file vanished or became unreadable mid-run
        _fail(f"{err.filename}: {err.strerror}" if err.filename else str(err))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if failed is True:
        sys.exit(1)


def _fail(message: str) -> None:
    print("error: " + message.replace("\n", "\\n"), file=sys.stderr)  # one line, even for a name holding a newline
    sys.exit(1)


def _path(option: str, value: object) -> str:
    """Fire reads `--x` with no value (and `--x -`) as True, and `--x 123` as a number."""
    if isinstance(value, bool) or value is None or value == "-":
        _fail(f"--{option} needs a path (standard input, '-', is not supported)")
    return str(value)


def _latest_model(model_path: object) -> str:
    """--model_path, or else the model the latest `train` pointed outputs/model_full.ckpt to, from any directory."""
    if model_path is None:
        from music_genre_classification.config import project_path

        return str(Path(project_path("outputs")) / "model_full.ckpt")
    return _path("model_path", model_path)


def _whole(option: str, value: object, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        _fail(f"--{option} must be a whole number >= {least}, not {value!r}")
    return value


def _flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        _fail(f"--{option} is a switch and takes no value (got {value!r})")
    return value


def train(*overrides: str) -> None:
    """Train a model. Hydra overrides, e.g.: model=baseline trainer.max_epochs=5 datamodule.batch_size=64 trainer=gpu"""
    from music_genre_classification.training.train import train as run_training

    _run(lambda: run_training(list(overrides)) and None)


def tune(*overrides: str) -> None:
    """Optuna study over a model's hyper-parameters, e.g. tune=cnn split=fault_filtered tune.n_trials=30; resumable."""
    from music_genre_classification.training.tune import tune as run_study

    _run(lambda: run_study([str(o) for o in overrides]) and None)


def test(checkpoint: str, *overrides: str) -> None:
    """Score CHECKPOINT on the test part of its split, or on other data: datamodule.root=/path split=all"""
    checkpoint = _path("checkpoint", checkpoint)
    from music_genre_classification.training.evaluate import test as run_test

    _run(lambda: run_test(checkpoint, [str(o) for o in overrides]) and None)


def infer(
    model_path: str,
    audio_path: str,
    output_path: str | None = None,
    segments: bool = False,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
    tags: bool = False,
) -> None:
    """Genre of one audio file, or of every audio file below a folder (results to --output_path .csv/.jsonl);
    a folder of spectrograms (.npy + params.json) too. --engine ray [--address auto|ray://host:10001]: on Ray.
    --tags: also the audio's top tags (moods, eras, instruments, styles) from musicnn trained on 200,000 songs."""
    model_path, audio_path = _path("model_path", model_path), _path("audio_path", audio_path)
    output_path = None if output_path is None else _path("output_path", output_path)
    segments, batch_size = _flag("segments", segments), _whole("batch_size", batch_size)
    address, tags = None if address is None else _path("address", address), _flag("tags", tags)
    from music_genre_classification.serving.inference import run_infer

    _run(lambda: run_infer(model_path, audio_path, output_path, segments, batch_size, str(engine), address, tags))


def embed(
    model_path: str,
    audio_path: str,
    output_path: str,
    batch_size: int = 16,
    engine: str = "local",
    address: str | None = None,
) -> None:
    """Per track below a folder (audio, or spectrograms .npy + params.json): the model's embedding, genre,
    probabilities and duration, to --output_path .parquet/.npz (resumable); --engine ray as for infer."""
    model_path, audio_path = _path("model_path", model_path), _path("audio_path", audio_path)
    output_path, batch_size = _path("output_path", output_path), _whole("batch_size", batch_size)
    address = None if address is None else _path("address", address)
    from music_genre_classification.serving.library import run_embed

    _run(lambda: run_embed(model_path, audio_path, output_path, batch_size, str(engine), address))


def map_(index: str, output_path: str, method: str = "tsne") -> None:
    """A 2-D map of a library table made by `embed` (--method tsne or umap): <output>.png and interactive .html."""
    index, output_path = _path("index", index), _path("output_path", output_path)
    from music_genre_classification.serving.library_map import run_map

    _run(lambda: run_map(index, output_path, str(method)) and None)


def similar(
    index: str, audio_path: str | None = None, path: str | None = None, top: int = 10, model_path: str | None = None
) -> None:
    """The tracks of a library table most similar to --audio_path (a new file, embedded by the library's model) or
    --path (a track of the library), by cosine similarity of embeddings (a faiss index saved beside the table)."""
    index, top = _path("index", index), _whole("top", top)
    audio_path, path, model_path = (
        None if v is None else _path(n, v)
        for n, v in (("audio_path", audio_path), ("path", path), ("model_path", model_path))
    )
    from music_genre_classification.serving.similar import run_similar

    _run(lambda: run_similar(index, audio_path, path, top, model_path) and None)


def features(audio_path: str, output_path: str | None = None, segment_s: float | None = None) -> None:
    """The 57 GTZAN features of a file, or of every audio file below a folder, as a features_30_sec.csv-like table
    (.csv/.jsonl; resumable); --segment_s 3: one row per 3-s chunk, as features_3_sec.csv."""
    from music_genre_classification.data.feature_table import run_features

    _run(lambda: run_features(audio_path, output_path, segment_s))


def bot(
    model_path: str | None = None,
    token: str | None = None,
    base_url: str | None = None,
    base_file_url: str | None = None,
    local_mode: bool = False,
    max_file_mb: float | None = None,
    files_per_minute: int = 5,
) -> None:
    """Telegram bot (long polling); token from --token or TELEGRAM_BOT_TOKEN; --base_url for a self-hosted server;
    --model_path: default the latest trained model, outputs/model_full.ckpt of the project."""
    model_path, local_mode = _latest_model(model_path), _flag("local_mode", local_mode)
    token, base_url, base_file_url = (None if v is None else str(v) for v in (token, base_url, base_file_url))
    files_per_minute = _whole("files_per_minute", files_per_minute)
    if max_file_mb is not None and (isinstance(max_file_mb, bool | str) or not max_file_mb > 0):
        _fail(f"--max_file_mb must be a number of megabytes > 0, not {max_file_mb!r}")
    from music_genre_classification.serving.bot import run_bot

    _run(lambda: run_bot(model_path, token, base_url, base_file_url, local_mode, max_file_mb, files_per_minute))


def serve(
    model_path: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_upload_mb: float = 50.0,
    cors_origins: str | None = None,
    max_batch: int = 16,
    upload_timeout_s: float = 20.0,
) -> None:
    """HTTP API (POST /predict, GET /models, /health, Swagger UI at /docs) and web page (GET /) over the checkpoints.

    --model_path: a checkpoint, a folder of them or several separated by commas (?model=<file name> picks one);
    default the latest trained model, outputs/model_full.ckpt of the project;
    --cors_origins: origins allowed to call the API from a browser, comma-separated, or '*'.
    --upload_timeout_s: a client that sends nothing for this long in the middle of an upload gets 408.
    """
    model_path = _latest_model(model_path)
    from music_genre_classification.serving.api import run_server

    _run(lambda: run_server(model_path, host, port, workers, max_upload_mb, cors_origins, max_batch, upload_timeout_s))


def ensemble(checkpoints: str | tuple, output_path: str) -> None:
    """One checkpoint averaging several models' probabilities (CNN and features alike), weights chosen on val."""
    from music_genre_classification.training.ensemble import make_ensemble

    paths = checkpoints.split(",") if isinstance(checkpoints, str) else [str(p) for p in checkpoints]
    _run(lambda: make_ensemble([p.strip() for p in paths if p.strip()], output_path) and None)


def calibrate(checkpoint: str, output_path: str) -> None:
    """Fit CHECKPOINT's temperature on the val part of its split; write it with the temperature to --output_path."""
    checkpoint, output_path = _path("checkpoint", checkpoint), _path("output_path", output_path)
    from music_genre_classification.training.calibrate import calibrate as run_calibrate

    _run(lambda: run_calibrate(checkpoint, output_path) and None)


def fma_manifest(tracks_csv: str, audio_dir: str, output_path: str, subset: str | None = None) -> None:
    """A manifest (path,genre,split,artist) of the Free Music Archive: its tracks.csv (fma_metadata) and an audio
    folder such as fma_small; train on it with datamodule.root=<manifest> datamodule.genres=auto split=manifest."""
    paths = [
        _path(o, v) for o, v in (("tracks_csv", tracks_csv), ("audio_dir", audio_dir), ("output_path", output_path))
    ]
    from music_genre_classification.data.collection import fma_manifest as write_manifest

    _run(lambda: write_manifest(*paths, None if subset is None else str(subset)) and None)


COMMANDS = {"train": train, "test": test, "infer": infer, "features": features, "bot": bot, "serve": serve}
COMMANDS |= {"ensemble": ensemble, "calibrate": calibrate, "tune": tune, "fma_manifest": fma_manifest}
COMMANDS |= {"embed": embed, "map": map_, "similar": similar}
HELP = {"-h", "--help", "--"}  # Fire's own (help, and its flags after a lone --): left to Fire


def parse_arguments(name: str, command: Callable, argv: list[str]) -> tuple[list, dict]:
    """The command line after the command's name, as the command's arguments, taken as given and checked against
    its signature before any work: a path is the string typed (Fire reads `1_000` as the number 1000, `2024` as an
    int, `a,b` as a tuple), a whole number is one >= 1, a number (float) is finite and > 0, a switch takes no value;
    an unknown or repeated flag, a missing value or argument is a one-line error naming the known flags."""
    parameters = inspect.signature(command).parameters
    hints = typing.get_type_hints(command)
    named = [p for p in parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    rest = next((p for p in parameters.values() if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    known = ", ".join(f"--{p.name}" for p in named)
    values, positional, tokens = {}, [], iter(argv)
    for token in tokens:
        if not token.startswith("--"):
            positional.append(token)
            continue
        key, given, raw = token[2:].partition("=")
        key = key.replace("-", "_")
        switch = key not in parameters and key.startswith("no") and _kinds(hints.get(key[2:])) == {bool}
        if switch:
            key, given, raw = key[2:], "=", "false"
        if key not in hints or parameters[key] not in named:
            close = difflib.get_close_matches(key, [p.name for p in named], n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            _fail(f"{name}: unknown flag --{key}{hint}; its flags: {known}")
        if key in values:
            _fail(f"{name}: --{key} is given twice")
        if _kinds(hints[key]) == {bool}:
            raw = raw if given else "true"
        elif not given:
            raw = next(tokens, None)
            if raw is None or raw.startswith("--"):
                _fail(f"--{key} needs a value")
        values[key] = _value(key, raw, hints[key])
    free = _positional_slots([p for p in named if p.name not in values], hints)
    if len(positional) > len(free) and rest is None:
        _fail(f"{name}: unexpected argument {positional[len(free)]!r}; its flags: {known}")
    for parameter, raw in zip(free, positional):
        values[parameter.name] = _value(parameter.name, raw, hints[parameter.name])
    missing = [f"--{p.name}" for p in named if p.name not in values and p.default is inspect.Parameter.empty]
    if missing:
        _fail(f"{name} needs {' and '.join(missing)}; its flags: {known}")
    if rest is None:
        return [], values
    return [values.pop(p.name, p.default) for p in named] + positional[len(free) :], values  # then *overrides


def _positional_slots(free: list[inspect.Parameter], hints: dict) -> list[inspect.Parameter]:
    """Positional values fill the required arguments, and paths after them (`bot CHECKPOINT`); never a switch or a
    number, so that a stray word after one (`--segments yes`) is refused rather than taken for another argument."""
    for i, parameter in enumerate(free):
        if parameter.default is not parameter.empty and str not in _kinds(hints[parameter.name]):
            return free[:i]
    return free


def _kinds(hint: object) -> set:
    """int, float, str... a type hint allows, None left out."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return {typing.get_origin(k) or k for k in typing.get_args(hint)} - {type(None)}
    return {typing.get_origin(hint) or hint}


def _value(key: str, raw: str, hint: object) -> object:
    kinds = _kinds(hint)
    if str in kinds:  # paths, names, addresses: the string typed, never a number or a tuple
        if raw == "":
            _fail(f"--{key} needs a value")
        return raw
    if kinds == {bool}:
        if raw.lower() not in ("true", "false", "1", "0"):
            _fail(f"--{key} is a switch and takes no value (got {raw!r})")
        return raw.lower() in ("true", "1")
    if kinds == {int}:
        number = int(raw) if re.fullmatch(r"[+-]?\d[\d_]*", raw.strip()) else None
        if number is None or number < 1:
            _fail(f"--{key} must be a whole number >= 1, not {raw if number is not None else repr(raw)}")
        return number
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        _fail(f"--{key} must be a number > 0, not {raw!r}")
    return number


def main() -> None:
    """`music-genre COMMAND ...` and `python -m music_genre_classification.commands COMMAND ...`"""
    from music_genre_classification.config import drop_decoder_notes

    drop_decoder_notes()
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS and not HELP.intersection(argv):
        command = COMMANDS[argv[0]]
        args, kwargs = parse_arguments(argv[0], command, argv[1:])
        command(*args, **kwargs)
    else:  # the list of commands, or a command's help
        fire.Fire(COMMANDS)


def _alone(command: Callable, name: str) -> None:
    """One command as its own program (a console script of pyproject.toml): `train ...` is `music-genre train ...`."""
    from music_genre_classification.config import drop_decoder_notes

    drop_decoder_notes()
    fire.Fire(command, name=name)


# the console scripts beside `music-genre` (pyproject.toml [project.scripts]): `poetry run train`, or `train` in the
# activated environment
def train_script() -> None:
    _alone(train, "train")


def test_script() -> None:
    _alone(test, "test")


def infer_script() -> None:
    _alone(infer, "infer")


def serve_script() -> None:
    _alone(serve, "serve")


def bot_script() -> None:
    _alone(bot, "bot")


def embed_script() -> None:
    _alone(embed, "embed")


def similar_script() -> None:
    _alone(similar, "similar")


def map_script() -> None:
    _alone(map_, "map")


def tune_script() -> None:
    _alone(tune, "tune")


def ensemble_script() -> None:
    _alone(ensemble, "ensemble")


def calibrate_script() -> None:
    _alone(calibrate, "calibrate")


def features_script() -> None:
    _alone(features, "features")


if __name__ == "__main__":
    main()
