"""Features models through the real CLI: train on a table and on audio, test, infer, an ensemble with the CNN, the bot."""

import csv
import json
import os
import re
import signal
import subprocess
import sys

import httpx
import mlflow
import numpy as np
import pytest
import skops.io
import soundfile as sf
import torch
from helpers.audio import CLIP_S, GENRES, INFER_COLUMNS, SR, tone, write_feature_table, write_gtzan
from helpers.fake_telegram import TOKEN, FakeBotAPI
from helpers.processes import REPO, Server, run_in_process
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from music_genre_classification.config import UserError
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.training.evaluate import test as run_test

GENRES_ARG = f"datamodule.genres=[{','.join(GENRES)}]"


def train(root, model: str, cwd, *args: str) -> dict:
    """`train` in this process: the `trained` CNN (tests/conftest.py) checks the command in its own."""
    result = run_in_process("train", f"model={model}", f"datamodule.root={root}", GENRES_ARG, *args, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": cwd, "checkpoint": cwd / "outputs" / "model_full.ckpt", "stdout": result.stdout}


@pytest.fixture(scope="module")
def on_table(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("features_table")
    return train(write_feature_table(work / "features.csv", clips_per_genre=12), "features_logreg", work)


@pytest.fixture(scope="module")
def on_audio(synthetic_gtzan, tmp_path_factory) -> dict:
    """A features model on the audio the CNN of `trained` learnt from, with the same split config."""
    return train(synthetic_gtzan, "features_svc", tmp_path_factory.mktemp("features_audio"), "~model.grid")


@pytest.fixture(scope="module")
def blend(trained, on_audio, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("blend")
    members = f"{trained['checkpoint']},{on_audio['checkpoint']}"
    result = run_in_process("ensemble", "--checkpoints", members, "--output_path", "blend.ckpt", cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"checkpoint": work / "blend.ckpt", "stdout": result.stdout}


def test_a_features_run_writes_what_a_cnn_run_writes_and_logs_to_mlflow(on_table):
    ckpt = on_table["checkpoint"]
    assert ckpt.is_symlink() and ckpt.resolve().name == "model.ckpt"
    run_dir = ckpt.resolve().parent.parent
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "split.csv", "val_metrics.json", "grid.csv"}
    assert (run_dir / "plots" / "confusion_val.png").is_file()
    assert len(list(csv.DictReader(open(run_dir / "grid.csv")))) == 5  # the C values of features_logreg's grid
    val = json.loads((run_dir / "val_metrics.json").read_text())
    assert val["val/acc"] >= 0.8 and "classifier__C" in val["chosen"] and "chosen on val:" in on_table["stdout"]

    stored = torch.load(ckpt, weights_only=True)  # no pickle: the pipeline is skops bytes
    assert stored["hyper_parameters"]["kind"] == "features" and stored["hyper_parameters"]["genres"] == GENRES
    assert isinstance(stored["pipeline"], bytes) and len(stored["split_table"]) == 36
    assert stored["val_metrics"] == {k: val[k] for k in ("val/acc", "val/f1", "val/loss")}

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{on_table['work'] / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("music-genre-classification").experiment_id])
    assert run.data.params["model/pipeline/classifier/_target_"] == "sklearn.linear_model.LogisticRegression"
    assert {"val/acc", "val/f1", "val/loss", "train/acc"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "grid/val_acc")) == 5
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "split.csv", "confusion_val.png", "grid.csv"} <= artifacts


