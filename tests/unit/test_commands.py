"""One CLI: `music-genre X`, `python -m music_genre_classification.commands X` and the console script `X` are one
dispatch, and a command's flags are its function's parameters (and the flags docs/cli.md documents)."""

import inspect
import re
import sys
import tomllib
import typing
from importlib import metadata

import pytest
from helpers.processes import REPO

from music_genre_classification import commands, config

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture
def plain_stderr(monkeypatch):
    """In this process, stderr stays pytest's: the decoder-note filter would move descriptor 2 for good."""
    monkeypatch.setattr(config, "drop_decoder_notes", lambda: None)


def outcome(run, capsys) -> tuple[object, str, str]:
    with pytest.raises(SystemExit) as exit_:
        run()
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["infer", "m.ckpt", "a.wav", "--batch_size", "0"],
        ["infer", "--model_path", "m.ckpt", "--audio_path", "a.wav", "--output_path", "o.csv", "--segments", "yes"],
        ["serve", "--max_upload_mb", "-1"],
        ["bot", "--local_mode=maybe"],
        *[[name, "--no_such_flag"] for name in commands.COMMANDS],
    ],
)
def test_every_console_script_runs_the_checks_of_music_genre(argv, capsys, monkeypatch, plain_stderr):
    name, *rest = argv
    monkeypatch.setattr(sys, "argv", ["music-genre", *argv])
    expected = outcome(metadata.EntryPoint("music-genre", SCRIPTS["music-genre"], "console_scripts").load(), capsys)
    code, out, err = expected
    (line,) = err.splitlines()
    assert code == 1 and not out and line.startswith("error: "), expected
    if name in SCRIPTS:
        monkeypatch.setattr(sys, "argv", [name, *rest])
        assert outcome(metadata.EntryPoint(name, SCRIPTS[name], "console_scripts").load(), capsys) == expected


def test_each_main_command_has_its_console_script():
    assert set(SCRIPTS) - {"music-genre"} == set(commands.COMMANDS) - {"fma_manifest", "musicnn_convert"}


def documented_flags() -> dict[str, tuple[set[str], bool]]:
    """Per command of docs/cli.md: the --flags its section names, and whether it has a table of them all."""
    sections = re.split(r"^### `", (REPO / "docs" / "cli.md").read_text(), flags=re.M)[1:]
    found = {}
    for section in sections:
        name = section.split()[0].rstrip("`")
        table = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `--")]  # option column
        found[name] = set(re.findall(r"--(\w+)", section.splitlines()[0] + "".join(table))), bool(table)
    return found


@pytest.mark.parametrize("name", list(commands.COMMANDS))
def test_a_commands_flags_are_its_functions_parameters(name, capsys, monkeypatch, plain_stderr):
    function = commands.command_function(name)
    named = [p for p in inspect.signature(function).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    hints = typing.get_type_hints(function)
    assert all(p.name in hints for p in named), "every parameter of a command has a type"
    words = {p.name for p in named if typing.get_origin(hints[p.name]) is list}  # the Hydra overrides
    expected = {p.name for p in named} - words

    _, _, err = outcome(lambda: commands.main([name, "--no_such_flag"]), capsys)
    assert set(re.findall(r"--(\w+)", err.partition(";")[2])) == expected, err
    commands.main([name, "--help"])
    shown = capsys.readouterr().out
    assert set(re.findall(r"^  --(\w+)", shown, flags=re.M)) == expected
    assert inspect.getdoc(function) in shown
    if name in SCRIPTS:  # `infer -h` is `music-genre infer --help`
        monkeypatch.setattr(sys, "argv", [name, "-h"])
        metadata.EntryPoint(name, SCRIPTS[name], "console_scripts").load()()
        assert capsys.readouterr().out == shown

    documented, complete = documented_flags()[name]
    assert documented <= expected and (documented == expected or not complete), (documented, expected)


def test_the_list_of_commands_gives_each_its_summary(capsys, plain_stderr):
    commands.main([])
    listing = capsys.readouterr().out
    for name in commands.COMMANDS:
        summary = inspect.getdoc(commands.command_function(name)).splitlines()[0]
        assert re.search(rf"^  {name} +{re.escape(summary)}$", listing, flags=re.M), name
