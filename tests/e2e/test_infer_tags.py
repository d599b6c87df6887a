"""`infer --tags`: musicnn's top MSD tags of real GTZAN audio beside the genre, for one file and in folder tables."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from helpers.processes import run_in_process

from music_genre_classification.models.musicnn import MSD_TAGS
from music_genre_classification.models.tags import TOP_TAGS


@pytest.fixture(scope="module")
def library(real_dataset, tmp_path_factory):
    """The first 10 s of two real clips, at their own 22050 Hz."""
    folder = tmp_path_factory.mktemp("tags_library")
    for name in ("metal.00000", "classical.00000"):
        wave, rate = sf.read(real_dataset / "genres_original" / name.split(".")[0] / f"{name}.wav", frames=220500)
        sf.write(folder / f"{name}.wav", wave, rate)
    return folder


def infer_cli(trained, audio, *args, cwd):
    """`infer` in this process (tests/helpers/processes.py); tests/e2e/test_inference.py runs it in its own."""
    return run_in_process(
        "infer", "--model_path", str(trained["checkpoint"]), "--audio_path", str(audio), *args, cwd=cwd
    )


def cell_tags(cell: str) -> list[tuple[str, float]]:
    return [(tag, float(p)) for tag, p in (item.rsplit(":", 1) for item in cell.split(";"))]


def check_tags(tags: list[tuple[str, float]]) -> None:
    assert len(tags) == TOP_TAGS and {tag for tag, _ in tags} <= set(MSD_TAGS)
    probabilities = [p for _, p in tags]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)


def test_one_file_prints_its_tags_under_the_genre_and_saves_them(trained, library, tmp_path):
    out = tmp_path / "metal.json"
    result = infer_cli(trained, library / "metal.00000.wav", "--tags", "--output_path", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    genre_line = next(i for i, line in enumerate(lines) if line.startswith("genre: "))
    assert lines[genre_line + 1].startswith("tags: ")
    printed = [item.rsplit(" ", 1) for item in lines[genre_line + 1].removeprefix("tags: ").split(", ")]
    check_tags([(tag, float(p)) for tag, p in printed])
    saved = json.loads(out.read_text())["tags"]
    assert [t["tag"] for t in saved] == [tag for tag, _ in printed]
    assert "metal" in [t["tag"] for t in saved[:3]] or "heavy metal" in [t["tag"] for t in saved[:3]]
    plain = infer_cli(trained, library / "metal.00000.wav", cwd=tmp_path)
    assert plain.returncode == 0 and "tags:" not in plain.stdout  # only when asked


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_folder_tables_get_a_tags_column(trained, library, tmp_path, suffix):
    out = tmp_path / f"labels{suffix}"
    result = infer_cli(trained, library, "--tags", "--output_path", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if suffix == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        check_tags(cell_tags(row["tags"]))
    classical = next(row for row in rows if "classical" in row["path"])
    assert {"instrumental", "easy listening", "beautiful", "ambient"} & {tag for tag, _ in cell_tags(classical["tags"])}


def test_spectrograms_have_no_tags(trained, tmp_path):
    spectrogram = tmp_path / "clip.npy"
    np.save(spectrogram, np.zeros((128, 387), np.float32))
    result = infer_cli(trained, spectrogram, "--tags", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "audio only" in result.stderr
    assert "Traceback" not in result.stderr
