"""Whole libraries: `embed`, `similar`, `map`, spectrogram folders and the Ray engine, on the tiny model of 3
separable synthetic genres (conftest's `trained`), through the real CLI, faiss, pyarrow, plotly and a local Ray."""

import csv
import json
import os
import shutil

import faiss
import matplotlib.image
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from helpers.audio import GENRES, SR, tone
from helpers.processes import run_cli, run_in_process

from music_genre_classification.config import UserError
from music_genre_classification.data.audio import load_audio
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.palette import genre_colours
from music_genre_classification.serving.library import read_library
from music_genre_classification.serving.library_map import run_map
from music_genre_classification.serving.similar import normalised, run_similar


def cli(trained, command, *args, cwd, own_process=False):
    """A command with the session's checkpoint; in this process unless `own_process` (tests/helpers/processes.py)."""
    run = run_cli if own_process else run_in_process
    return run(command, "--model_path", str(trained["checkpoint"]), *args, cwd=cwd)


def small_folder(synthetic_gtzan, folder, clips=3):
    """The first `clips` clips of each genre of the synthetic set, in GTZAN layout."""
    for genre in GENRES:
        (folder / genre).mkdir(parents=True, exist_ok=True)
        for i in range(clips):
            name = f"{genre}.{i:05d}.wav"
            shutil.copy(synthetic_gtzan / genre / name, folder / genre / name)
    return folder


@pytest.fixture(scope="module")
def library(trained, synthetic_gtzan, tmp_path_factory) -> dict:
    """`embed` over the synthetic set (24 clips and one corrupt file) into a Parquet table."""
    work = tmp_path_factory.mktemp("library")
    table = work / "library.parquet"
    args = ["--audio_path", str(synthetic_gtzan), "--output_path", str(table)]
    result = cli(trained, "embed", *args, cwd=work, own_process=True)  # the entry point: exit 1, no traceback
    return {"work": work, "table": table, "result": result}


def test_embed_writes_a_table_whose_neighbours_share_the_genre(library):
    result, table = library["result"], library["table"]
    assert result.returncode == 1  # the corrupt file failed, as infer reports it; every other track is there
    assert "25 audio files to embed" in result.stdout and "embedded 24 files, 1 failed" in result.stdout
    assert "Traceback" not in result.stderr
    rows = pq.read_table(table).to_pylist()
    assert len(rows) == 25 and sum(bool(row["error"]) for row in rows) == 1
    assert not list(table.parent.glob("*.rows.jsonl"))  # the journal became the table
    meta = json.loads(pq.read_schema(table).metadata[b"music_genre_classification"])
    assert meta["genres"] == GENRES and len(meta["model_sha256"]) == 64
    tracks = read_library(table)
    assert tracks.labels == [os.path.basename(os.path.dirname(p)) for p in tracks.paths]  # genre from the folder
    assert tracks.embeddings.shape == (24, meta["dim"]) and np.isfinite(tracks.embeddings).all()
    cosine = normalised(tracks.embeddings) @ normalised(tracks.embeddings).T
    np.fill_diagonal(cosine, -np.inf)
    labels = np.array(tracks.labels)
    nearest = np.argsort(-cosine, axis=1)[:, :3]
    assert (labels[nearest] == labels[:, None]).all()  # separable genres cluster: every neighbour shares the genre


def test_similar_through_a_saved_faiss_index(trained, library, tmp_path, capsys):
    table, work = library["table"], library["work"]
    tracks = read_library(table)
    query = next(p for p in tracks.paths if "/mid/" in p)
    result = run_in_process("similar", "--index", table, "--path", query, "--top", "3", cwd=work)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    i = tracks.paths.index(query)  # the query's own genre, then the neighbours' under a header that says whose
    assert f"query: {query}" in lines and f"  genre: {tracks.genres[i]} (predicted), label: mid (its folder)" in lines
    assert any(line.split()[:4] == ["rank", "cosine", "neighbour", "genre"] for line in lines)
    found = [line.split()[-1] for line in lines if line.split()[0].isdigit()]
    assert len(found) == 3 and query not in found and all("/mid/" in p for p in found)
    # the index beside the table, read back: the same neighbours as exact cosine over the table
    index = faiss.read_index(str(table.with_suffix(".faiss")))
    assert index.ntotal == 24
    _, ids = index.search(normalised(tracks.embeddings[[tracks.paths.index(query)]]), 4)
    assert [tracks.paths[i] for i in ids[0][1:]] == found
    # a new file is embedded by the checkpoint that made the library
    song = tmp_path / "song.wav"
    sf.write(song, tone("high", 999), SR)
    result = run_in_process("similar", "--index", table, "--audio_path", song, "--top", "3", cwd=work)
    assert result.returncode == 0, result.stderr
    assert sum("/high/" in line for line in result.stdout.splitlines()) == 3
    assert "nothing in the library is close" not in result.stderr
    assert f"query: {song}" in result.stdout and "  genre: high (predicted)\n" in result.stdout
    # a changed table makes the index stale: it is built anew
    capsys.readouterr()
    assert run_similar(str(table), path=query, top=1) and "built" not in capsys.readouterr().out
    os.utime(table)
    assert run_similar(str(table), path=query, top=1)[0][1] == tracks.paths.index(found[0])
    assert "index of 24 tracks built" in capsys.readouterr().out


