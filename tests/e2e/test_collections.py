"""Your own music: an unequal collection through a manifest (mixed formats, a corrupt file), artist-grouped and
manifest splits, class weights and balanced sampling, fine-tuning from a trained checkpoint, FMA's metadata, and
the spectrogram cache resuming after an interrupted build."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from helpers.audio import CLIP_S, SR
from helpers.processes import REPO, run_cli, run_in_process

from music_genre_classification.config import UserError
from music_genre_classification.data.cache import build_cache, read_index
from music_genre_classification.data.collection import collect
from music_genre_classification.data.dataset import Clip, DataError, clip_spectrogram
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.data.split import ManifestSplit, RandomSplit
from music_genre_classification.models.lightning_module import GenreModule

COUNTS = {"ambient": 24, "bass": 12, "chime": 7, "drone": 5, "treble": 3}  # unequal, a long tail
BASE_HZ = {"ambient": 80.0, "bass": 220.0, "chime": 700.0, "drone": 1600.0, "treble": 3500.0}
FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", None), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", None)]
SMALL = [  # a tiny CNN on short crops, as TRAIN_ARGS (helpers/processes.py), without its genres
    "datamodule.crop_columns=32",
    "datamodule.batch_size=16",
    "datamodule.crops_per_clip=2",
    "model.net.channels=[8,16,16,32]",
    "model.eval_hop=16",
    "model.optimizer.lr=0.01",
    "trainer.accelerator=cpu",
    "+trainer.enable_progress_bar=false",
]


def chord(genre: str, seed: int, seconds: float = CLIP_S) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    base = BASE_HZ[genre] * rng.uniform(0.95, 1.05)
    wave = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in (1, 1.5, 2))
    return (0.2 * wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def artist_of(genre: str, i: int) -> str:
    """Each genre's clips by several artists; artist "duo 0" plays both ambient and bass."""
    if genre in ("ambient", "bass") and i % 10 == 0:
        return "duo 0"
    return f"{genre} artist {i % max(3, COUNTS[genre] // 6)}"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """5 genres with 24/12/7/5/3 clips as wav, flac, ogg and mp3 under one folder, listed in a manifest with
    artists, plus one corrupt mp3 (random bytes)."""
    root = tmp_path_factory.mktemp("collection")
    rows = []
    for g, (genre, count) in enumerate(COUNTS.items()):
        for i in range(count):
            suffix, form, subtype = FORMATS[i % len(FORMATS)]
            path = Path("audio") / genre / f"{genre}-{i:03d}.{suffix}"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, chord(genre, 1000 * g + i), SR, format=form, subtype=subtype)
            rows.append([str(path), genre, artist_of(genre, i)])
    (root / "audio" / "broken.mp3").write_bytes(np.random.default_rng(0).bytes(40_000))
    rows.append(["audio/broken.mp3", "ambient", "nobody"])
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "genre", "artist"], *rows])
    return root


