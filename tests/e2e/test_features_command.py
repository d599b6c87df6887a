"""`features`: the 57 GTZAN features of a folder through the real CLI, as a table shaped like features_30_sec.csv."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import SR, tone
from helpers.processes import run_cli

from music_genre_classification.data.audio import load_audio
from music_genre_classification.data.features import FEATURE_COLUMNS, TABLE_COLUMNS, FeatureExtractor


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """blues/ is a genre of the config, mine/ is not; a corrupt file, a silent one and a text file among them."""
    root = tmp_path_factory.mktemp("library")
    (root / "blues").mkdir()
    (root / "mine").mkdir()
    sf.write(root / "blues" / "blues.00001.wav", tone("low", 1, seconds=4.0), SR)
    sf.write(root / "mine" / "song.flac", tone("high", 2, seconds=7.0), SR)
    sf.write(root / "mine" / "quiet.wav", np.zeros(3 * SR, np.float32), SR)
    (root / "mine" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (root / "notes.txt").write_text("not audio")
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_folder_to_table_resumable_with_one_line_errors(library, tmp_path):
    table = tmp_path / "features.csv"
    result = run_cli("features", str(library), "--output_path", str(table), cwd=tmp_path)
    assert result.returncode == 1  # two files failed
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 2 and "broken.wav: not a readable audio file" in errors[0] and "silent" in errors[1]
    assert "Traceback" not in result.stderr
    header, *rows = read_csv(table)
    assert header == TABLE_COLUMNS
    by_name = {row[0]: row for row in rows}
    assert sorted(by_name) == ["blues.00001.wav", "song.flac"]
    assert by_name["blues.00001.wav"][-1] == "blues" and by_name["song.flac"][-1] == ""  # mine/ is no genre
    assert by_name["song.flac"][1] == str(7 * SR)
    expected = FeatureExtractor()([load_audio(library / "mine" / "song.flac")])[0]
    np.testing.assert_allclose(
        [float(v) for v in by_name["song.flac"][2:-1]], expected, rtol=1e-6
    )  # thread counts differ

    again = run_cli("features", str(library), "--output_path", str(table), cwd=tmp_path)
    assert again.returncode == 1 and "2 audio files to extract features from" in again.stdout
    assert "2 already done" in again.stdout
    assert read_csv(table) == [header, *rows]  # nothing written twice, failed files tried again


def test_gtzan_chunks_to_jsonl(library, tmp_path):
    table = tmp_path / "chunks.jsonl"
    result = run_cli("features", str(library / "blues"), "--output_path", str(table), "--segment_s", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert [(r["filename"], r["length"], r["label"]) for r in rows] == [("blues.00001.0.wav", 66149, "blues")]
    assert list(rows[0]) == TABLE_COLUMNS and all(np.isfinite(rows[0][c]) for c in FEATURE_COLUMNS)


def test_bad_input_is_one_line(library, tmp_path, cli_in_process):
    # in this process: the entry point's own error lines and exit code are test_folder_to_table_resumable_...'s
    clash = tmp_path / "clash"
    for folder in ("a", "b"):
        (clash / folder).mkdir(parents=True)
        sf.write(clash / folder / "same.wav", tone("mid", 3, seconds=2.0), SR)
    cases = [
        (["features", str(clash), "--output_path", "t.csv"], "same file name"),
        (["features", str(library), "--output_path", "t.csv", "--segment_s", "0.5"], "--segment_s must be at least"),
        (["features", str(tmp_path / "nowhere"), "--output_path", "t.csv"], "no such file or folder"),
        (["features", str(library)], "--output_path is needed"),
    ]
    for args, message in cases:
        result = cli_in_process(*args, cwd=tmp_path)
        assert result.returncode == 1, args
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr, args
