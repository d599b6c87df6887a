"""Arguments taken as given: paths stay the strings typed, bad values and unknown flags are refused before any work."""

import csv

import pytest
import soundfile as sf
import torch
from helpers.audio import SR, tone
from helpers.hostile import tiny_checkpoint
from helpers.processes import run_cli

from music_genre_classification.commands import parse_arguments


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    torch.save(tiny_checkpoint(), path)
    return path


def test_a_path_that_looks_like_a_number_stays_the_path_typed(model, tmp_path):
    (tmp_path / "1_000").mkdir()  # Fire reads 1_000 as the number 1000
    sf.write(tmp_path / "1_000" / "a.wav", tone("low", 1), SR)
    result = run_cli(
        "infer", "--model_path", str(model), "--audio_path", "1_000", "--output_path", "out.csv", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader(open(tmp_path / "out.csv", newline="")))
    assert row["path"] == str(tmp_path / "1_000" / "a.wav") and row["genre"]
    (tmp_path / "2024").mkdir()
    result = run_cli("features", "--audio_path", "2024", "--output_path", "features.csv", cwd=tmp_path)
    assert result.returncode == 0 and "0 audio files to extract features from in 2024" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segment_s", "abc"], "--segment_s must be a number > 0, not 'abc'"),
        (["--segment_s", "nan"], "--segment_s must be a number > 0, not 'nan'"),
        (["--segment"], "unknown flag --segment (did you mean --segment_s?)"),
    ],
)
def test_bad_values_of_features_are_one_line(tmp_path, args, message):
    result = run_cli("features", "--audio_path", ".", "--output_path", "f.csv", *args, cwd=tmp_path)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 1 and line.startswith("error: ") and message in line, result.stderr
    assert not (tmp_path / "f.csv").exists()


def test_unknown_flags_are_refused_before_any_work(model, tmp_path):
    (tmp_path / "library").mkdir()
    sf.write(tmp_path / "library" / "a.wav", tone("low", 1), SR)
    base = ["infer", "--model_path", str(model), "--audio_path", "library"]
    result = run_cli(*base, "--batchsize", "8", "--output", "x.json", cwd=tmp_path)
    assert result.returncode == 1 and not result.stdout and not (tmp_path / "x.json").exists()
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: infer: unknown flag --batchsize (did you mean --batch_size?)")
    assert "--output_path" in line and "--segments" in line  # the known flags


def fails(name: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(name, argv)
    assert exit_.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_arguments_are_read_by_the_commands_signature(capsys):
    infer = ["--model_path", "m.ckpt", "--audio_path"]
    assert parse_arguments("infer", [*infer, "1_000", "--segments", "--batch_size", "1_000"]) == {
        "model_path": "m.ckpt",
        "audio_path": "1_000",
        "segments": True,
        "batch_size": 1000,
    }
    assert parse_arguments("test", ["x.ckpt", "split=all"]) == {"checkpoint": "x.ckpt", "overrides": ["split=all"]}
    assert parse_arguments("ensemble", ["--checkpoints", "a,b", "--output_path", "2"]) == {
        "checkpoints": "a,b",
        "output_path": "2",
    }
    assert parse_arguments("bot", ["m.ckpt", "--max_file_mb=2"]) == {
        "model_path": "m.ckpt",
        "max_file_mb": 2.0,
    }
    assert "needs --audio_path" in fails("infer", ["--model_path", "m"], capsys)
    assert "--audio_path needs a value" in fails("infer", infer, capsys)
    assert "--batch_size must be a whole number >= 1, not 'abc'" in fails(
        "infer", [*infer, "a", "--batch_size", "abc"], capsys
    )
    assert "--segments is a switch" in fails("infer", [*infer, "a", "--segments=maybe"], capsys)
    assert "--top is given twice" in fails("similar", ["--index", "i", "--top", "2", "--top", "3"], capsys)
    assert "unexpected argument 'z'" in fails("infer", ["m", "a", "o.csv", "z"], capsys)
    assert "--max_upload_mb must be a number > 0, not 'inf'" in fails("serve", ["--max_upload_mb", "inf"], capsys)


def test_musicnn_convert_refuses_a_missing_wheel_in_one_line(tmp_path):
    result = run_cli("musicnn_convert", "missing.whl", "weights", cwd=tmp_path)
    assert result.returncode == 1 and not result.stdout
    assert result.stderr.strip().splitlines() == ["error: missing.whl: no such wheel or folder"], result.stderr
    assert not (tmp_path / "weights").exists()