def test_test_scores_a_features_checkpoint_on_its_split_and_on_another_table(on_table, tmp_path, cli_in_process):
    result = cli_in_process("test", on_table["checkpoint"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "confusion (rows: true, columns: predicted)" in result.stdout
    report = json.loads(on_table["checkpoint"].resolve().with_suffix(".test.json").read_text())
    assert report["accuracy"] >= 0.8 and report["clips"] == sum(r["part"] == "test" for r in _split(on_table))

    other = write_feature_table(tmp_path / "other.csv", clips_per_genre=3, seed=500)
    assert run_test(str(on_table["checkpoint"]), [f"datamodule.root={other}", "split=all"])["clips"] == 9
    assert (on_table["checkpoint"].resolve().parent / "model.test_other_all.json").is_file()


def _split(run: dict) -> list[dict]:
    return list(csv.DictReader(open(run["checkpoint"].resolve().parent.parent / "split.csv")))


def test_features_model_from_audio_labels_files_long_tracks_and_folders(on_audio, trained, tmp_path, cli_in_process):
    assert _split(on_audio) == _split(trained)  # the same clips in the same parts as the CNN's run
    classifier = GenreClassifier.from_checkpoint(on_audio["checkpoint"])
    assert classifier.predict(tone("high", 3, seconds=CLIP_S), sample_rate=SR).genre == "high"

    track = np.concatenate([tone(g, i, seconds=30) for i, g in enumerate(["low", "mid", "high"])])
    prediction = classifier.predict(track, sample_rate=SR)  # trained on 4-s clips, it is sure of low and high only
    assert [(s.start_s, s.end_s) for s in prediction.segments] == [(0, 30), (30, 60), (60, 90)]
    assert prediction.segments[0].genre == "low" and prediction.segments[-1].genre == "high"
    middle = prediction.segments[1]  # each window is scored as that stretch of audio alone
    alone = classifier.predict(track[30 * SR : 60 * SR], sample_rate=SR)
    assert abs(alone.probabilities[middle.genre] - middle.probability) < 1e-4  # segments show 4 decimals

    library = tmp_path / "library"
    for i, genre in enumerate(GENRES):
        (library / genre).mkdir(parents=True)
        sf.write(library / genre / f"{genre}.00000.wav", tone(genre, 70 + i, seconds=CLIP_S), SR)
    args = ["--model_path", str(on_audio["checkpoint"]), "--audio_path", str(library)]
    result = cli_in_process("infer", *args, "--output_path", tmp_path / "labels.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert [r["genre"] for r in rows] == ["high", "low", "mid"]  # sorted paths: high/, low/, mid/
    assert list(rows[0]) == INFER_COLUMNS  # as for a CNN

    other = write_gtzan(tmp_path / "other", clips_per_genre=3, seconds=CLIP_S)
    result = run_test(
        str(on_audio["checkpoint"]),
        [f"datamodule.root={other}", "split=all", f"datamodule.cache_dir={tmp_path / 'cache'}"],
    )
    assert result["clips"] == 9 and result["accuracy"] >= 0.66


def test_an_ensemble_of_the_cnn_and_a_features_model_works_everywhere(
    blend, trained, on_audio, tmp_path, cli_in_process
):
    assert re.search(r"\(GenreCNN\): weight \d\.\d\d", blend["stdout"]) and "(features): weight" in blend["stdout"]
    stored = torch.load(blend["checkpoint"], weights_only=True)
    assert stored["hyper_parameters"]["kind"] == "ensemble" and len(stored["members"]) == 2
    weights = stored["hyper_parameters"]["weights"]
    assert abs(sum(weights) - 1) < 1e-9

    clip = tmp_path / "clip.wav"
    sf.write(clip, tone("mid", 21, seconds=8), SR)
    members = [GenreClassifier.from_checkpoint(m["checkpoint"]).predict(clip) for m in (trained, on_audio)]
    blended = GenreClassifier.from_checkpoint(blend["checkpoint"]).predict(clip)
    for genre in GENRES:
        expected = sum(w * m.probabilities[genre] for w, m in zip(weights, members))
        assert abs(blended.probabilities[genre] - expected) < 1e-5
    result = cli_in_process("infer", "--model_path", blend["checkpoint"], "--audio_path", clip, cwd=tmp_path)
    assert result.returncode == 0 and "genre: mid" in result.stdout

    result = run_test(
        str(blend["checkpoint"]), [f"datamodule.cache_dir={tmp_path / 'cache'}"]
    )  # each member on the audio it read
    assert result["accuracy"] >= 0.8 and result["clips"] == sum(r["part"] == "test" for r in _split(trained))


def test_the_bot_answers_with_an_ensemble_checkpoint(blend, tmp_path):
    with FakeBotAPI() as api:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path), "TELEGRAM_BOT_TOKEN": TOKEN}
        command = [sys.executable, "-m", "music_genre_classification.commands", "bot", str(blend["checkpoint"])]
        process = subprocess.Popen([*command, "--base_url", api.base_url], env=env, stdout=subprocess.PIPE, text=True)
        try:
            api.wait_for(lambda: "setMyCommands" in api.methods() or process.poll() is not None, timeout=120)
            wave = np.concatenate([tone("low", 8, seconds=40)])
            file = api.add_file(_encode(wave, "FLAC"), "music/song.flac")
            api.send((900, {"audio": {**file, "duration": 40, "file_name": "song.flac", "mime_type": "audio/flac"}}))
            reply = api.replies(900)[0]
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert reply.startswith("<b>low</b>") and "Timeline" in reply  # two windows: 0:00-0:30, 0:30-0:40


def test_the_http_api_serves_a_features_model_and_an_ensemble(on_table, on_audio, blend, tmp_path):
    server = Server(tmp_path, "--model_path", f"{blend['checkpoint']},{on_audio['checkpoint']}")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            models = {m["name"]: m for m in client.get("/models").json()}
            assert [m["kind"] for m in models.values()] == ["ensemble", "features"]
            stored = torch.load(blend["checkpoint"], weights_only=True)["val_metrics"]
            assert models["blend"]["val_metrics"] == stored and set(stored) == {"val/acc", "val/f1", "val/loss"}
            for name in models:
                upload = {"file": ("clip.wav", _encode(tone("high", 31, seconds=CLIP_S), "WAV"))}
                response = client.post(f"/predict?model={name}", files=upload)
                assert response.status_code == 200 and response.json()["genre"] == "high", response.text
    finally:
        server.stop()


def _encode(wave: np.ndarray, format: str) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format=format)
    return buffer.getvalue()


