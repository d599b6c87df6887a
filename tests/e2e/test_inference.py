"""`infer` and GenreClassifier on real audio files written by the tests."""

import csv
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import CLIP_S, GENRES, INFER_COLUMNS, SR, encode, tone
from helpers.processes import run_cli

from music_genre_classification.models.classifier import GenreClassifier


@pytest.fixture(scope="module")
def classifier(trained) -> GenreClassifier:
    return GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")


def write(path, wave, sr=SR, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, **kwargs)
    return path


def infer_cli(trained, audio, *args, cwd):
    return run_cli("infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(audio), *args, cwd=cwd)


@pytest.mark.parametrize(
    ("name", "sr", "genre", "kwargs"),
    [
        ("a.wav", SR, "high", {}),
        ("a.flac", 44100, "high", {}),
        ("a.ogg", 44100, "high", {"format": "OGG", "subtype": "VORBIS"}),  # at 22.05 kHz Vorbis cuts the high register
        ("a.opus", 48000, "low", {"format": "OGG", "subtype": "OPUS"}),  # opus drops the toy clips' noise floor
        ("a.mp3", 44100, "high", {"format": "MP3"}),
    ],
)
def test_every_supported_format_is_classified(classifier, tmp_path, name, sr, genre, kwargs):
    path = write(tmp_path / name, tone(genre, 7, seconds=CLIP_S, sr=sr), sr, **kwargs)
    prediction = classifier.predict(path)
    assert prediction.genre == genre
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6 and list(prediction.probabilities)[0] == genre
    assert abs(prediction.duration_s - CLIP_S) < 0.1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_m4a_goes_through_ffmpeg(classifier, tmp_path):
    wav = write(tmp_path / "a.wav", tone("low", 3, seconds=CLIP_S, sr=44100), 44100)  # AAC at 22.05 kHz drops the
    m4a = tmp_path / "a.m4a"  # toy clips' faint noise floor, which moves their normalised log-mel
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    assert classifier.predict(m4a).genre == "low"


def test_a_numpy_waveform_at_any_rate_and_stereo_works(classifier):
    stereo = np.stack([tone("mid", 5, seconds=CLIP_S, sr=44100)] * 2, axis=1)
    prediction = classifier.predict(stereo, sample_rate=44100)
    assert prediction.genre == "mid" and abs(prediction.duration_s - CLIP_S) < 0.01


def test_three_minute_track_gets_segments_covering_it_exactly(classifier, tmp_path):
    track = np.concatenate([tone(g, i, seconds=60) for i, g in enumerate(["low", "mid", "high"])])
    prediction = classifier.predict(write(tmp_path / "long.flac", track))
    segments = prediction.segments
    assert [(s.start_s, s.end_s) for s in segments] == [(30.0 * i, 30.0 * (i + 1)) for i in range(6)]
    assert segments[0].genre == "low" and segments[-1].genre == "high"
    for segment in segments:  # each window is classified exactly as that stretch of audio alone
        alone = classifier.predict(track[int(segment.start_s * SR) : int(segment.end_s * SR)], sample_rate=SR)
        assert (
            alone.genre == segment.genre and abs(alone.probabilities[alone.genre] - segment.probability) < 0.01
        )  # flac is 16-bit
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6


def test_cli_python_and_batch_give_identical_results(trained, classifier, tmp_path):
    clip = write(tmp_path / "music" / "clip.wav", tone("mid", 11, seconds=CLIP_S))
    python = classifier.predict(clip).probabilities
    ((_, batch, error),) = list(classifier.predict_many([clip]))
    assert error is None and batch.probabilities == python
    out = tmp_path / "one.json"
    result = infer_cli(trained, clip, "--output_path", str(out), cwd=tmp_path)
    assert result.returncode == 0 and "genre: mid" in result.stdout
    cli = json.loads(out.read_text())["probabilities"]
    assert cli.keys() == python.keys() and np.allclose(list(cli.values()), list(python.values()), atol=1e-6)


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_single_file_output_formats(trained, tmp_path, suffix):
    clip = write(tmp_path / "clip.wav", tone("low", 2, seconds=CLIP_S))
    out = tmp_path / f"result{suffix}"
    result = infer_cli(trained, clip, "--output_path", str(out), "--segments", cwd=tmp_path)
    assert result.returncode == 0
    text = out.read_text()
    if suffix == ".txt":
        assert text.startswith("genre: low") and "timeline:" in text
    else:
        (row,) = list(csv.DictReader(text.splitlines()))
        assert row["genre"] == "low" and abs(sum(float(row[g]) for g in GENRES) - 1) < 1e-6


def test_folder_run_writes_rows_keeps_going_after_bad_files_and_resumes(trained, tmp_path):
    library = tmp_path / "library"
    for i, genre in enumerate(GENRES):
        write(library / genre / f"{i}.wav", tone(genre, 40 + i, seconds=CLIP_S))
    write(library / "deep" / "nested" / "x.flac", tone("high", 50, seconds=CLIP_S))
    (library / "corrupt.mp3").write_bytes(b"ID3" + b"\x00" * 500)
    (library / "notes.txt").write_text("not music")
    out = tmp_path / "labels.csv"
    first = infer_cli(trained, library, "--output_path", str(out), cwd=tmp_path)
    assert first.returncode == 1  # one file failed, and the exit code says so
    assert "Traceback" not in first.stderr and "1 non-audio ignored" in first.stdout
    rows = {r["path"]: r for r in csv.DictReader(open(out))}
    assert list(next(iter(rows.values()))) == INFER_COLUMNS
    assert len(rows) == 5 and rows[str(library / "corrupt.mp3")]["error"]
    good = [r for r in rows.values() if not r["error"]]
    assert not any(r["not_music"] for r in good)  # every tune sounds like music
    assert all(r["genre"] == r["path"].split("/")[-2] for r in good if r["path"].split("/")[-2] in GENRES)
    assert all(abs(sum(float(r[g]) for g in GENRES) - 1) < 1e-6 for r in good)

    write(library / "corrupt.mp3", tone("high", 59, seconds=CLIP_S, sr=44100), sr=44100, format="MP3")  # mended
    write(library / "new.wav", tone("low", 60, seconds=CLIP_S))
    second = infer_cli(trained, library, "--output_path", str(out), cwd=tmp_path)
    assert second.returncode == 0 and "2 audio files to label" in second.stdout and "4 already done" in second.stdout
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and not any(r["error"] for r in rows)  # the failed row was retried away


def test_folder_results_as_jsonl_with_segments(trained, tmp_path):
    write(tmp_path / "lib" / "a.wav", tone("high", 1, seconds=40))
    out = tmp_path / "labels.jsonl"
    result = infer_cli(trained, tmp_path / "lib", "--output_path", str(out), "--segments", cwd=tmp_path)
    assert result.returncode == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["genre"] == "high" and [(s["start_s"], s["end_s"]) for s in row["segments"]] == [(0, 30), (30, 40)]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such file or folder"),
        (lambda d: (d / "song.wav").write_bytes(b""), "empty file"),
        (lambda d: (d / "song.wav").write_text("hello, I am text"), "is a text file, not audio"),
        (lambda d: (d / "song.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage"), "not a readable audio file"),
        (lambda d: sf.write(d / "song.wav", np.zeros(round(CLIP_S * SR), np.float32), SR), "silent"),
        (lambda d: sf.write(d / "song.wav", tone("low", 0, seconds=0.4), SR), "too short"),
    ],
)
def test_bad_audio_gives_one_line_error(trained, tmp_path, setup, message):
    setup(tmp_path)
    result = run_cli(
        "infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(tmp_path / "song.wav"), cwd=tmp_path
    )
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_missing_or_fake_checkpoint_gives_one_line_error(tmp_path):
    clip = write(tmp_path / "clip.wav", tone("low", 1, seconds=CLIP_S))
    (tmp_path / "fake.ckpt").write_bytes(b"\x00" * 100)
    for model, message in (("missing.ckpt", "no such checkpoint"), ("fake.ckpt", "not a readable checkpoint")):
        result = run_cli("infer", "--model_path", model, "--audio_path", str(clip), cwd=tmp_path)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_a_cut_off_mp3_is_judged_on_what_is_there_with_a_warning(trained, tmp_path):
    whole = encode(tone("low", 4, 3 * CLIP_S, sr=44100), "MP3", sr=44100)
    (tmp_path / "cut.mp3").write_bytes(whole[: len(whole) // 3])  # an unfinished download
    result = infer_cli(trained, tmp_path / "cut.mp3", cwd=tmp_path)
    seconds = float(re.search(r"genre: \w+\s+\(([\d.]+) s\)", result.stdout)[1])
    assert result.returncode == 0 and CLIP_S - 0.5 < seconds < CLIP_S + 0.5  # not what its header announces
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and f"of the {3 * CLIP_S:.1f} s its header announces" in warning


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--audio_path", "-"], "standard input"),
        (["--audio_path", "/dev/null"], "not a regular file or folder"),
        (["--audio_path", "fifo"], "not a regular file or folder"),
        (["--audio_path", "lib", "--batch_size", "0"], "--batch_size must be a whole number >= 1, not 0"),
        (["--audio_path", "lib", "--batch_size", "-1"], "--batch_size must be a whole number >= 1, not -1"),
        (["--audio_path", "lib", "--batch_size", "abc"], "--batch_size must be a whole number >= 1, not 'abc'"),
        (["--audio_path", "lib/a.wav", "--output_path", "missing/a.json"], "the folder missing does not exist"),
        (["--audio_path", "lib/a.wav", "--output_path", "folder.json"], "folder.json: is a folder"),
        (["--audio_path", "lib/a.wav", "--output_path", "/proc/a.json"], "/proc/a.json: cannot be written"),
        (["--audio_path", "lib", "--output_path", "missing/labels.csv"], "the folder missing does not exist"),
        (["--audio_path", "corrupt.mp3"], "corrupt.mp3: not a readable audio file (unknown format or damaged data)"),
        (["--audio_path", "image.mp3"], "image.mp3: is a PNG image, not audio"),
    ],
)
def test_bad_arguments_paths_and_files_end_in_one_error_line(trained, tmp_path, args, message):
    write(tmp_path / "lib" / "a.wav", tone("low", 1, seconds=CLIP_S))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "corrupt.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8)
    (tmp_path / "image.mp3").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 500)
    result = run_cli("infer", "--model_path", str(trained["checkpoint"]), *args, cwd=tmp_path, timeout=120)
    (line,) = result.stderr.strip().splitlines()  # one line: no traceback, no decoder chatter
    assert result.returncode == 1 and line.startswith("error: ") and message in line, result.stderr
    assert "genre:" not in result.stdout  # the output is checked before the work, not after