def test_similar_says_when_nothing_in_the_library_is_close(trained, library, real_dataset):
    """A real recording is unlike every synthetic tune of the library: its best match is farther than the library's
    tracks are from their own nearest, and `similar` says so (still listing the closest)."""
    table, work = library["table"], library["work"]
    clip = real_dataset / "genres_original" / "jazz" / "jazz.00000.wav"
    result = run_in_process("similar", "--index", table, "--audio_path", clip, "--top", "3", cwd=work)
    assert result.returncode == 0, result.stderr
    assert f"warning: {clip}: nothing in the library is close (best cosine" in result.stderr
    assert len([line for line in result.stdout.splitlines() if line.split()[0].isdigit()]) == 3


def test_library_commands_refuse_bad_input_in_one_line(trained, library, tmp_path):
    table, work = library["table"], library["work"]
    result = run_cli("similar", "--index", str(tmp_path / "none.parquet"), "--path", "x.wav", cwd=work)
    missing = tmp_path / "none.parquet"
    assert (
        result.returncode == 1 and result.stderr == f"error: {missing}: no such library table (make one with `embed`)\n"
    )
    with pytest.raises(UserError, match="not in the library"):
        run_similar(str(table), path=str(tmp_path / "elsewhere.wav"))
    other = tmp_path / "other.ckpt"
    other.write_bytes(trained["checkpoint"].read_bytes() + b"\0")  # another file: another SHA-256
    song = tmp_path / "song.wav"
    sf.write(song, tone("low", 5), SR)
    with pytest.raises(UserError, match="not the checkpoint that made the library"):
        run_similar(str(table), audio_path=str(song), model_path=str(other))
    with pytest.raises(UserError, match="either --audio_path"):
        run_similar(str(table))
    with pytest.raises(UserError, match="--method must be"):
        run_map(str(table), str(tmp_path / "map.html"), method="pca")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli(trained, "embed", "--audio_path", str(empty), "--output_path", str(tmp_path / "x.csv"), cwd=tmp_path)
    assert (
        result.returncode == 1 and result.stderr.strip().startswith("error: ") and ".parquet or .npz" in result.stderr
    )