def test_a_stored_model_holding_untrusted_code_is_refused(on_table, tmp_path):
    stored = torch.load(on_table["checkpoint"], weights_only=True)
    stored["pipeline"] = skops.io.dumps(Pipeline([("run", FunctionTransformer(os.system))]))
    torch.save(stored, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="not trusted: .*system"):
        GenreClassifier.from_checkpoint(tmp_path / "evil.ckpt")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=features_logreg", "datamodule=gtzan"], r"a features model \(model=features_\*\) needs datamodule="),
        (["datamodule=features"], "datamodule=features feeds the features models only"),
        (["model=features_logreg", "+model.grid.classifier__nope=[1]"], "model.grid: Invalid parameter 'nope'"),
    ],
)
def test_bad_features_settings_are_refused_before_any_data_is_read(tmp_path, overrides, message):
    """UserErrors: the CLI prints them as one `error:` line (tests/e2e/test_train_test.py)."""
    from music_genre_classification.training.train import train as run_training

    with pytest.raises(UserError, match=message):
        run_training([*overrides, f"output_dir={tmp_path}", "datamodule.root=/nonexistent", "~logger"])


def test_an_ensemble_needs_two_checkpoints_sharing_their_val_clips(on_table, tmp_path):
    from music_genre_classification.training.ensemble import make_ensemble

    with pytest.raises(UserError, match="at least two"):
        make_ensemble([str(on_table["checkpoint"])], str(tmp_path / "blend.ckpt"))
    no_val = torch.load(on_table["checkpoint"], weights_only=True)  # as if trained with split.val_fraction=0
    no_val["split_table"] = [
        row | {"part": "train" if row["part"] == "val" else row["part"]} for row in no_val["split_table"]
    ]
    torch.save(no_val, tmp_path / "no_val.ckpt")
    with pytest.raises(UserError, match="share no val clip"):
        make_ensemble([str(on_table["checkpoint"]), str(tmp_path / "no_val.ckpt")], str(tmp_path / "blend.ckpt"))
    assert not (tmp_path / "blend.ckpt").exists()
