"""model=musicnn_probe through the real CLI: train (embeddings cached once), test, infer, both input routes, the
checkpoint's route used by every consumer (serve, embed and similar, the bot's replies), and a checkpoint that names
what it may not."""

import asyncio
import csv
import json
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.audio import GENRES, SR, tone, write_gtzan
from helpers.fake_telegram import TOKEN, FakeBotAPI
from helpers.processes import TRAIN_ARGS, Server, run_cli, run_in_process

from music_genre_classification.config import UserError, compose
from music_genre_classification.data.audio import AudioError
from music_genre_classification.data.spectrogram import LogMel
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.models.musicnn import MSD_TAGS
from music_genre_classification.models.predictors import checkpoint_kind
from music_genre_classification.serving.bot import GenreBot, build_application
from music_genre_classification.serving.library import read_library
from music_genre_classification.training.evaluate import test as run_test
from music_genre_classification.training.train import fit

GENRES_ARG = f"datamodule.genres=[{','.join(GENRES)}]"
SMALL_GRID = ["model.grid.classifier__C=[0.1,1.0]", "model.grid.embedding=[mean_pool,penultimate]", "~logger"]


def train(root, cwd, *args: str):
    result = run_cli("train", "model=musicnn_probe", f"datamodule.root={root}", GENRES_ARG, *args, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def train_here(root, work, *args: str) -> dict:
    """`train` in this process (the CLI's startup is paid once, by the fixture); outputs and cache under `work`."""
    folders = [f"output_dir={work / 'outputs'}", f"model.cache_dir={work / '.cache' / 'musicnn'}", "~logger"]
    args = ["model=musicnn_probe", f"datamodule.root={root}", GENRES_ARG, *folders, *args]
    return fit(compose("train", args))


def cached(cwd) -> dict:
    return {p: p.stat().st_mtime_ns for p in (cwd / ".cache" / "musicnn").rglob("*.npz")}


@pytest.fixture(scope="module")
def audio_probe(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("probe_audio")
    root = write_gtzan(work / "gtzan", clips_per_genre=6)
    result = train(root, work, *SMALL_GRID)
    checkpoint = work / "outputs" / "model_full.ckpt"
    return {"work": work, "root": root, "checkpoint": checkpoint, "stdout": result.stdout, "stderr": result.stderr}


def write_spectrogram_folder(audio_root, folder):
    """The synthetic clips as stored log-mel spectrograms (float16 .npy and params.json, as data/dataset's)."""
    log_mel = LogMel()
    for path in sorted(audio_root.rglob("*.wav")):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        spec = log_mel(torch.from_numpy(_read(path)))
        np.save(folder / path.parent.name / path.with_suffix(".npy").name, spec.numpy().astype(np.float16))
    p = log_mel.params
    description = {"sample_rate": p.sample_rate, "n_fft": p.n_fft, "hop_length": p.hop_length, "n_mels": p.n_mels}
    description |= {"power_to_db": {"ref": "max", "top_db": p.top_db}, "normalization": "per clip min-max to [0, 1]"}
    (folder / "params.json").write_text(json.dumps(description | {"frames": p.window_columns}))
    return folder


def _read(path) -> np.ndarray:
    wave, rate = sf.read(str(path), dtype="float32")
    assert rate == SR
    return wave


def test_train_caches_the_embeddings_once_and_records_the_audio_route(audio_probe):
    stdout, work = audio_probe["stdout"], audio_probe["work"]
    assert "out of fold" in stdout and "route=audio" in stdout and "temperature" in stdout
    assert "musicnn embeddings: " in audio_probe["stderr"]  # the first run's wait shows progress, even in a log
    ckpt = load_checkpoint(audio_probe["checkpoint"])
    hp = ckpt["hyper_parameters"]
    assert checkpoint_kind(ckpt) == "musicnn_probe" and hp["route"] == "audio" and hp["backbone"] == "msd"
    assert hp["embedding"] in ("mean_pool", "penultimate") and hp["temperature"] > 0
    first = cached(work)
    assert len(first) == 3 * 6  # one entry per clip
    again = train_here(audio_probe["root"], work, "~model.grid", "model.embedding=max_pool")
    assert again["embedding"] == "max_pool" and again["route"] == "audio"
    assert cached(work) == first  # a second train read them, computed nothing, rewrote nothing


def test_a_long_file_counts_its_windows_through_the_backbone(audio_probe, tmp_path, cli_in_process):
    """The backbone takes ten times as long as reading a file: after the read bar, a second counts its windows."""
    six_minutes = np.concatenate([tone("low", seed, seconds=30.0) for seed in range(12)])
    sf.write(tmp_path / "long.wav", six_minutes, SR, subtype="PCM_16")
    result = cli_in_process("infer", audio_probe["checkpoint"], "long.wav", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    bars = result.stderr.replace("\r", "\n")
    assert "long.wav: read: 100%" in bars and re.search(r"long\.wav: genre: 100%.* 12/12", bars), bars[-2000:]


def test_few_shot_lists_train_with_the_configured_head_and_are_tested_on_the_rest(audio_probe, capsys):
    """One clip per genre (split=lists, no val list): no fold can score a genre, so the grid falls back to the
    configured embedding and T = 1, said in one warning line; the other clips are the test part."""
    work, root = audio_probe["work"], audio_probe["root"]
    train_list, test_list = work / "few_train.txt", work / "few_test.txt"
    train_list.write_text("".join(f"{g}/{g}.00000.wav\n" for g in GENRES))
    test_list.write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in GENRES for i in range(1, 6)))
    folders = [f"output_dir={work / 'few'}", f"model.cache_dir={work / '.cache' / 'musicnn'}"]
    lists = ["split=lists", f"split.train={train_list}", f"split.test={test_list}", *SMALL_GRID, *folders]
    few = fit(compose("train", ["model=musicnn_probe", f"datamodule.root={root}", GENRES_ARG, *lists]))
    assert "warning: model.grid and the temperature need out-of-fold scores" in capsys.readouterr().out
    assert few["embedding"] == "mean_pool" and few["chosen"] == {} and few["temperature"] == 1.0
    tested = run_test(few["best_checkpoint"], ["mlflow=null", "split=lists", f"split.test={test_list}"])
    assert tested["clips"] == 5 * len(GENRES) and tested["accuracy"] > 0.5


def test_test_and_infer_use_the_probe(audio_probe):
    work, root = audio_probe["work"], audio_probe["root"]
    tested = run_test(str(audio_probe["checkpoint"]), [])
    assert tested["clips"] >= 2 and tested["accuracy"] > 0.5 and tested["calibration"]["temperature"] > 0
    inferred = run_cli("infer", str(audio_probe["checkpoint"]), str(root / "high" / "high.00002.wav"), cwd=work)
    assert inferred.returncode == 0, inferred.stderr[-2000:]
    assert "high" in inferred.stdout


def test_an_audio_route_probe_refuses_a_stored_spectrogram(audio_probe, tmp_path):
    folder = write_spectrogram_folder(audio_probe["root"], tmp_path / "specs")
    classifier = GenreClassifier.from_checkpoint(audio_probe["checkpoint"])
    with pytest.raises(AudioError, match="musicnn probe of the spectrogram route"):
        classifier.predict(folder / "low" / "low.00000.npy")


def test_the_spectrogram_route_reads_npy_and_audio_the_same_way(audio_probe, tmp_path):
    folder = write_spectrogram_folder(audio_probe["root"], tmp_path / "specs")
    train_here(folder, tmp_path, "~model.grid")
    checkpoint = tmp_path / "outputs" / "model_full.ckpt"
    assert load_checkpoint(checkpoint)["hyper_parameters"]["route"] == "spectrogram"
    classifier = GenreClassifier.from_checkpoint(checkpoint)
    from_npy = classifier.predict(folder / "mid" / "mid.00003.npy")
    from_audio = classifier.predict(audio_probe["root"] / "mid" / "mid.00003.wav")
    assert from_npy.genre == from_audio.genre == "mid"
    for genre in GENRES:  # audio goes through the stored spectrograms' log-mel and the adapter: the same input
        assert from_audio.probabilities[genre] == pytest.approx(from_npy.probabilities[genre], abs=0.02)


def test_a_checkpoint_naming_an_unknown_route_is_refused(audio_probe, tmp_path):
    ckpt = load_checkpoint(audio_probe["checkpoint"])
    ckpt["hyper_parameters"]["route"] = "os.system"
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(UserError, match="route"):
        GenreClassifier.from_checkpoint(tmp_path / "bad.ckpt")


def test_serve_answers_with_the_probe(audio_probe, tmp_path):
    server = Server(tmp_path, "--model_path", str(audio_probe["checkpoint"]))
    try:
        server.wait_ready()
        clip = (audio_probe["root"] / "low" / "low.00004.wav").read_bytes()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answer = client.post("/predict?tags=true", files={"file": ("low.wav", clip)})
            (model,) = client.get("/models").json()
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["genre"] == "low" and set(body["probabilities"]) == set(GENRES), body
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        assert {t["tag"] for t in body["tags"]} <= set(MSD_TAGS)  # the same backbone, its tag layer
        assert model["kind"] == "musicnn_probe" and model["genres"] == GENRES, model
    finally:
        assert server.stop() in (0, -signal.SIGTERM), server.log_text()[-3000:]


def test_embed_and_similar_compare_the_embedding_the_probe_reads(audio_probe, tmp_path):
    checkpoint, root = str(audio_probe["checkpoint"]), audio_probe["root"]
    table = tmp_path / "library.npz"
    result = run_in_process("embed", checkpoint, root, table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    tracks = read_library(table)
    embedding = load_checkpoint(checkpoint)["hyper_parameters"]["embedding"]  # the latest train of this module's
    dim = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "mean_max": 2 * 753}[embedding]
    assert tracks.embeddings.shape == (3 * 6, dim) and np.isfinite(tracks.embeddings).all()
    assert tracks.genres == tracks.labels  # the probe gets every clip of its own training set right
    query = str(root / "high" / "high.00001.wav")
    result = run_in_process("similar", "--index", table, "--path", query, "--top", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    found = [line.split()[-1] for line in result.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(found) == 3 and query not in found and all("/high/" in p for p in found), result.stdout


def test_the_bot_replies_with_the_probes_genre(audio_probe):
    """The bot's handlers in this process (the `bot` command's own process is tested in test_bot.py), long polling
    a fake Bot API on 127.0.0.1: download, the probe, the reply."""
    genre_bot = GenreBot(GenreClassifier.from_checkpoint(audio_probe["checkpoint"]), max_file_mb=20, tags=True)

    async def converse(api: FakeBotAPI) -> str:
        app = build_application(genre_bot, TOKEN, api.base_url, None, False)
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0.01, timeout=1)
            file = api.add_file((audio_probe["root"] / "mid" / "mid.00005.wav").read_bytes(), "music/song.wav")
            api.send((901, {"audio": {**file, "duration": 10, "file_name": "song.wav", "mime_type": "audio/wav"}}))
            (reply,) = await asyncio.to_thread(api.replies, 901)
            await app.updater.stop()
            await app.stop()
        return reply

    with FakeBotAPI() as api:
        reply = asyncio.run(converse(api))
    assert reply.startswith("<b>mid</b>") and "Tags: " in reply, reply


def test_a_cross_fitted_ensemble_blends_each_folds_probe_with_its_cnn(audio_probe, tmp_path, cli_in_process):
    """The mechanism of `train experiment=best` with a probe member: per fold a CNN and a probe on the same split
    fold (the probe's val part is the fold's val clips, its temperature fitted on its train part out of fold), then
    one ensemble whose weights and temperature come from every out-of-fold clip."""
    folder = write_spectrogram_folder(audio_probe["root"], tmp_path / "specs")  # one front end for both kinds
    cnn = " ".join(a for a in TRAIN_ARGS if a.startswith("model.")) + " model.net.channels=[8,16]"
    grid = "model.grid.embedding=[mean_pool] model.grid.classifier__C=[0.001,1.0] model.select=loss"
    probe = f"model=musicnn_probe {grid} model.cache_dir={tmp_path / 'cache'}"
    members = f"members=['{cnn} split.fold=0','{probe} split.fold=0','{cnn} split.fold=1','{probe} split.fold=1']"
    args = [a for a in TRAIN_ARGS if not a.startswith(("model.", "trainer.max_epochs"))] + ["trainer.max_epochs=3"]
    split = ["split.seed=42", "split.folds=2", "~logger", f"datamodule.root={folder}"]
    result = cli_in_process("train", *args, *split, members, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cross-fitted: 2 folds of 2 member(s)" in result.stdout and "training time:" in result.stdout
    blend = load_checkpoint(tmp_path / "outputs" / "model_full.ckpt")
    kinds = [checkpoint_kind(m) for m in blend["members"]]
    assert kinds == ["cnn", "musicnn_probe"] * 2
    vals = [{r["clip"] for r in m["split_table"] if r["part"] == "val"} for m in blend["members"]]
    assert vals[0] == vals[1] and vals[2] == vals[3] and vals[0] and not vals[0] & vals[2]
    assert all(m["hyper_parameters"]["temperature"] > 0 for m in blend["members"])
    for probe_run in re.findall(r"run directory: +(\S+)", result.stdout)[1::2]:  # select=loss: the grid's lowest
        grid_rows = list(csv.DictReader(open(Path(probe_run) / "grid.csv")))
        lowest = min(grid_rows, key=lambda row: float(row["cv_loss"]))
        chosen = load_checkpoint(Path(probe_run) / "checkpoints" / "model.ckpt")["hyper_parameters"]["chosen"]
        assert chosen["classifier__C"] == float(lowest["classifier__C"])
    weights = blend["hyper_parameters"]["weights"]
    assert weights[0] == weights[2] and weights[1] == weights[3] and sum(weights) == pytest.approx(1)
    assert blend["val_metrics"]["val/acc"] >= 0.6  # every out-of-fold clip, scored by its own fold's members
    result = cli_in_process("test", "outputs/model_full.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