def test_map_writes_an_image_and_an_offline_html_page(library):
    table, work = library["table"], library["work"]
    result = run_in_process("map", "--index", table, "--output_path", work / "map.html", cwd=work)
    assert result.returncode == 0, result.stderr
    html = (work / "map.html").read_text()
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js inside the page: works offline
    assert "low.00000.wav" in html and "predicted: " in html  # hover: file and genre
    assert "map: laying out 24 tracks with t-SNE: 00:0" in result.stderr  # its time ticks while the layout runs
    assert result.stdout.startswith("map of 24 tracks (tsne) -> ")
    assert (work / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_map_png_and_html_draw_each_genre_in_the_palettes_colour(library):
    table, work = library["table"], library["work"]
    result = run_in_process("map", "--index", table, "--output_path", work / "colours.png", cwd=work)
    assert result.returncode == 0, result.stderr
    html = (work / "colours.html").read_text()
    start = html.index("[", html.index("Plotly.newPlot("))
    traces, _ = json.JSONDecoder().raw_decode(html, start)  # the figure's data, as plotly.js draws it
    in_html = {trace["name"]: trace["marker"]["color"] for trace in traces}
    assert in_html == genre_colours(GENRES) and len(set(in_html.values())) == len(GENRES)
    pixels = matplotlib.image.imread(work / "colours.png")[..., :3].reshape(-1, 3)
    drawn = {tuple(p) for p in np.round(pixels * 255).astype(int)}
    for genre, colour in in_html.items():  # the PNG's legend and points hold the same colour, unfaded
        assert tuple(int(colour[k : k + 2], 16) for k in (1, 3, 5)) in drawn, genre


def test_embed_resumes_and_grows_with_the_folder(trained, synthetic_gtzan, tmp_path):
    folder = small_folder(synthetic_gtzan, tmp_path / "music", clips=2)
    table = tmp_path / "library.npz"
    first = cli(trained, "embed", "--audio_path", str(folder), "--output_path", str(table), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = read_library(table)
    shutil.copy(synthetic_gtzan / "low" / "low.00005.wav", folder / "low" / "low.00005.wav")
    again = cli(trained, "embed", "--audio_path", str(folder), "--output_path", str(table), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 audio files to embed" in again.stdout and "6 already done" in again.stdout
    after = read_library(table)
    assert len(after) == 7 and len(set(after.paths)) == 7
    for path, embedding in zip(before.paths, before.embeddings):
        np.testing.assert_array_equal(after.embeddings[after.paths.index(path)], embedding)


def write_spectrograms(classifier, synthetic_gtzan, folder, n_mels=None):
    """Spectrograms of a few synthetic clips in the layout of data/dataset/spectrograms (float16, params.json)."""
    params = classifier.front_end.params
    for genre in GENRES:
        (folder / genre).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            wave = load_audio(synthetic_gtzan / genre / f"{genre}.{i:05d}.wav")
            spec = classifier.spectrograms(wave, SR)[0][2].numpy()
            np.save(folder / genre / f"{genre}.{i:05d}.npy", spec.astype(np.float16))
    description = {
        "sample_rate": params.sample_rate,
        "n_fft": params.n_fft,
        "hop_length": params.hop_length,
        "n_mels": n_mels or params.n_mels,
        "power_to_db": {"ref": "max", "top_db": params.top_db},
        "normalization": "per clip min-max to [0, 1]",
        "frames": params.window_columns,
    }
    (folder / "params.json").write_text(json.dumps(description))
    return folder


def test_infer_and_embed_take_a_folder_of_spectrograms(trained, synthetic_gtzan, tmp_path):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")
    folder = write_spectrograms(classifier, synthetic_gtzan, tmp_path / "spectrograms")
    result = cli(
        trained, "infer", "--audio_path", str(folder), "--output_path", str(tmp_path / "labels.csv"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "6 spectrograms to label" in result.stdout
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert len(rows) == 6
    for row in rows:
        genre = os.path.basename(os.path.dirname(row["path"]))
        audio = classifier.predict(synthetic_gtzan / genre / os.path.basename(row["path"]).replace(".npy", ".wav"))
        assert row["genre"] == audio.genre == genre
        for g in GENRES:  # the same up to the spectrograms' float16 storage
            assert abs(float(row[g]) - audio.probabilities[g]) < 0.02
    result = cli(
        trained, "embed", "--audio_path", str(folder), "--output_path", str(tmp_path / "l.parquet"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert read_library(tmp_path / "l.parquet").labels == [g for g in sorted(GENRES) for _ in range(2)]
    other = write_spectrograms(classifier, synthetic_gtzan, tmp_path / "other", n_mels=64)
    result = cli(trained, "infer", "--audio_path", str(other), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "but the model expects" in result.stderr


def test_predict_many_gives_what_predict_gives(trained, synthetic_gtzan):
    classifier = GenreClassifier.from_checkpoint(trained["checkpoint"], device="cpu")
    files = sorted((synthetic_gtzan / "high").glob("*.wav"))[:5] + sorted((synthetic_gtzan / "low").glob("*.wav"))[:4]
    together = list(classifier.predict_many(files, batch_size=2, embeddings=True))
    assert [path for path, _, _ in together] == files
    for path, prediction, error in together:
        alone = classifier.predict(path)
        assert error is None and prediction.genre == alone.genre
        assert np.allclose(list(prediction.probabilities.values()), list(alone.probabilities.values()), atol=1e-6)
        assert prediction.embedding is not None and prediction.embedding.ndim == 1


def test_ray_engine_writes_the_rows_of_the_local_engine(trained, synthetic_gtzan, tmp_path):
    folder = small_folder(synthetic_gtzan, tmp_path / "music", clips=2)
    tables = {}
    for engine in ("local", "ray"):
        tables[engine] = tmp_path / f"{engine}.parquet"
        args = ["--audio_path", str(folder), "--output_path", str(tables[engine]), "--engine", engine]
        # Ray: a local instance, started by its own process (and ended with it)
        result = cli(trained, "embed", *args, "--batch_size", "4", cwd=tmp_path, own_process=engine == "ray")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    local, ray = (pq.read_table(tables[e]).to_pylist() for e in ("local", "ray"))
    assert [r["path"] for r in local] == [r["path"] for r in ray] and len(local) == 6
    for a, b in zip(local, ray):
        assert a["genre"] == b["genre"] and a["label"] == b["label"] and a["duration_s"] == b["duration_s"]
        assert np.allclose([a[g] for g in GENRES], [b[g] for g in GENRES], atol=1e-6)
        assert np.allclose(a["embedding"], b["embedding"], atol=1e-5)


def test_front_end_gives_torch_stft_values():
    """LogMel frames the wave by hand for speed: the spectrogram of torch.stft's centered, zero-padded STFT."""
    import torch

    from music_genre_classification.data.spectrogram import LogMel

    front_end = LogMel()
    p = front_end.params
    for seconds in (8.0, 30.0, 31.3):
        wave = torch.from_numpy(tone("mid", 3, seconds=seconds))
        stft = torch.stft(
            wave, p.n_fft, p.hop_length, window=front_end.window, pad_mode="constant", return_complex=True
        )
        power = stft.abs().square().T
        db = 10 * torch.log10(torch.clamp(front_end.mel_power(power), min=1e-10))
        db = (db - db.max()).clamp(min=-p.top_db)
        reference = ((db - db.min()) / -db.min())[front_end.column_frames(len(wave))].T
        assert torch.allclose(front_end(wave), reference, atol=1e-5)
