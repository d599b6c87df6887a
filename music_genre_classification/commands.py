"""Command line: `music-genre COMMAND ...`, `python -m music_genre_classification.commands COMMAND ...`, and each
command as a console script of its own (`infer ...` is `music-genre infer ...`).

COMMANDS names the typed function behind each command: its signature, type hints and docstring are the command's
flags, defaults, checks and help (the grammar is Fire's: `--name value`, `--name=value`, switches alone, the first
arguments by position), and nothing here repeats them. A function's module is imported only when its
command runs (or shows its help), so that `infer` starts without Lightning or MLflow.
"""

import ast
import difflib
import importlib
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

PACKAGE = "music_genre_classification"
COMMANDS = {  # command -> "module:function" below PACKAGE
    "train": "training.train:train",
    "test": "training.evaluate:test",
    "tune": "training.tune:tune",
    "ensemble": "training.ensemble:make_ensemble",
    "calibrate": "training.calibrate:calibrate",
    "infer": "serving.inference:run_infer",
    "features": "data.feature_table:run_features",
    "serve": "serving.api:run_server",
    "bot": "serving.bot:run_bot",
    "embed": "serving.library:run_embed",
    "similar": "serving.similar:run_similar",
    "map": "serving.library_map:run_map",
    "fma_manifest": "data.collection:fma_manifest",
    "musicnn_convert": "models.musicnn_convert:run_musicnn_convert",
}
HELP = {"-h", "--help"}


def command_function(name: str) -> Callable:
    """The typed function behind command `name`, its module imported now."""
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), function)


def main(argv: list[str] | None = None) -> None:
    """`music-genre COMMAND ...`, `python -m music_genre_classification.commands COMMAND ...` and every console
    script: the arguments checked against the command's function before any work, then the function run."""
    from music_genre_classification.config import drop_decoder_notes

    drop_decoder_notes()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in HELP:
        print(_listing())
        return
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        _fail(f"unknown command {name!r}{hint}; the commands: {', '.join(COMMANDS)}")
    if HELP.intersection(argv[1:]):
        print(command_help(name))
        return
    values = parse_arguments(name, argv[1:])
    _run(lambda: command_function(name)(**values))


def _listing() -> str:
    """The commands and the first line of their docstrings, read from the source rather than imported (fast)."""
    lines = ["usage: music-genre COMMAND [arguments]   (music-genre COMMAND --help: its flags)", "", "commands:"]
    for name, target in COMMANDS.items():
        module, _, function = target.partition(":")
        tree = ast.parse((Path(__file__).parent / f"{module.replace('.', '/')}.py").read_text())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        lines.append(f"  {name:<16} {(ast.get_docstring(node) or '').splitlines()[0]}")
    return "\n".join(lines)


def _signature(name: str) -> tuple[Callable, dict, list[inspect.Parameter], str | None]:
    """Command `name`'s function, its type hints, its flags (its parameters but keyword-only ones, which are for Python
    callers) and its `list[str]` parameter if any, which takes the free words (Hydra overrides)."""
    command = command_function(name)
    hints = typing.get_type_hints(command)
    named = [p for p in inspect.signature(command).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    words = next((p.name for p in named if _kinds(hints[p.name]) == {list}), None)
    return command, hints, [p for p in named if p.name != words], words


def command_help(name: str) -> str:
    """`COMMAND --help`: its usage, its function's docstring, and its flags as parse_arguments reads them."""
    command, hints, named, words = _signature(name)
    required = [p.name.upper() for p in named if p.default is p.empty]
    usage = " ".join([name, *required, *["[flags]"] * bool(named), *[f"[{words}...]"] * bool(words)])
    lines = [f"usage: {usage}", "", inspect.getdoc(command) or "", ""]
    for p in named:
        kinds = _kinds(hints[p.name])
        value = "" if kinds == {bool} else f" {p.name.upper()}" if str in kinds else " N" if int in kinds else " X"
        what = {frozenset({bool}): "a switch", frozenset({int}): "a whole number >= 1"}.get(frozenset(kinds), "")
        what = what or ("a number > 0" if float in kinds and str not in kinds else "")
        default = "required" if p.default is p.empty else "optional" if p.default is None else f"default {p.default!r}"
        lines.append(f"  --{p.name}{value}".ljust(31) + " " + ", ".join(filter(None, [what, default])))
    return "\n".join(lines if named else lines[:-1])


def _run(job: Callable[[], object]) -> None:
    """Run a command; bad input ends it with one line on stderr and exit code 1 instead of a traceback, and so does a
    command returning True (some file of a folder failed)."""
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


def _fail(message: str) -> typing.NoReturn:
    print("error: " + message.replace("\n", "\\n"), file=sys.stderr)  # one line, even for a name holding a newline
    sys.exit(1)


def parse_arguments(name: str, argv: list[str]) -> dict[str, object]:
    """The command line after the command's name, as keyword arguments of the command's function, taken as given and
    checked against its signature before any work: a path is the string typed (never a number or a tuple), a whole
    number is one >= 1, a number (float) is finite and > 0, a switch takes no value; an unknown or repeated flag, a
    missing value or argument is a one-line error naming the known flags. A `list[str]` parameter takes the free
    words after the positional arguments (Hydra overrides); keyword-only parameters are for Python callers."""
    _, hints, named, words = _signature(name)
    flags = {p.name for p in named}
    known = f"its flags: {', '.join(f'--{p.name}' for p in named)}" if named else "it takes Hydra overrides key=value"
    values, positional, tokens = {}, [], iter(argv)
    for token in tokens:
        if not token.startswith("--"):
            positional.append(token)
            continue
        key, given, raw = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in flags and key.startswith("no") and _kinds(hints.get(key[2:])) == {bool}:  # --nosegments
            key, given, raw = key[2:], "=", "false"
        if key not in flags:
            close = difflib.get_close_matches(key, flags, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            _fail(f"{name}: unknown flag --{key}{hint}; {known}")
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
    if len(positional) > len(free) and words is None:
        _fail(f"{name}: unexpected argument {positional[len(free)]!r}; {known}")
    for parameter, raw in zip(free, positional):
        values[parameter.name] = _value(parameter.name, raw, hints[parameter.name])
    missing = [f"--{p.name}" for p in named if p.name not in values and p.default is p.empty]
    if missing:
        _fail(f"{name} needs {' and '.join(missing)}; {known}")
    if words is not None:
        values[words] = positional[len(free) :]
    return values


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


def _script(name: str) -> Callable[[], None]:
    """Command `name` as a program of its own (a console script of pyproject.toml): `infer ...` runs exactly as
    `music-genre infer ...`, through the same checks."""
    return lambda: main([name, *sys.argv[1:]])


train_script, test_script, tune_script = _script("train"), _script("test"), _script("tune")
ensemble_script, calibrate_script, infer_script = _script("ensemble"), _script("calibrate"), _script("infer")
features_script, serve_script, bot_script = _script("features"), _script("serve"), _script("bot")
embed_script, similar_script, map_script = _script("embed"), _script("similar"), _script("map")

if __name__ == "__main__":
    main()