@pytest.fixture(scope="module")
def balanced_run(collection, tmp_path_factory) -> dict:
    """The CLI trained on the manifest: genres auto, artist-grouped split, class weights and balanced sampling (in
    this process: the `trained` run of tests/conftest.py checks the command in its own)."""
    work = tmp_path_factory.mktemp("balanced_run")
    result = run_in_process(
        "train",
        f"datamodule.root={collection / 'manifest.csv'}",
        "datamodule.genres=auto",
        "split.group_by=artist",
        "model.class_weights=balanced",
        "datamodule.sampler=balanced",
        "trainer.max_epochs=2",
        f"datamodule.cache_dir={work / 'cache'}",
        *SMALL,
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(json.loads(next(work.glob("outputs/*/*/val_metrics.json")).read_text())["run_dir"])
    return {"work": work, "stdout": result.stdout, "run_dir": work / run_dir, "ckpt": work / "outputs/model_full.ckpt"}


def test_unequal_manifest_collection_trains_and_every_consumer_follows_its_genres(
    balanced_run, collection, cli_in_process
):
    out = balanced_run["stdout"]
    assert "warning: skipped 1 unreadable clip(s): broken.mp3" in out  # the corrupt file, and only it
    ckpt = torch.load(balanced_run["ckpt"], map_location="cpu", weights_only=True)
    genres = sorted(COUNTS)
    assert ckpt["hyper_parameters"]["genres"] == genres  # auto: the manifest's genres, by name
    assert ckpt["hyper_parameters"]["class_weights"] == "balanced"
    assert ckpt["state_dict"]["net.head.1.weight"].shape[0] == 5

    # artist-grouped: no artist on two sides, every genre in every part
    artist = {f"{g}/{g}-{i:03d}": artist_of(g, i) for g, n in COUNTS.items() for i in range(n)}
    with open(balanced_run["run_dir"] / "split.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == sum(COUNTS.values())  # every readable clip; the broken one is not there
    sides = defaultdict(set)
    for row in table:
        sides[artist[row["clip"]]].add(row["part"])
    assert all(len(parts) == 1 for parts in sides.values()), sides
    assert {(row["genre"], row["part"]) for row in table} == {(g, p) for g in genres for p in ("train", "val", "test")}

    # test: balanced accuracy and per-genre support; infer names the 5 genres
    scored = cli_in_process("test", balanced_run["ckpt"], cwd=balanced_run["work"])
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "balanced accuracy" in scored.stdout
    result = json.loads(next(balanced_run["run_dir"].glob("checkpoints/*.test.json")).read_text())
    tested = Counter(row["genre"] for row in table if row["part"] == "test")
    assert {g: m["support"] for g, m in result["per_genre"].items()} == {g: tested[g] for g in genres}
    assert 0 <= result["balanced_accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
    clip = collection / "audio" / "treble" / "treble-001.flac"
    labelled = cli_in_process("infer", "--model_path", balanced_run["ckpt"], "--audio_path", clip, cwd=collection)
    assert labelled.returncode == 0, labelled.stderr[-2000:]
    assert all(g in labelled.stdout for g in genres)


def test_manifest_split_and_genre_choices(collection, tmp_path):
    clips, genres = collect(collection / "manifest.csv", "auto", top_genres=3)
    assert genres == ["ambient", "bass", "chime"] and {c.genre for c in clips} == set(genres)
    clips, genres = collect(collection / "manifest.csv", "auto", min_clips=5)
    assert genres == ["ambient", "bass", "chime", "drone"]

    # split=manifest: the split column decides; a clip without one is named
    manifest = tmp_path / "parts.tsv"
    lines = ["path\tgenre\tsplit"] + [f"a{i}.wav\tx\t{['train', 'valid', 'test'][i % 3]}" for i in range(6)]
    manifest.write_text("\n".join(lines) + "\n")
    listed, _ = collect(manifest, "auto")
    parts = ManifestSplit().assign({c.id: c.genre for c in listed}, {"split": {c.id: c.part for c in listed}})
    assert parts == {f"x/a{i}": ["train", "val", "test"][i % 3] for i in range(6)}
    with pytest.raises(DataError, match="x/a0"):
        ManifestSplit().assign({"x/a0": "x"}, {"split": {}})


def test_stratified_split_names_a_genre_with_too_few_clips(tmp_path):
    clips = {f"big/{i}": "big" for i in range(20)} | {"rare/0": "rare", "rare/1": "rare"}
    with pytest.raises(DataError, match="genre 'rare' has 2 clip"):
        RandomSplit().assign(clips)
    artists = {"artist": {c: ("one" if c.startswith("rare") else c) for c in clips}}
    with pytest.raises(DataError, match="genre 'rare' has clips of only 1 group"):
        RandomSplit(group_by="artist").assign(clips, artists)
    parts = RandomSplit().assign({**clips, "rare/2": "rare"})  # 3 clips: one in each part
    assert sorted(p for c, p in parts.items() if c.startswith("rare")) == ["test", "train", "val"]


def test_fine_tuning_from_a_trained_checkpoint_gets_a_new_head(trained, tmp_path, cli_in_process):
    """Two new genres (folders, genres auto) from the session's 3-genre checkpoint; convolutions frozen throughout."""
    for g, genre in enumerate(["hum", "hiss"]):
        (tmp_path / "mine" / genre).mkdir(parents=True)
        for i in range(6):
            sf.write(tmp_path / "mine" / genre / f"{i}.wav", chord(["bass", "treble"][g], 50 * g + i), SR)
    source = trained["checkpoint"]
    args = [f"datamodule.root={tmp_path / 'mine'}", "datamodule.genres=auto", f"model.init_from={source}", *SMALL]
    result = cli_in_process("train", *args, "model.freeze_epochs=2", "trainer.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a new head for 2 genres" in result.stdout
    tuned = torch.load(tmp_path / "outputs/model_full.ckpt", map_location="cpu", weights_only=True)
    before = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
    assert tuned["hyper_parameters"]["genres"] == ["hiss", "hum"]
    assert tuned["state_dict"]["net.head.1.weight"].shape[0] == 2
    for key, value in before.items():  # frozen: weights and BatchNorm statistics as trained before
        if key.startswith("net.") and not key.startswith("net.head."):
            assert torch.equal(tuned["state_dict"][key], value), key

    # another architecture, or a model that is not a network: refused with one clear message
    hp = tuned["hyper_parameters"]
    net = {**hp["net"], "channels": [8, 16]}
    with pytest.raises(UserError, match="its network differs from model.net"):
        GenreModule(net, ["hiss", "hum"], hp["spectrogram"], init_from=str(source))
    with pytest.raises(UserError, match="trained on other spectrogram settings"):
        GenreModule(hp["net"], ["hiss", "hum"], {**hp["spectrogram"], "n_mels": 64}, init_from=str(source))


def test_fma_metadata_becomes_a_manifest(tmp_path, cli_in_process):
    """FMA's tracks.csv (a 3-row header) and fma_small/<id[:3]>/<id>.mp3 -> path,genre,split,artist."""
    columns = pd.MultiIndex.from_tuples(
        [("track", "genre_top"), ("track", "title"), ("set", "split"), ("set", "subset"), ("artist", "name")]
    )
    rows = [
        [2, "Hip-Hop", "Food", "training", "small", "AWOL"],
        [5, "Folk", "This World", "validation", "small", "Kurt Vile"],
        [10, "Pop", "Freeway", "test", "small", "Kurt Vile"],
        [140, None, "No genre", "training", "small", "Alec K."],
        [666, "Rock", "Large only", "training", "large", "Someone"],
        [777, "Rock", "Missing audio", "training", "small", "Someone"],
    ]
    tracks = pd.DataFrame([r[1:] for r in rows], index=pd.Index([r[0] for r in rows], name="track_id"), columns=columns)
    tracks.to_csv(tmp_path / "tracks.csv")
    for track in (2, 5, 10, 140, 666):
        name = f"{track:06d}"
        (tmp_path / "fma_small" / name[:3]).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "fma_small" / name[:3] / f"{name}.mp3", chord("bass", track), SR, format="MP3")
    out = tmp_path / "fma.csv"
    args = ["--tracks_csv", "tracks.csv", "--audio_dir", "fma_small", "--output_path", str(out), "--subset", "small"]
    result = run_cli("fma_manifest", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert written == [
        {"path": "fma_small/000/000002.mp3", "genre": "Hip-Hop", "split": "train", "artist": "AWOL"},
        {"path": "fma_small/000/000005.mp3", "genre": "Folk", "split": "val", "artist": "Kurt Vile"},
        {"path": "fma_small/000/000010.mp3", "genre": "Pop", "split": "test", "artist": "Kurt Vile"},
    ]
    clips, genres = collect(out, "auto")
    assert genres == ["Folk", "Hip-Hop", "Pop"] and all(c.path.is_file() for c in clips)
    missing = cli_in_process(
        "fma_manifest", "--tracks_csv", "nope.csv", "--audio_dir", "fma_small", "--output_path", "x.csv", cwd=tmp_path
    )
    assert missing.returncode == 1 and missing.stderr == "error: nope.csv: no such file\n"


BUILD = """
import sys
from pathlib import Path
from music_genre_classification.data.cache import build_cache
from music_genre_classification.data.collection import collect
from music_genre_classification.data.spectrogram import SpectrogramParams
clips, _ = collect(sys.argv[1], "auto")
kept, store, skipped = build_cache(clips, SpectrogramParams(), Path(sys.argv[2]), int(sys.argv[3]))
print("built", len(kept), "skipped", len(skipped))
"""


def test_cache_build_resumes_after_being_killed(tmp_path):
    """A build killed part-way (SIGKILL), with a torn index line and stray rows on top, goes on where it stopped;
    the result holds every clip's spectrogram exactly once, as computed directly."""
    root = tmp_path / "music"
    for g, genre in enumerate(["bass", "treble"]):
        (root / genre).mkdir(parents=True)
        for i in range(16):
            sf.write(root / genre / f"{i:02d}.wav", chord(genre, 10 * g + i), SR)
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", BUILD, str(root), str(folder), "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    index = folder / "index.jsonl"
    while process.poll() is None and (not index.is_file() or index.read_text().count("\n") < 5):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = read_index(folder, 128)
    assert 5 <= len(done_before) < 32, "the build was not interrupted part-way"
    with open(index, "a") as f:
        f.write('{"clip": "treble/2')  # a line cut off by the kill
    with open(folder / "spectrograms.f32", "ab") as f:
        f.write(b"\0" * 1000)  # rows written, their index line not

    resumed = subprocess.run([*command[:-1], "2"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(done_before)} of 32 clips done, {32 - len(done_before)} to build" in resumed.stdout
    assert "built 32 skipped 0" in resumed.stdout

    clips, _ = collect(root, "auto")
    lines = index.read_text().splitlines()
    assert len(lines) == 32 and len({json.loads(line)["clip"] for line in lines}) == 32  # each clip once
    kept, store, _ = build_cache(clips, SpectrogramParams(), folder)  # nothing left to build: read back
    front_end = LogMel(SpectrogramParams())
    for clip, spec in zip(kept, store):
        expected = clip_spectrogram(clip.path, front_end)
        assert torch.equal(spec, expected), clip.id
    assert (folder / "spectrograms.f32").stat().st_size == sum(s.shape[1] for s in store) * 128 * 4


def test_changed_or_missing_audio_is_rebuilt_or_skipped(tmp_path):
    root = tmp_path / "music"
    (root / "bass").mkdir(parents=True)
    for i in range(3):
        sf.write(root / "bass" / f"{i}.wav", chord("bass", i), SR)
    clips = [Clip(f"bass/{i}", "bass", root / "bass" / f"{i}.wav") for i in range(3)]
    build_cache(clips, SpectrogramParams(), tmp_path / "cache", 1)
    sf.write(root / "bass" / "0.wav", chord("bass", 99, seconds=CLIP_S + 3), SR)  # replaced by a longer clip
    (root / "bass" / "2.wav").unlink()
    kept, store, skipped = build_cache(clips, SpectrogramParams(), tmp_path / "cache", 1)
    assert [c.id for c in kept] == ["bass/0", "bass/1"] and skipped == ["2.wav (No such file or directory)"]
    assert store[0].shape[1] > store[1].shape[1]  # the new, longer clip
